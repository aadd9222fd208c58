"""Stand-in scorers for the scheduler's and the lanes' pure-logic tests (tests/stream/test_scheduler.py,
tests/stream/test_lanes.py): an every-point scorer whose band is what the last event says, and an hourly
cadence scorer."""
from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

from stream.scoring import Needs


class EveryPoint:
    """Scores every point; its band is whatever the last event says."""
    name = "every"
    needs = Needs(lookback=None, ecgs=0, cadence=None, band_change_scores_all=True)

    def new_state(self):
        return []

    def apply(self, state, events):
        state.extend(events)

    def score(self, items):
        return [SimpleNamespace(at=p.at, tasks={self.name: SimpleNamespace(band=state[-1].band)}) for state, p in items]


class Hourly(EveryPoint):
    name = "hourly"
    needs = Needs(lookback=None, ecgs=0, cadence=timedelta(hours=1))

    def snapshot(self, state):
        return list(state)

    def score(self, items):
        return [SimpleNamespace(at=p.at, seen=[e.event_id for e in state]) for state, p in items]


def _event(at: datetime, band: str = "low") -> SimpleNamespace:
    return SimpleNamespace(available_time=at, time=at, event_id=f"e{at:%H%M}", band=band)
