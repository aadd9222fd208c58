"""The 12-lead ECG as it is printed at the bedside, and its machine intervals in ms.

The chart is the standard page: three rows of four leads, 2.5 s each (I aVR V1 V4 / II aVL V2 V5 /
III aVF V3 V6), and a lead II rhythm strip over the whole 10 s, on ECG paper at 25 mm/s and 10 mm/mV
(small squares 0.04 s x 0.1 mV, large squares 0.2 s x 0.5 mV, drawn to scale), each row starting with
a 1 mV calibration pulse.
"""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd

from medm2t.events import Ecg

LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
PAGE_S = 10.0           # a standard page; longer recordings show their first 10 s
ROW_MV = 3.0            # row pitch: each row shows -1.5 .. +1.5 mV around its baseline (clipped beyond)
PX_PER_S = 90           # 25 mm/s at 3.6 px per mm
PX_PER_MV = 36          # 10 mm/mV at 3.6 px per mm
CAL_S = 0.4             # room before each row for the calibration pulse
DISPLAY_HZ = 125.0      # min/max envelope per bucket keeps QRS peaks while drawing 1/4 of the samples
PAPER, MINOR, MAJOR = "#fff5f5", "#f6d0d0", "#e59a9a"


def downsample_minmax(signal: np.ndarray, fs: float, target_hz: float = DISPLAY_HZ) -> tuple[np.ndarray, np.ndarray]:
    """(n_leads, n) -> times in s and values, both (n_leads, m): each bucket's min and max in time order."""
    k = max(1, int(round(fs / target_hz * 2)))
    n = signal.shape[1] // k * k
    if k == 1 or n == 0:
        return np.broadcast_to(np.arange(signal.shape[1]) / fs, signal.shape), signal
    b = signal[:, :n].reshape(signal.shape[0], -1, k)
    lo_idx, hi_idx = b.argmin(axis=2), b.argmax(axis=2)
    idx = np.stack([np.minimum(lo_idx, hi_idx), np.maximum(lo_idx, hi_idx)], axis=2)  # the extremes in time order
    values = np.take_along_axis(b, idx, axis=2).reshape(signal.shape[0], -1)
    t = ((np.arange(b.shape[1]) * k)[None, :, None] + idx) / fs
    return t.reshape(signal.shape[0], -1), values


def _traces(ecg: Ecg) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Every drawn segment (t on the page, y = mV + its row's baseline) and the lead labels."""
    wf = ecg.waveform
    fs, signal = wf.fs, wf.to_array()
    duration = min(wf.n_samples / fs, PAGE_S)
    col_s = duration / 4
    pieces = [(r, c * col_s, (c + 1) * col_s, lead) for r, row in enumerate(LAYOUT) for c, lead in enumerate(row)]
    pieces.append((len(LAYOUT), 0.0, duration, RHYTHM_LEAD))
    frames, labels = [], []
    for row, start, end, lead in pieces:
        lo, hi = int(round(start * fs)), max(int(round(end * fs)), int(round(start * fs)) + 1)
        t, mv = downsample_minmax(signal[[wf.leads.index(lead)], lo:hi], fs)
        baseline = -row * ROW_MV
        frames.append(pd.DataFrame({"t": start + t[0], "y": baseline + np.clip(mv[0], -ROW_MV / 2, ROW_MV / 2),
                                    "segment": f"{row}-{lead}-{start:g}"}))
        labels.append({"t": start + 0.05, "y": baseline + 1.1, "lead": lead})
    for row in range(len(LAYOUT) + 1):  # the 1 mV x 0.2 s calibration pulse
        b = -row * ROW_MV
        frames.append(pd.DataFrame({"t": [-0.35, -0.3, -0.3, -0.1, -0.1, -0.05], "y": [b, b, b + 1, b + 1, b, b],
                                    "segment": f"cal-{row}"}))
    return pd.concat(frames, ignore_index=True), pd.DataFrame(labels), duration


def _grid(step: float, lo: float, hi: float) -> list[float]:
    return [round(lo + i * step, 3) for i in range(int(math.floor((hi - lo) / step + 1e-9)) + 1)]


def ecg_paper(ecg: Ecg) -> alt.LayerChart:
    """The standard 12-lead page with a rhythm strip, to scale on ECG paper."""
    traces, labels, duration = _traces(ecg)
    rows = len(LAYOUT) + 1
    top, bottom = ROW_MV / 2, -(rows - 0.5) * ROW_MV
    x_scale = alt.Scale(domain=[-CAL_S, duration], nice=False, zero=False)
    y_scale = alt.Scale(domain=[bottom, top], nice=False, zero=False)
    baselines = [-r * ROW_MV for r in range(rows)]
    x = alt.X("t:Q", scale=x_scale, title="seconds (25 mm/s; large square 0.2 s, small 0.04 s)",
              axis=alt.Axis(values=list(range(int(duration) + 1)), format="d", grid=False))
    y = alt.Y("y:Q", scale=y_scale, title="mV per row (10 mm/mV; large square 0.5 mV, small 0.1 mV)",
              axis=alt.Axis(values=sorted(b + d for b in baselines for d in (-1, 0, 1)), grid=False, labelOverlap=False,
                            labelExpr=f"replace(format(datum.value - {ROW_MV} * round(datum.value / {ROW_MV}), '+.0f'), '+0', '0')"))

    # every layer gets the same x and y (axis included): layers that differ in them lose the shared axis

    def rules(step: float, colour: str, width: float) -> alt.LayerChart:
        """Grid lines every `step` s and the same size in mV (1 s = 2.5 mV on paper)."""
        xs = pd.DataFrame({"t": _grid(step, -CAL_S, duration)})
        ys = pd.DataFrame({"y": _grid(step * 2.5, bottom, top)})
        v = alt.Chart(xs).mark_rule(color=colour, strokeWidth=width).encode(x=x)
        h = alt.Chart(ys).mark_rule(color=colour, strokeWidth=width).encode(y=y)
        return v + h

    line = alt.Chart(traces).mark_line(color="#111", strokeWidth=1).encode(x=x, y=y, detail="segment:N")
    text = alt.Chart(labels).mark_text(align="left", baseline="bottom", fontWeight="bold", fontSize=12).encode(
        x=x, y=y, text="lead:N")
    return alt.layer(rules(0.04, MINOR, 0.5), rules(0.2, MAJOR, 1.0), line, text).properties(
        width=int((duration + CAL_S) * PX_PER_S), height=int((top - bottom) * PX_PER_MV),
        title=alt.TitleParams(f"12 leads, 2.5 s each; lead {RHYTHM_LEAD} rhythm strip ({duration:g} s)",
                              anchor="start", fontSize=12),
    ).configure_view(fill=PAPER, stroke=None)


# (label, unit, value from the machine measurements in ms / degrees, or None where an input is missing)
def intervals(m: dict[str, float | None]) -> list[tuple[str, str, float | None]]:
    def diff(a: str, b: str) -> float | None:
        return m[a] - m[b] if m.get(a) is not None and m.get(b) is not None else None

    rr, qt = m.get("rr_interval"), diff("t_end", "qrs_onset")
    return [
        ("Heart rate", "bpm", 60_000 / rr if rr else None),
        ("RR interval", "ms", rr),
        ("PR interval", "ms", diff("qrs_onset", "p_onset")),
        ("QRS duration", "ms", diff("qrs_end", "qrs_onset")),
        ("QT interval", "ms", qt),
        ("QTc (Bazett)", "ms", qt / math.sqrt(rr / 1000) if qt is not None and rr else None),
        ("P axis", "°", m.get("p_axis")),
        ("QRS axis", "°", m.get("qrs_axis")),
        ("T axis", "°", m.get("t_axis")),
    ]


def intervals_table(latest: Ecg, previous: Ecg | None = None) -> pd.DataFrame:
    """The machine's intervals of the latest ECG, beside the previous ECG's and the change, where there is one."""
    rows = []
    before = {label: v for label, _, v in intervals(previous.measurements)} if previous else {}
    for label, unit, value in intervals(latest.measurements):
        row = {"measure": label, "unit": unit, "latest": _number(value)}
        if previous is not None:
            was = before[label]
            row["previous"] = _number(was)
            row["change"] = f"{value - was:+.0f}" if value is not None and was is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _number(x: float | None) -> str:
    return "not measured" if x is None else f"{x:.0f}"
