"""The Scorer protocol: every risk score (NEWS2, MedM2T, ...) plugs into the worker through it.

The worker coalesces the stays that changed, builds one `StayView` per stay from its Redis state and
calls `score_batch` once per micro-batch, so a model can run one forward pass for the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Sequence, runtime_checkable

from medm2t.events import Ecg, Measurement, RiskScore, StayOpened


@dataclass
class StayView:
    """Everything known about one stay at `now` (the latest available_time seen), oldest event first."""

    stay_id: int
    subject_id: int
    now: datetime
    opened: StayOpened | None = None
    measurements: list[Measurement] = field(default_factory=list)
    ecgs: list[Ecg] = field(default_factory=list)


@runtime_checkable
class Scorer(Protocol):
    name: str      # e.g. "news2", "medm2t"
    version: str   # shown beside every score: rule version or model version

    def score_batch(self, stays: Sequence[StayView]) -> list[RiskScore]:
        """One RiskScore per stay, in order. Must not raise on sparse or odd data: report it in `missing`."""
        ...
