"""The Scorer protocol: every risk score (NEWS2, MedM2T, ...) plugs into the worker through it.

A scorer is incremental. The worker keeps one scorer state per stay, feeds it each scoring point's new
events (`apply`, in the canonical order of `canonical_order`) and asks for scores of many stays at once
(`score`, one forward pass for a model). The score at a point is a function of the stay's events up to
that point only (docs/scoring-contract.md), so it never depends on batching or timing.

`Needs` is what a scorer reads; the store (stream/state.py) keeps exactly that much of each stay, so a
state rebuilt from Redis after a restart equals the one the worker had in memory.

`StayView` and `score_views` are the offline reference: a stay's events up to `now`, scored from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

from medm2t.events import Ecg, Measurement, RiskScore, StayOpened, _Event


@dataclass(frozen=True)
class Needs:
    lookback: timedelta | None   # measurements read back from the latest point; None = the whole stay
    ecgs: int                    # latest ECGs read (0: none)
    # None: a cheap scorer, scored at every point as it is taken, on the event loop. A timedelta: score at most
    # once per this much clinical time, batched off the loop; timedelta(0) = every point, still batched.
    cadence: timedelta | None
    # A change of this scorer's band (a scorer at every point) scores the cadence scorers at that point too.
    band_change_scores_all: bool = False


@dataclass(frozen=True)
class StayPoint:
    """One scoring point of one stay: everything the stay had by `at` has been applied to the state."""

    stay_id: int
    subject_id: int
    at: datetime
    opened: StayOpened | None
    inputs_seen: int   # measurements and ECGs applied so far


@runtime_checkable
class Scorer(Protocol):
    name: str      # one of medm2t.vocabulary.SCORERS
    version: str   # shown beside every score: rule version or model version
    needs: Needs

    def new_state(self) -> Any:
        ...

    def apply(self, state: Any, events: Sequence[_Event]) -> None:
        """Add one point's new events (canonical order) to the state. Must not raise on odd data."""
        ...

    def score(self, items: Sequence[tuple[Any, StayPoint]]) -> list[RiskScore]:
        """One RiskScore per (state, point), in order. Must not raise: report gaps in `missing`."""
        ...

    # A cadence scorer (needs.cadence set) also offers `snapshot(state) -> state`: a copy as of now that later
    # `apply` calls do not change, so that several points of one stay are scored in one pass.


def canonical_order(events: Iterable[_Event]) -> list[_Event]:
    """The order in which a point's events are applied, whatever order they arrived in."""
    return sorted(events, key=lambda e: (e.available_time, e.time, e.event_id))


@dataclass
class StayView:
    """Everything known about one stay at `now` (the latest available_time seen), oldest event first."""

    stay_id: int
    subject_id: int
    now: datetime
    opened: StayOpened | None = None
    measurements: list[Measurement] = field(default_factory=list)
    ecgs: list[Ecg] = field(default_factory=list)

    def events(self) -> list[_Event]:
        return canonical_order([*([self.opened] if self.opened else []), *self.measurements, *self.ecgs])


def score_views(scorer: Scorer, views: Sequence[StayView]) -> list[RiskScore]:
    """Score each view from a fresh state (the offline reference the worker's incremental scores equal)."""
    items = []
    for view in views:
        state = scorer.new_state()
        events = view.events()
        scorer.apply(state, events)
        n_inputs = len(view.measurements) + len(view.ecgs)
        items.append((state, StayPoint(view.stay_id, view.subject_id, view.now, view.opened, n_inputs)))
    return scorer.score(items)
