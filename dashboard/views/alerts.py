"""Alert feed: the newest alerts across the ward, newest first, coloured by level; filtered and paged.

The filtering and paging are pure functions (`filter_feed`, `page`) so that they are tested without a page.
The widgets keep their state through the live refresh by their keys (feed_...); the page number is kept
within the pages there are when a filter or new data shrink the list.
"""
from __future__ import annotations

import html
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import get_args

import streamlit as st

from dashboard import format as fmt
from dashboard.data import FEED_ALERTS, Reader, open_alerts
from medm2t.events import Alert, AlertState
from medm2t.vocabulary import LEVEL_NAMES

NO_ALERTS = "No alerts yet: the worker has raised none (or is not running)."
NO_MATCH = "No alerts match these filters."
LEVELS: tuple[str, ...] = tuple(reversed(LEVEL_NAMES))  # worst first
STATES: tuple[str, ...] = get_args(AlertState)
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50


def open_records(alerts: Iterable[Alert]) -> list[Alert]:
    """The newest record of each alert still open among `alerts` (newest first, as the feed is)."""
    by_stay: dict[int, list[Alert]] = {}
    for a in alerts:  # newest first, so each stay's list is too
        by_stay.setdefault(a.stay_id, []).append(a)
    return [a for group in by_stay.values() for a in open_alerts(group)]


def open_in_feed(reader: Reader) -> list:
    """The open alerts among the feed's records (for the action panel)."""
    return open_records(reader.alert_feed())


def _episode(a: Alert) -> str:
    return a.episode_id or a.alert_id  # records written before episode_id stand alone


def filter_feed(alerts: list[Alert], open_only: bool = False, levels: Collection[str] | None = None,
                states: Collection[str] | None = None, stay: str = "",
                beds: dict[int, str] | None = None) -> list[Alert]:
    """The records that pass every filter, in the feed's order. `open_only`: records of an alert that is still
    open (every record of its episode, comments included). `levels`, `states`: the ones shown (None: all).
    `stay`: an ICU stay id or a bed label (`beds`: stay id -> bed), exact; blank: every stay."""
    shown = alerts
    if open_only:
        still_open = {_episode(a) for a in open_records(alerts)}
        shown = [a for a in shown if _episode(a) in still_open]
    if levels is not None:
        shown = [a for a in shown if a.level in levels]
    if states is not None:
        shown = [a for a in shown if a.state in states]
    wanted = stay.strip()
    if wanted:
        beds = beds or {}
        shown = [a for a in shown if str(a.stay_id) == wanted or beds.get(a.stay_id) == wanted]
    return shown


@dataclass(frozen=True)
class Page:
    rows: list
    number: int   # 1-based, within 1..pages
    pages: int    # at least 1, even with no rows
    first: int    # 1-based index of the first row shown (0 when none)
    last: int
    total: int

    def caption(self) -> str:
        if not self.total:
            return ""
        return f"Rows {self.first}–{self.last} of {self.total} matching (newest first) · page {self.number} of {self.pages}"


def page_count(total: int, size: int) -> int:
    return max(1, math.ceil(total / max(1, size)))


def page(rows: list, size: int, number: int) -> Page:
    """Page `number` (1-based) of `rows` in pages of `size`; a number past either end gives the nearest page."""
    size = max(1, size)
    pages = page_count(len(rows), size)
    number = min(max(1, number), pages)
    start = (number - 1) * size
    shown = rows[start:start + size]
    return Page(shown, number, pages, start + 1 if shown else 0, start + len(shown), len(rows))


def _first_page() -> None:
    st.session_state["feed_page"] = 1


def _stay_cell(a: Alert, beds: dict[int, str]) -> tuple[str, str]:
    bed = html.escape(beds.get(a.stay_id, "–"))
    return bed, f'<a href="?view=Patient&stay={a.stay_id}" target="_self">{a.stay_id}</a>'


def render(reader: Reader) -> None:
    alerts = reader.alert_feed()
    if not alerts:
        st.info(NO_ALERTS)
        return
    beds = reader.beds(a.stay_id for a in alerts)

    only, lv, stt, who = st.columns([1.2, 2, 3, 1.5], vertical_alignment="bottom")
    open_only = only.toggle("Open alerts only", key="feed_open", on_change=_first_page,
                            help="Only records of alerts that are still open (not yet cleared).")
    levels = lv.multiselect("Level", LEVELS, default=list(LEVELS), key="feed_levels", on_change=_first_page)
    states = stt.multiselect("Record", STATES, default=list(STATES), key="feed_states", on_change=_first_page,
                             format_func=fmt.alert_state, help="What each record did to its alert.")
    stay = who.text_input("Bed or stay", key="feed_stay", on_change=_first_page, placeholder="bed or stay id",
                          help="A bed label (as on the ward board) or an ICU stay id, exactly; blank for every stay.")
    shown = filter_feed(alerts, open_only, levels, states, stay, beds)

    size_col, page_col, caption_col = st.columns([1, 1, 4], vertical_alignment="bottom")
    size = size_col.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(DEFAULT_PAGE_SIZE),
                              key="feed_page_size", on_change=_first_page)
    pages = page_count(len(shown), size)
    if st.session_state.get("feed_page", 1) > pages:  # the list shrank under the page shown
        st.session_state["feed_page"] = pages
    number = page_col.number_input("Page", min_value=1, max_value=pages, step=1, key="feed_page")
    current = page(shown, size, int(number))
    caption_col.caption(current.caption())
    if not current.rows:
        st.info(NO_MATCH)
    else:
        headers = [("When (clinical)", "Clinical time of the alert record"), ("Level", "info, urgent or emergency"),
                   ("Record", "What happened: " + ", ".join(fmt.ALERT_STATES.values())),
                   ("By", "system (the alert engine) or the user who acted"),
                   ("Bed", "Bed on the ward, where the source gives one; – if unknown"), ("Stay", "ICU stay id"),
                   ("Score", "Scorer, task and the value that triggered it"), ("Reason", "Why the alert engine acted"),
                   ("Model", "The scorer that produced the score; hover for its exact version")]
        rows = []
        for a in current.rows:
            what = fmt.alert_name(a)
            value = fmt.task_value(a.task, a.value)
            rows.append([html.escape(fmt.clock(a.at)), fmt.tier_badge(a.level),
                         fmt.tier_badge("cleared", fmt.alert_state(a.state)) if a.state == "cleared"
                         else html.escape(fmt.alert_state(a.state)),
                         html.escape(a.by), *_stay_cell(a, beds),
                         html.escape(f"{what}: {value}"), html.escape(a.reason),
                         f'<span title="{html.escape(a.model_version)}">'
                         f'{html.escape(reader.scorer_name(a.scorer))}</span>'])
        st.markdown(fmt.html_table(headers, rows, "alert-table"), unsafe_allow_html=True)
    st.caption(f"The newest {FEED_ALERTS} alert records at most; {len(shown)} of the {len(alerts)} read match.")
