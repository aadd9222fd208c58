"""Alert feed: the newest alerts across the ward, newest first, coloured by level."""
from __future__ import annotations

import html

import streamlit as st

from dashboard import format as fmt
from dashboard.data import FEED_ALERTS, Reader, open_alerts

NO_ALERTS = "No alerts yet: the worker has raised none (or is not running)."


def open_in_feed(reader: Reader) -> list:
    """The open alerts among the feed's records (for the action panel)."""
    by_stay: dict[int, list] = {}
    for a in reader.alert_feed():  # newest first, so each stay's list is too
        by_stay.setdefault(a.stay_id, []).append(a)
    return [a for group in by_stay.values() for a in open_alerts(group)]


def render(reader: Reader) -> None:
    alerts = reader.alert_feed()
    if not alerts:
        st.info(NO_ALERTS)
        return
    levels = st.multiselect("Levels", ["emergency", "urgent", "info"], default=["emergency", "urgent", "info"],
                            key="feed_levels")
    shown = [a for a in alerts if a.level in levels]
    headers = [("When (clinical)", "Clinical time of the alert record"), ("Level", "info, urgent or emergency"),
               ("State", "raised, escalated, acknowledged, snoozed, re-presented, commented or cleared"),
               ("By", "system (the alert engine) or the user who acted"), ("Stay", "ICU stay id"),
               ("Score", "Scorer, task and the value that triggered it"), ("Reason", "Why the alert engine acted"),
               ("Model", "Scorer version that produced the score")]
    rows = []
    for a in shown:
        what = fmt.alert_name(a)
        value = fmt.task_value(a.task, a.value)
        rows.append([html.escape(fmt.clock(a.at)), fmt.tier_badge(a.level),
                     fmt.tier_badge("cleared", a.state) if a.state == "cleared" else html.escape(a.state),
                     html.escape(a.by), f'<a href="?view=Patient&stay={a.stay_id}" target="_self">{a.stay_id}</a>',
                     html.escape(f"{what}: {value}"), html.escape(a.reason), html.escape(a.model_version)])
    st.markdown(fmt.html_table(headers, rows, "alert-table"), unsafe_allow_html=True)
    st.caption(f"Newest {FEED_ALERTS} alerts at most; {len(shown)} shown of {len(alerts)} read.")
