"""Ward board: one row per active stay, highest risk first."""
from __future__ import annotations

import html
import time

import streamlit as st

from dashboard import format as fmt
from dashboard.views import actions
from dashboard.data import BOARD_ROWS, STALE_AFTER_S, Reader, StayRow

NO_DATA = "No data yet: no active stays in Redis. Start the worker and a replay (`medm2t demo` does both)."


def render(reader: Reader) -> None:
    rows = reader.ward(BOARD_ROWS)
    if not rows:
        st.info(NO_DATA)
        return
    now = time.time()
    feed_age = reader.feed_age_s()
    n_alerting = sum(1 for r in rows if r.open_alerts)
    n_stale = sum(1 for r in rows if r.stale(now))
    c = st.columns(4)
    c[0].metric("Active stays", len(rows))
    c[1].metric("Stays with open alerts", n_alerting)
    c[2].metric("Stale stays", n_stale, help=f"No new data for more than {STALE_AFTER_S:.0f} s (wall clock).")
    c[3].metric("Newest data", fmt.age(feed_age), help="Wall-clock time since any stay last received data.")
    if feed_age is not None and feed_age > STALE_AFTER_S:
        st.warning(f"No stay has received data for {fmt.age(feed_age)}: is the replay or the worker stopped?")

    st.markdown(board_html(rows[:BOARD_ROWS], now), unsafe_allow_html=True)
    actions.panel(reader.r, [a for r in rows[:BOARD_ROWS] for a in r.open_alerts], "board")
    if len(rows) > BOARD_ROWS:
        st.caption(f"Showing the {BOARD_ROWS} highest-risk of {len(rows)} active stays; open any stay on the Patient page.")
    st.caption("Sorted by worst open alert, then NEWS2 band, then MedM2T mortality risk. NEWS2 is a rule score "
               "in points, not a probability. MedM2T figures are model outputs shown with the model version and "
               "its calibration status; probabilities are rounded to whole percent. Open a stay on the Patient page.")


def _mortality_header(rows: list[StayRow]) -> tuple[str, str]:
    versions = sorted(_versions(rows))
    if not versions:
        return "MedM2T mortality risk (no model score yet)", "No stay on the board has a MedM2T score yet."
    if len(versions) == 1:
        version, calibration = versions[0]
        title = fmt.model_label("mortality risk", version, calibration)
    else:
        title = "MedM2T mortality risk (model and calibration per row)"
    return title, ("In-hospital mortality probability from MedM2T, rounded to whole percent. Read it as an observed "
                   "frequency only where the header says calibrated, and only for patients like the calibration data.")


def board_html(rows: list[StayRow], now: float) -> str:
    headers = [
        ("Bed", "Bed on the ward, where the source gives one (ward-mode replays do); – if unknown"),
        ("Stay", "ICU stay id (subject id below)"),
        ("Hours since admission", "Clinical time from ICU admission to the newest data"),
        ("NEWS2 (rule score, points)", "National Early Warning Score 2 (RCP 2017): points and band; not a probability"),
        _mortality_header(rows),
        ("Trend", "NEWS2 points (grey, 0–20) and MedM2T mortality risk (blue, 0–100%) over the recent score history"),
        ("Last data", f"Wall-clock time since the stay last received data; stale after {STALE_AFTER_S:.0f} s"),
        ("Open alerts", "Per open alert (raised, escalated or de-escalated, not yet cleared): level, rule, since "
                        "when (clinical time) at which value, and the value in the newest score; hover for the reason"),
    ]
    body = []
    for r in rows:
        news2 = r.task("news2", "news2")
        mort = r.task("medm2t", "mortality")
        news2_cell = fmt.tier_badge(news2.band, f"{fmt.points(news2.value)} · {news2.band}") if news2 else "–"
        if mort:
            mort_cell = html.escape(fmt.probability(mort.value))
            if len(_versions(rows)) > 1:
                mort_cell += f'<br><small>{html.escape(r.scores["medm2t"].model_version)}, {html.escape(mort.calibration)}</small>'
        else:
            mort_cell = '<span style="color:#9e9e9e" title="No MedM2T score for this stay yet">not scored</span>'
        trend = fmt.sparkline([s.tasks["news2"].value for s in r.history["news2"] if "news2" in s.tasks], 0, 20)
        mort_hist = [s.tasks["mortality"].value for s in r.history["medm2t"] if "mortality" in s.tasks]
        if len(mort_hist) > 1:
            trend += "<br>" + fmt.sparkline(mort_hist, 0, 1, colour="#1565c0")
        age = r.age_s(now)
        fresh = html.escape(fmt.age(age))
        if r.stale(now):
            fresh = fmt.tier_badge("urgent", f"stale · {fmt.age(age)}")
        alerts_cell = "<br>".join(r.chips()) or "none"
        stay = (f'<a href="?view=Patient&stay={r.stay_id}" target="_self"><b>{r.stay_id}</b></a>'
                f'<br><small>subject {r.subject_id if r.subject_id is not None else "?"}</small>')
        bed = html.escape(r.opened.bed) if r.opened is not None and r.opened.bed else "–"
        body.append([f"<b>{bed}</b>", stay, html.escape(fmt.hours(r.hours_since_admission)), news2_cell, mort_cell, trend, fresh,
                     alerts_cell])
    return fmt.html_table(headers, body, "ward-table")


def _versions(rows: list[StayRow]) -> set:
    return {(r.scores["medm2t"].model_version, r.task("medm2t", "mortality").calibration)
            for r in rows if r.task("medm2t", "mortality")}
