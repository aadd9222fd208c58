"""Quality page: were the alerts worth it? Live figures per scorer over the stays whose outcome has arrived
(stream/quality.py, definitions in docs/alert-quality.md), and how they moved during the replay. It shows what
the worker last recorded (every 10 s while the figures change), so a refresh does not re-read every stay's
audit trail."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import Reader
from stream import quality

NO_OUTCOMES = ("No outcomes yet. The figures count stays whose outcome has arrived on icu.outcomes.v1, which a "
               "replay releases at hospital discharge (or death), so they appear once the first stays have left "
               "hospital.")
PLOTTED = (("alerts_per_patient_day", "alerts per patient-day"), ("deaths_flagged_2h", "deaths flagged ≥ 2 h ahead"),
           ("ppv", "PPV of urgent+ alerts"), ("stays_alerted", "stays alerted"))


def render(reader: Reader) -> None:
    points = quality.history(reader.r)
    if not points:
        st.info(NO_OUTCOMES)
        return
    report = points[-1]
    st.caption(f"Over {report['outcomes']} stays with an outcome, clinical clock up to {report['clinical_at']}, "
               f"as the worker recorded them at {report['at']}. "
               "Small numbers early in a replay: read the counts beside the fractions. Definitions: "
               "docs/alert-quality.md; the same figures: `medm2t report`.")
    scorers = report["scorers"]
    table = pd.DataFrame({name: ["–" if scorers[name][key] is None else fmt.format(scorers[name][key])
                                 for _, key, fmt in quality.ROWS] for name in scorers},
                         index=[label.strip() for label, _, _ in quality.ROWS])
    st.dataframe(table, width="stretch")
    if len(points) < 2:
        st.caption("The plots over time appear once the worker has recorded two points (every 10 s, as outcomes arrive).")
        return
    for key, label in PLOTTED:
        frame = pd.DataFrame({name: [p["scorers"].get(name, {}).get(key) for p in points] for name in scorers},
                             index=pd.Index([p["outcomes"] for p in points], name="stays with an outcome"))
        st.markdown(f"**{label}**")
        st.line_chart(frame, height=160)
