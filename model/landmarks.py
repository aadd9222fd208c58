"""Prediction (landmark) times per stay.

Training samples each stay at random times, so a score at hour 3 is as meaningful as one at hour 24:
`training_landmarks` draws `n_random` times uniformly between the first and the last data event
(available_time) and always adds the end of the data (where the benchmark mortality is judged).

Evaluation uses fixed landmarks 6, 12, 24, 48 h after admission where the stay's data reach them
(its last data event is available at or after that hour), plus "end" = the last data event (for a stay
with no data at all: its admission, scored on static inputs).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

import numpy as np

from medm2t.events import Ecg, Measurement, StayOpened, _Event
from model.labels import admission_time

EVAL_HOURS = (6, 12, 24, 48)


def data_span(events: Sequence[_Event]) -> tuple[datetime, datetime] | None:
    """(first, last) available_time of the stay's model inputs (measurements and ECGs), or None if none."""
    times = [e.available_time for e in events if isinstance(e, (Measurement, Ecg))]
    if not times:
        return None
    return min(times), max(times)


def training_landmarks(events: Sequence[_Event], rng: np.random.Generator, n_random: int = 3) -> list[datetime]:
    span = data_span(events)
    if span is None:
        return []
    first, last = span
    width = (last - first).total_seconds()
    times = [first + timedelta(seconds=float(s)) for s in rng.uniform(0.0, width, n_random)] if width > 0 else []
    return sorted(set(times)) + [last]


def evaluation_landmarks(events: Sequence[_Event], hours: Sequence[int] = EVAL_HOURS) -> dict[str, datetime]:
    """{'6h': t, ..., 'end': t} for the landmarks this stay's data reach. A stay without any measurement or
    ECG is still scored, on its static inputs, at 'end' = when its StayOpened became available (the stream
    scores it then too); {} only for a stay without even that."""
    span = data_span(events)
    if span is None:
        opened = next((e for e in events if isinstance(e, StayOpened)), None)
        return {"end": opened.available_time} if opened is not None else {}
    start = admission_time(events)
    out = {f"{h}h": start + timedelta(hours=h) for h in hours if span[1] >= start + timedelta(hours=h)}
    out["end"] = span[1]
    return out
