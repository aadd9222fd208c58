"""Altair charts of the patient page. Inputs are plain lists of canonical models; outputs are charts."""
from __future__ import annotations

import altair as alt
import pandas as pd

from medm2t.events import Alert, Measurement, RiskScore
from medm2t.items import ITEMS, Item, Range, Sex
from medm2t.vocabulary import Level
from dashboard.format import TIER_COLOURS


def time_axis(span=None) -> alt.X:
    """The clinical-time x axis; `span` (first, last) pins it so the patient page's charts line up."""
    scale = alt.Scale(domain=[t.isoformat() for t in span]) if span else alt.Undefined
    return alt.X("time:T", title="clinical time", scale=scale)


def points_trajectory(history: list[RiskScore], scorer: str, task: str, title: str, alerts: list[Alert],
                      thresholds: dict[str, float] | None = None, span=None) -> alt.Chart:
    """A rule score's points over time, with the alert policy's thresholds ({level: points}) as dashed lines.
    The scorer's other rules (NEWS2's single parameter, stale data) are not on this axis: diamonds along the
    bottom mark when they happened."""
    df = pd.DataFrame({"time": [s.scored_at for s in history if task in s.tasks],
                       "points": [s.tasks[task].value for s in history if task in s.tasks]})
    line = alt.Chart(df).mark_line(point=True, color="#455a64").encode(
        x=time_axis(span),
        y=alt.Y("points:Q", title=title, scale=alt.Scale(domain=[0, max(12, int(df.points.max() or 0) + 1)])),
        tooltip=[alt.Tooltip("time:T"), alt.Tooltip("points:Q", title=title)])
    chart = line + _threshold_rules(thresholds) if thresholds else line
    other = [a for a in alerts if a.scorer == scorer and a.task != task]
    if other:
        df_other = pd.DataFrame({"time": [a.at for a in other], "state": [a.state for a in other],
                                 "reason": [a.reason for a in other], "level": [a.level for a in other]})
        chart += alt.Chart(df_other).mark_point(shape="diamond", size=80, filled=True, color=TIER_COLOURS[Level.INFO][1]).encode(
            x="time:T", y=alt.value(212), tooltip=["time:T", "level:N", "state:N", "reason:N"])
    return _with_alerts(chart, [a for a in alerts if a.scorer == scorer and a.task == task], "points")


def probability_trajectory(history: list[RiskScore], scorer: str, task: str, title: str, alerts: list[Alert],
                           thresholds: dict[str, float] | None = None, span=None) -> alt.Chart:
    rows = [(s.scored_at, s.tasks[task].value) for s in history if task in s.tasks]
    df = pd.DataFrame(rows, columns=["time", "risk"])
    line = alt.Chart(df).mark_line(point=True, color="#1565c0").encode(
        x=time_axis(span),
        y=alt.Y("risk:Q", title=title, axis=alt.Axis(format=".0%"),
                scale=alt.Scale(domain=[0, 1])),  # fixed 0-100 %: a rescaled axis makes 3 % look like a crisis
        tooltip=[alt.Tooltip("time:T"), alt.Tooltip("risk:Q", format=".0%", title=f"{title} (rounded)")])
    chart = line + _threshold_rules(thresholds) if thresholds else line
    return _with_alerts(chart, [a for a in alerts if a.scorer == scorer and a.task == task], "risk")


def _threshold_rules(thresholds: dict[str, float]) -> alt.Chart:
    df = pd.DataFrame({"y": list(thresholds.values()), "label": [f"{k} at {v:g}" for k, v in thresholds.items()]})
    return alt.Chart(df).mark_rule(strokeDash=[4, 4], color="#b71c1c").encode(
        y="y:Q", tooltip=alt.Tooltip("label:N", title="alert threshold"))


def _with_alerts(chart: alt.Chart, alerts: list[Alert], field: str) -> alt.Chart:
    if not alerts:
        return chart.properties(height=220)
    df = pd.DataFrame({"time": [a.at for a in alerts], field: [a.value for a in alerts],
                       "level": [a.level if a.state != "cleared" else "cleared" for a in alerts],
                       "state": [a.state for a in alerts], "reason": [a.reason for a in alerts]})
    levels = list(dict.fromkeys(df.level))
    marks = alt.Chart(df).mark_point(shape="triangle-up", size=140, filled=True).encode(
        x="time:T", y=f"{field}:Q",
        color=alt.Color("level:N", title="alert", scale=alt.Scale(domain=levels, range=[TIER_COLOURS[l][1] for l in levels])),
        tooltip=["time:T", "level:N", "state:N", "reason:N"])
    return (chart + marks).properties(height=220)


LAB_OLD_AFTER_H = 24.0  # a result older than this (clinical time, against the stay's newest data) is flagged
FLAG_WORDS = {"L": "low", "H": "high"}  # Item.flag() in the labs table's words
SEX_WORDS = {"F": "female", "M": "male"}  # whose range a sex-specific lab's range text is


def _range_words(normal: Range) -> str:
    low, high = normal
    return f"{low:g}–{high:g}" if low is not None and high is not None else f"≥ {low:g}" if low is not None \
        else f"≤ {high:g}"


def reference_range_text(item: Item, sex: Sex | None = None) -> str:
    """An item's reference range for a patient of this sex in clinical words with its unit, e.g. "3.3–5.1 mEq/L";
    a sex-specific lab's says whose it is, "11.2–15.7 g/dL (female)", and with the sex unknown gives both,
    "female 11.2–15.7, male 14–18 g/dL" (labelled, so not mistaken for the patient's; Item.flag() then gives
    no flag); "" without a range."""
    unit = f" {item.unit}" if item.unit else ""
    if item.sex_specific:
        if sex is None:
            return ", ".join(f"{SEX_WORDS[s]} {_range_words(r)}" for s, r in item.normal_by_sex) + unit
        normal = item.reference_range(sex)
        return f"{_range_words(normal)}{unit} ({SEX_WORDS[sex]})" if normal is not None else ""
    return _range_words(item.normal) + unit if item.normal is not None else ""


def _catalogued(m: Measurement) -> Item | None:
    """The catalogue item of a lab result, where its range applies: same code and same unit (sources with
    their own item names or units, e.g. PhysioNet 2012, get no range rather than a wrong one)."""
    item = ITEMS.get(m.item)
    return item if item is not None and item.category == "lab" and (m.unit or None) == (item.unit or None) else None


def labs_table(measurements: list[Measurement], sex: Sex | None = None) -> pd.DataFrame:
    """Per lab: latest value, its adult reference range (for the patient's `sex` where the range depends on it:
    "F", "M" or None for unknown) and whether the latest is low or high against it, its change from the
    previous result, the trend of every numeric result, when, how many, and whether the latest is old (more
    than LAB_OLD_AFTER_H hours before the stay's newest data)."""
    cols = ["lab", "latest", "unit", "range", "flag", "change", "trend", "at", "age_h", "old", "results"]
    labs = sorted((m for m in measurements if m.category == "lab"), key=lambda m: m.time)
    if not labs:
        return pd.DataFrame(columns=cols)
    newest = max(m.time for m in measurements)
    by_lab: dict[str, list[Measurement]] = {}
    for m in labs:
        by_lab.setdefault(m.label or m.item, []).append(m)
    rows = []
    for lab, results in sorted(by_lab.items()):
        last = results[-1]
        numbers = [m.value for m in results if m.value is not None]
        change = ""
        if len(numbers) >= 2 and last.value is not None:
            prev = numbers[-2]
            arrow = "↑" if last.value > prev else "↓" if last.value < prev else "→"
            change = f"{arrow} from {prev:g}"
        age_h = (newest - last.time).total_seconds() / 3600
        item = _catalogued(last)
        rows.append({"lab": lab, "latest": f"{last.value:g}" if last.value is not None else str(last.text),
                     "unit": last.unit or "", "range": reference_range_text(item, sex) if item else "",
                     "flag": FLAG_WORDS.get(item.flag(last.value, sex), "") if item else "", "change": change,
                     "trend": numbers, "at": last.time, "age_h": round(age_h, 1), "old": age_h > LAB_OLD_AFTER_H,
                     "results": len(results)})
    return pd.DataFrame(rows, columns=cols)
