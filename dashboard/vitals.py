"""Vital signs as a clinician reads them: in clinical order, with units, grouped where they belong together
(BP as systolic/diastolic/mean, SpO2 beside FiO2, GCS total beside its components), each with its reference
range shaded and the values outside it marked.

Reference ranges are NEWS2's 0-point ranges (RCP 2017), the same ones the NEWS2 score on this page uses, so a
marked value is one that scores NEWS2 points; mean arterial pressure uses the common >= 65 mmHg target.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import altair as alt
import pandas as pd

from dashboard.charts import time_axis
from medm2t.events import Measurement
from stream.scorers.news2 import NORMAL_RANGES

GCS_PARTS = ("gcs_eye", "gcs_verbal", "gcs_motor")


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    series: dict[str, str]                         # concept -> legend name, in drawing order
    normal: dict[str, tuple[float, float]]         # concept -> (low, high) reference range
    number_format: str = ",.0f"


PANELS = (
    Panel("Heart rate", "bpm", {"hr": "HR"}, {"hr": NORMAL_RANGES["hr"]}),
    Panel("Blood pressure", "mmHg", {"sbp": "systolic", "dbp": "diastolic", "map": "mean"},
          {"sbp": NORMAL_RANGES["sbp"], "map": (65, 300)}),
    Panel("Respiratory rate", "breaths/min", {"rr": "RR"}, {"rr": NORMAL_RANGES["rr"]}),
    Panel("SpO2 and FiO2", "%", {"spo2": "SpO2", "fio2": "FiO2"}, {"spo2": NORMAL_RANGES["spo2"]}),
    Panel("Temperature", "°C", {"temp": "temperature"}, {"temp": NORMAL_RANGES["temp"]}, ",.1f"),
    Panel("Glasgow Coma Scale", "points", {"gcs_total": "total", "gcs_eye": "eye", "gcs_verbal": "verbal",
                                            "gcs_motor": "motor"}, {"gcs_total": (15, 15)}),
)


def vitals_frame(measurements: list[Measurement]) -> pd.DataFrame:
    """time, concept, value of every numeric vital, plus a GCS total wherever all three parts share a time."""
    rows = [(m.time, m.concept, float(m.value)) for m in measurements
            if m.category == "vital" and m.concept and m.value is not None]
    df = pd.DataFrame(rows, columns=["time", "concept", "value"])
    parts = df[df.concept.isin(GCS_PARTS)].pivot_table(index="time", columns="concept", values="value", aggfunc="last")
    if set(GCS_PARTS) <= set(parts.columns):
        total = parts.dropna(subset=list(GCS_PARTS)).sum(axis=1)
        df = pd.concat([df, pd.DataFrame({"time": total.index, "concept": "gcs_total", "value": total.values})])
    return df.sort_values("time", kind="stable")


def vitals_chart(measurements: list[Measurement], span: tuple[datetime, datetime] | None = None) -> alt.VConcatChart | None:
    """One panel per group that has data, stacked on one time axis (`span`: the x domain, e.g. the stay's
    clinical time shared with the score trajectories)."""
    df = vitals_frame(measurements)
    if df.empty:
        return None
    panels = [p for p in (_panel(p, df, time_axis(span)) for p in PANELS) if p is not None]
    return alt.vconcat(*panels).resolve_scale(color="independent") if panels else None


def _panel(panel: Panel, df: pd.DataFrame, x: alt.X) -> alt.LayerChart | None:
    d = df[df.concept.isin(panel.series)].copy()
    if d.empty:
        return None
    d["series"] = d.concept.map(panel.series)
    lows = d.concept.map(lambda c: panel.normal.get(c, (float("-inf"), 0))[0])
    highs = d.concept.map(lambda c: panel.normal.get(c, (0, float("inf")))[1])
    d["outside"] = d.concept.isin(panel.normal) & ((d.value < lows) | (d.value > highs))
    names = list(dict.fromkeys(panel.series[c] for c in panel.series if c in set(d.concept)))
    y = alt.Y("value:Q", title=f"{panel.title} ({panel.unit})", scale=alt.Scale(zero=False),
              axis=alt.Axis(format=panel.number_format))
    tooltip = [alt.Tooltip("time:T"), alt.Tooltip("series:N", title=panel.title),
               alt.Tooltip("value:Q", format=panel.number_format, title=panel.unit)]
    lines = alt.Chart(d).mark_line(point=alt.OverlayMarkDef(size=14)).encode(
        x=x, y=y, color=alt.Color("series:N", title=None, scale=alt.Scale(domain=names), legend=alt.Legend(orient="right")),
        tooltip=tooltip)
    bands = pd.DataFrame([{"lo": lo, "hi": min(hi, float(d.value.max())) if hi > 250 else hi,
                           "range": f"{panel.series[c]} reference {lo:g}–{hi:g} {panel.unit}" if hi < 250
                           else f"{panel.series[c]} reference ≥ {lo:g} {panel.unit}"}
                          for c, (lo, hi) in panel.normal.items() if c in set(d.concept)])
    layers = []
    if not bands.empty:
        layers.append(alt.Chart(bands).mark_rect(opacity=0.12, color="#2e7d32").encode(
            y="lo:Q", y2="hi:Q", tooltip=alt.Tooltip("range:N", title="shaded")))
    layers.append(lines)
    outside = d[d.outside]
    if not outside.empty:
        layers.append(alt.Chart(outside).mark_point(shape="circle", size=60, filled=True, color="#b71c1c").encode(
            x=x, y=y, tooltip=[*tooltip, alt.Tooltip("outside:N", title="outside reference range")]))
    return alt.layer(*layers).properties(height=110, width=640, title=f"{panel.title} ({panel.unit})")
