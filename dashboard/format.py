"""How numbers are shown: rounded to what the score can support, always with what they are.

Tables are rendered as plain HTML (not the canvas data grid) so that every value is real text: readable
by screen readers, findable by browser tests, and cheap to redraw on every refresh.
"""
from __future__ import annotations

import html
from datetime import datetime

from medm2t.vocabulary import CVD_NAMES, MORTALITY, Level
from stream.scorers import news2

# Tier colours (background, text): NEWS2 bands and alert levels share the same scale.
TIER_COLOURS = {
    "low": ("#e8f5e9", "#1b5e20"), "low-medium": ("#fff8e1", "#8d6e00"), "medium": ("#ffe0b2", "#8a3c00"),
    "high": ("#ffcdd2", "#8e0000"),
    Level.INFO: ("#e3f2fd", "#0d47a1"), Level.URGENT: ("#ffe0b2", "#8a3c00"), Level.EMERGENCY: ("#ffcdd2", "#8e0000"),
    "cleared": ("#eeeeee", "#424242"),
}


def probability(p: float | None) -> str:
    """A model probability as a whole percentage; more digits would claim precision it does not have."""
    if p is None:
        return "–"
    if p < 0.01:
        return "<1%"
    if p > 0.99:
        return ">99%"
    return f"{round(p * 100):.0f}%"


def days(d: float | None) -> str:
    return "–" if d is None else f"≈{max(0.0, round(d * 2) / 2):g} d"


def points(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def score_text(kind: str, score) -> str:
    """A TaskScore as its kind says to read it (the kinds of medm2t.cards.TaskCard)."""
    if kind == "points":
        return points(score.value)
    if kind == "days":
        return days(score.value)
    if kind == "class_probabilities" and score.probabilities:
        top, p = max(score.probabilities.items(), key=lambda kv: kv[1])
        return f"{CVD_NAMES.get(top, top)} {probability(p)}"
    return probability(score.value)


def task_value(task: str, value: float) -> str:
    """A value of a known task (as alerts carry it, without its TaskScore kind). NEWS2 alerts carry points,
    the aggregate or the highest single parameter (0-3)."""
    if task == news2.STALE_VITALS:
        return f"{value:.1f} h since a vital sign"
    if task in news2.ALERT_SIGNALS:
        return f"{points(value)} point" + ("" if points(value) == "1" else "s")
    if task.startswith("los"):
        return days(value)
    return probability(value) if 0 <= value <= 1 else f"{value:.2g}"


def hours(h: float | None) -> str:
    if h is None:
        return "–"
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def clock(t: datetime | None) -> str:
    return "–" if t is None else t.strftime("%Y-%m-%d %H:%M")


def tier_badge(tier: str | None, text: str | None = None, title: str | None = None, wrap: bool = False) -> str:
    """A coloured badge; `wrap` lets a long one (an alert) wrap within its cell instead of widening the table."""
    if not tier:
        return html.escape(text or "–")
    bg, fg = TIER_COLOURS.get(tier, ("#eeeeee", "#212121"))
    tip = f' title="{html.escape(title)}"' if title else ""
    layout = "display:inline-block;margin:1px 0;white-space:normal" if wrap else "white-space:nowrap"
    return (f'<span style="background:{bg};color:{fg};padding:1px 7px;border-radius:9px;font-weight:600;'
            f'{layout}"{tip}>{html.escape(text if text is not None else tier)}</span>')


ALERT_TASKS = {news2.AGGREGATE: "NEWS2", news2.SINGLE_PARAMETER: "NEWS2 single parameter",
               news2.STALE_VITALS: "stale vitals (technical)", MORTALITY: "MedM2T in-hospital mortality risk"}
ALERT_STATES = {"raised": "raised", "level-rose": "level rose", "not-acknowledged": "not acknowledged in time",
                "de-escalated": "level fell", "acknowledged": "acknowledged", "snoozed": "snoozed",
                "unsnoozed": "snooze cancelled", "re-presented": "back after snooze", "commented": "comment",
                "cleared": "cleared"}


def alert_name(alert) -> str:
    """The rule of an alert in words: 'NEWS2 single parameter', 'MedM2T in-hospital mortality risk'."""
    return ALERT_TASKS.get(alert.task, f"{alert.scorer} {alert.task.replace('_', ' ')}")


def alert_state(state: str) -> str:
    """What an alert record did, in words ('not acknowledged in time' for 'not-acknowledged')."""
    return ALERT_STATES.get(state, state.replace("-", " "))


def news2_detail(detail: dict) -> str:
    """NEWS2's sub-scores in words, with units: 'respiration rate 3 points, SpO2 3 points, ...'."""
    parts = []
    for key, words in news2.PARAMETER_WORDS.items():
        value = detail.get(f"{key}_points")
        parts.append(f"{words} not charted" if value is None else f"{words} {value} point" + ("" if value == 1 else "s"))
    text = ", ".join(parts)
    if isinstance(detail.get("max_single"), (int, float)):
        text += f"; highest single parameter {detail['max_single']} points"
    if isinstance(detail.get("newest_vital_age_h"), (int, float)):
        text += f"; newest vital sign {detail['newest_vital_age_h']:.1f} h old"
    if str(detail.get("complete", "")).startswith("no"):
        text += "; the aggregate is a lower bound (a parameter is not charted)"
    return text


def lifecycle(alert) -> str:
    """Where an open alert stands with the people looking after it, in words ('' for a fresh alert)."""
    if alert.snoozed_until is not None:
        return f"snoozed until {alert.snoozed_until:%H:%M}"
    parts = []
    if alert.acknowledged_by:
        parts.append(f"acknowledged by {alert.acknowledged_by}")
    elif alert.escalation:
        parts.append("not acknowledged in time")
    return ", ".join(parts)


def alert_chip(alert, current: float | None, raised, long: bool = False, resolving: bool = False,
               now: datetime | None = None) -> str:
    """One open alert as a badge. Each piece comes from the record it names: the level and lifecycle from the
    newest record (`alert`), since when and at which value from the record that raised it (`raised`), and the
    value now from the newest score (`current`), how long ago on the stay's clinical clock (`now`, its newest
    data). `long` adds the reason (patient page); the board keeps it in the tooltip."""
    what = alert_name(alert)
    ago = f" ({age((now - raised.at).total_seconds())} clinical)" if now is not None and now >= raised.at else ""
    current = "now –" if current is None else f"now {task_value(alert.task, current)}"
    level = f" as {raised.level}" if raised.level != alert.level else ""  # it rose (or fell) since
    text = (f"{alert.level} · {what} · raised {raised.at:%d %b %H:%M}{ago}{level} at "
            f"{task_value(alert.task, raised.value)} · {current}")
    if resolving:
        text += " · resolving"
    if lifecycle(alert):
        text += f" · {lifecycle(alert)}"
    return tier_badge(alert.level, f"{text} · {alert.reason}" if long else text, title=alert.reason, wrap=True)


def sparkline(values: list[float], lo: float, hi: float, colour: str = "#455a64", width: int = 110,
              height: int = 24) -> str:
    """A tiny inline SVG line (no JavaScript, no chart per row)."""
    if len(values) < 2:
        return '<span style="color:#9e9e9e">–</span>'
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    pts = " ".join(f"{i * step:.1f},{height - 2 - (min(max(v, lo), hi) - lo) / span * (height - 4):.1f}"
                   for i, v in enumerate(values))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="trend">'
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/></svg>')


def html_table(headers: list[tuple[str, str]], rows: list[list[str]], table_id: str) -> str:
    """`headers`: (title, tooltip) pairs, escaped here; `rows`: cells already made safe by the caller."""
    head = "".join(f'<th title="{html.escape(tip)}" style="text-align:left;padding:4px 8px;border-bottom:2px solid #ccc;'
                   f'font-size:0.85em">{html.escape(title)}</th>' for title, tip in headers)
    body = "".join("<tr>" + "".join(f'<td style="padding:4px 8px;border-bottom:1px solid #eee">{c}</td>' for c in row)
                   + "</tr>" for row in rows)
    return (f'<div style="overflow-x:auto"><table id="{table_id}" style="border-collapse:collapse;width:100%">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
