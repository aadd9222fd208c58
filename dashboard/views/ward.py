"""Ward board: one row per active stay, highest risk first."""
from __future__ import annotations

import html
import time

import streamlit as st

from dashboard import format as fmt
from dashboard.data import BOARD_ROWS, STALE_AFTER_S, Reader, StayRow, board_tasks, sort_rule
from medm2t.cards import ModelCard, TaskCard
from medm2t.vocabulary import Level
from stream.policy import AlertPolicy

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
    clinical = max((r.last_time for r in rows if r.last_time is not None), default=None)
    c = st.columns(5)
    c[0].metric("Clinical time", clinical.strftime("%d %b %H:%M") if clinical else "–",
                help="The ward's clinical clock: the newest data of any stay (a replay runs it faster than the wall "
                     "clock). Alert times and 'ago' on the board are on this clock.")
    c[1].metric("Active stays", len(rows))
    c[2].metric("Stays with open alerts", n_alerting)
    c[3].metric("Stale stays", n_stale, help=f"No new data for more than {STALE_AFTER_S:.0f} s (wall clock).")
    c[4].metric("Newest data", fmt.age(feed_age), help="Wall-clock time since any stay last received data.")
    if feed_age is not None and feed_age > STALE_AFTER_S:
        st.warning(f"No stay has received data for {fmt.age(feed_age)}: is the replay or the worker stopped?")

    st.markdown(board_html(rows[:BOARD_ROWS], now, reader.cards(), reader.alert_policy()), unsafe_allow_html=True)
    if len(rows) > BOARD_ROWS:
        st.caption(f"Showing the {BOARD_ROWS} highest-risk of {len(rows)} active stays; open any stay on the Patient page.")
    cards = reader.cards()
    st.caption(f"Sorted by {sort_rule(cards)}. Rule scores are in points, not probabilities. Model figures are "
               "shown with the model version and its calibration status; probabilities are rounded to whole "
               "percent. Open a stay on the Patient page.")


def open_alerts(reader: Reader) -> list:
    """The open alerts of the stays on the board (for the action panel)."""
    return [a for r in reader.ward(BOARD_ROWS) for a in r.open_alerts]


def _header(card: ModelCard, scorer: str, task: TaskCard, rows: list[StayRow]) -> tuple[str, str]:
    label = f"{card.name} {task.display}"
    if task.kind == "points":
        return f"{card.name} ({task.display})", next(
            (s.calibration for r in rows if (s := r.task(scorer, task.name))), f"{card.name}: a rule score in points")
    versions = sorted(_versions(rows, scorer, task.name))
    if not versions:
        return f"{label} (no score yet)", f"No stay on the board has a {card.name} score yet."
    if len(versions) == 1:
        version, calibration = versions[0]
        return label, (f"Model {version}; {calibration}. {card.name} model output, rounded. Read a probability as "
                       "an observed frequency only where it is calibrated, and only for patients like the "
                       "calibration data.")
    return f"{label} (model and calibration per row)", (f"{card.name} model output, rounded; the model version and "
                                                         "calibration differ between rows and are shown in each.")


def _cell(row: StayRow, card: ModelCard, scorer: str, task: TaskCard, per_row_versions: bool) -> str:
    score = row.task(scorer, task.name)
    if score is None:
        return f'<span style="color:#9e9e9e" title="No {html.escape(card.name)} score for this stay yet">not scored</span>'
    text = fmt.score_text(task.kind, score)
    if score.band:
        return fmt.tier_badge(score.band, f"{text} · {score.band}")
    cell = html.escape(text)
    if per_row_versions:
        cell += f'<br><small>{html.escape(row.scores[scorer].model_version)}, {html.escape(score.calibration)}</small>'
    return cell


def _trend(row: StayRow, scorer: str, task: TaskCard, colour: str) -> str:
    values = [s.tasks[task.name].value for s in row.history.get(scorer, []) if task.name in s.tasks]
    lo, hi = task.scale or (0.0, 1.0)
    return fmt.sparkline(values, lo, hi, colour=colour) if len(values) > 1 else ""


def board_html(rows: list[StayRow], now: float, cards: dict[str, ModelCard], policy: AlertPolicy | None = None) -> str:
    columns = board_tasks(cards)
    colours = [TREND_COLOURS[i % len(TREND_COLOURS)] for i in range(len(columns))]
    trend_help = "; ".join(f"{cards[s].name} {t.display} ({TREND_NAMES[colours[i]]}, "
                           f"{_range_words(t)})" for i, (s, t) in enumerate(columns))
    headers = [
        ("Bed", "Bed on the ward, where the source gives one (ward-mode replays do); – if unknown"),
        ("Stay", "ICU stay id (subject id below)"),
        ("Hours since admission", "Clinical time from ICU admission to the newest data"),
        *[_header(cards[s], s, t, rows) for s, t in columns],
        ("Trend", f"Over the recent score history: {trend_help or 'no scorer yet'}"),
        ("Last data", f"Wall-clock time since the stay last received data; stale after {STALE_AFTER_S:.0f} s"),
        ("Open alerts", "Per open alert (not yet cleared): level, rule, when it was raised (clinical time, and how "
                        "long ago on the stay's clinical clock) at which value, and the value in the newest score; "
                        "'resolving': back under its threshold, waiting to clear, not escalating; hover for the reason"),
    ]
    per_row = {(s, t.name): len(_versions(rows, s, t.name)) > 1 for s, t in columns}
    body = []
    for r in rows:
        cells = [_cell(r, cards[s], s, t, per_row[(s, t.name)]) for s, t in columns]
        trend = "<br>".join(x for i, (s, t) in enumerate(columns) if (x := _trend(r, s, t, colours[i]))) or \
            '<span style="color:#9e9e9e">–</span>'
        age = r.age_s(now)
        fresh = html.escape(fmt.age(age))
        if r.stale(now):
            fresh = fmt.tier_badge(Level.URGENT, f"stale · {fmt.age(age)}")
        alerts_cell = "<br>".join(r.chips(policy=policy)) or "none"
        stay = (f'<a href="?view=Patient&stay={r.stay_id}" target="_self"><b>{r.stay_id}</b></a>'
                f'<br><small>subject {r.subject_id if r.subject_id is not None else "?"}</small>')
        bed = html.escape(r.opened.bed) if r.opened is not None and r.opened.bed else "–"
        body.append([f"<b>{bed}</b>", stay, html.escape(fmt.hours(r.hours_since_admission)), *cells, trend, fresh,
                     alerts_cell])
    return fmt.html_table(headers, body, "ward-table")


TREND_COLOURS = ("#455a64", "#1565c0", "#6a1b9a", "#2e7d32")
TREND_NAMES = {"#455a64": "grey", "#1565c0": "blue", "#6a1b9a": "purple", "#2e7d32": "green"}


def _range_words(task: TaskCard) -> str:
    if task.scale:
        return f"{task.scale[0]:g}–{task.scale[1]:g} {task.kind}"
    return "0–100%" if task.kind == "probability" else "0–1"


def _versions(rows: list[StayRow], scorer: str, task: str) -> set:
    return {(r.scores[scorer].model_version, r.task(scorer, task).calibration) for r in rows if r.task(scorer, task)}
