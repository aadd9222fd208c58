"""Training/evaluation targets of one stay at one prediction (landmark) time, from its Outcome event.

- mortality: Outcome.hospital_death (death at any time in the hospitalisation, as the paper).
- los_remaining: days left in the ICU at `at` = max(0, icu_outtime - at); where the source has no
  icu_outtime, los_days - elapsed days (elapsed from icu_intime, else from StayOpened.time).
- cvd_90d: index into CVD_CLASSES.
A label the source does not have is None and its task is masked out of the loss and the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from medm2t.events import Outcome, StayOpened, _Event

from medm2t.vocabulary import CVD_CLASSES


@dataclass(frozen=True)
class Targets:
    mortality: float | None
    los_remaining: float | None
    cvd_90d: int | None
    elapsed_days: float


def _outcome(events: Sequence[_Event]) -> Outcome | None:
    # the reader contract puts the Outcome last: scan from the end
    return next((e for e in reversed(events) if isinstance(e, Outcome)), None)


def admission_time(events: Sequence[_Event]) -> datetime:
    """ICU admission: the Outcome's icu_intime where known, else the StayOpened time, else the first event."""
    outcome = _outcome(events)
    if outcome is not None and outcome.icu_intime is not None:
        return outcome.icu_intime
    opened = next((e for e in events if isinstance(e, StayOpened)), None)
    if opened is not None:
        return opened.time
    if not events:
        raise ValueError("a stay with no events has no admission time")
    return min(e.time for e in events)


def targets_at(events: Sequence[_Event], at: datetime) -> Targets:
    outcome = _outcome(events)
    start = admission_time(events)
    elapsed = max(0.0, (at - start).total_seconds() / 86400.0)
    if outcome is None:
        return Targets(None, None, None, elapsed)
    mortality = None if outcome.hospital_death is None else float(outcome.hospital_death)
    if outcome.icu_outtime is not None:
        los = max(0.0, (outcome.icu_outtime - at).total_seconds() / 86400.0)
    elif outcome.los_days is not None and outcome.los_days >= 0:
        los = max(0.0, outcome.los_days - elapsed)
    else:
        los = None
    cvd = None if outcome.cvd_90d is None else CVD_CLASSES.index(outcome.cvd_90d)
    return Targets(mortality, los, cvd, elapsed)
