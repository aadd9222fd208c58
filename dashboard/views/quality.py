"""Quality page: were the alerts worth it? Live figures per scorer over the stays whose outcome has arrived
(stream/quality.py, definitions in docs/alert-quality.md), and how they moved during the replay. It shows what
the worker last recorded (every 10 s while the figures change), so a refresh does not re-read every stay's
audit trail."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard import format as fmt
from dashboard.data import Reader
from stream import quality

NO_OUTCOMES = ("No outcomes yet. The figures count stays whose outcome (survival or death in hospital) has "
               "arrived, which a replay releases at hospital discharge (or death), so they appear once the first "
               "stays have left hospital.")
PLOTTED = (("alerts_per_patient_day", "alerts per patient-day"), ("deaths_flagged_2h", "deaths flagged ≥ 2 h ahead"),
           ("ppv", "PPV of urgent+ alerts"), ("stays_alerted", "stays alerted"),
           ("beds_urgent", "bed-time with an urgent+ alert open"))
ROW_PX = 35  # st.dataframe's row height: the table is drawn tall enough to need no inner scroll


def render(reader: Reader) -> None:
    points = quality.history(reader.r)
    if not points:
        st.info(NO_OUTCOMES)
        return
    report = points[-1]
    st.caption(f"Over {report['outcomes']} stays with an outcome, clinical clock up to "
               f"{fmt.clock(datetime.fromisoformat(report['clinical_at']))}, as the worker recorded them at "
               f"{fmt.clock(datetime.fromisoformat(report['at']).astimezone())} (wall clock). Small numbers early "
               "in a replay: read the counts beside the fractions. The same figures, with their definitions, come "
               "from the command line's report.")
    scorers = report["scorers"]
    names = {s: reader.scorer_name(s) for s in scorers}
    table = pd.DataFrame({names[name]: ["–" if scorers[name][key] is None else rule.format(scorers[name][key])
                                        for _, key, rule in quality.ROWS] for name in scorers},
                         index=[label.strip() for label, _, _ in quality.ROWS])
    st.dataframe(table, width="stretch", height=ROW_PX * (len(table) + 1) + 3)
    _tradeoff(reader)
    if len(points) < 2:
        st.caption("The plots over time appear once the worker has recorded two points (every 10 s, as outcomes arrive).")
        return
    for key, label in PLOTTED:
        frame = pd.DataFrame([{"stays with an outcome": p["outcomes"], "scorer": names[name],
                               label: p["scorers"].get(name, {}).get(key)} for p in points for name in scorers])
        st.markdown(f"**{label}**")
        st.altair_chart(_lines(frame, "stays with an outcome", label), width="stretch")


def _lines(frame: pd.DataFrame, x: str, y: str):
    """One line per scorer, told apart by colour and by dash (equal figures would hide one line otherwise)."""
    import altair as alt

    return alt.Chart(frame.dropna()).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x), y=alt.Y(f"{y}:Q", title=y),
        color=alt.Color("scorer:N", title="scorer"), strokeDash=alt.StrokeDash("scorer:N", title="scorer"),
    ).properties(height=170)


def _tradeoff(reader: Reader) -> None:
    """The curve `medm2t alerts calibrate` chose the MedM2T policy from, when the running policy has one."""
    tuned = reader.alert_policy().tuned or {}
    curve = tuned.get("tradeoff")
    if not curve:
        return
    import altair as alt

    frame = pd.DataFrame([{"deaths flagged ≥ 2 h ahead": p["deaths_flagged_2h"], "share": p[key], "figure": name}
                          for p in curve for key, name in (("stays_alerted", "stays alerted"),
                                                           ("alerts_per_patient_day", "alerts per patient-day"))
                          if p[key] is not None])
    st.markdown(f"**Alert policy trade-off** (MedM2T mortality, on {tuned.get('stays', '?')} validation stays when "
                f"it was tuned; the chosen policy flags {tuned.get('figures', {}).get('deaths_flagged_2h', 0):.0%})")
    st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("deaths flagged ≥ 2 h ahead:Q", title="deaths flagged ≥ 2 h ahead", axis=alt.Axis(format="%")),
        y=alt.Y("share:Q", title="share of stays, or per day"),
        color=alt.Color("figure:N", title="figure"), strokeDash=alt.StrokeDash("figure:N", title="figure"),
    ).properties(height=240), width="stretch")
