"""12-lead ECG signal preprocessing for the ECG encoder (see model/features.py's docstring): missing leads
-> zeros, NaN samples interpolated, resampled, band-passed, centre-cropped."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from medm2t.events import LEADS


def load_filters() -> None:
    """Import the filters now: the import takes 1-2 s, which a streaming pass that meets the first ECG would
    otherwise pay (py-spy). Only readers of ECGs call it; the CLI's other commands do not pay it."""
    import scipy.signal  # noqa: F401


def preprocess_ecg(signal_mv: np.ndarray, fs: float, leads: Sequence[str], out_fs: int = 125,
                   out_len: int = 640) -> tuple[np.ndarray, list[str]]:
    """(n_leads, n) mV -> (12, out_len) float32 in the standard lead order, plus a list of problems found."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    problems: list[str] = []
    sig = np.asarray(signal_mv, dtype=np.float64)
    names = [str(name).lower() for name in leads]
    ratio = Fraction(out_fs / float(fs)).limit_denominator(1000)
    n_out = int(math.ceil(sig.shape[1] * ratio.numerator / ratio.denominator))
    out = np.zeros((len(LEADS), n_out), dtype=np.float64)
    sos = butter(3, [0.5, 40.0], btype="bandpass", fs=out_fs, output="sos")
    for i, lead in enumerate(LEADS):
        if lead.lower() not in names:
            problems.append(f"lead {lead} missing")
            continue
        x = sig[names.index(lead.lower())]
        bad = ~np.isfinite(x)
        if bad.all():
            problems.append(f"lead {lead} has no finite samples")
            continue
        if bad.any():
            problems.append(f"lead {lead}: {int(bad.sum())} NaN samples interpolated")
            idx = np.arange(len(x))
            x = np.interp(idx, idx[~bad], x[~bad])
        y = resample_poly(x, ratio.numerator, ratio.denominator) if ratio != 1 else x
        if len(y) > 3 * 2 * len(sos) + 1:
            y = sosfiltfilt(sos, y)
        out[i, : len(y)] = y[:n_out]
    out = np.clip(np.nan_to_num(out), -20.0, 20.0)
    if out.shape[1] >= out_len:
        start = (out.shape[1] - out_len) // 2
        return out[:, start:start + out_len].astype(np.float32), problems
    padded = np.zeros((len(LEADS), out_len), dtype=np.float32)
    padded[:, : out.shape[1]] = out
    problems.append(f"record shorter than {out_len / out_fs:.2f} s: zero-padded")
    return padded, problems
