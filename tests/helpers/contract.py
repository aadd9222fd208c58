"""An independent, offline statement of the scoring contract (docs/scoring-contract.md), for the tests:
given each stay's events in the order its partition delivers them, which points are scored by which scorer,
and with what value. The worker must publish exactly this set, however it batched, crashed or rebalanced."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Sequence

from medm2t.events import Ecg, Measurement, RiskScore, StayClosed, StayOpened, _Event
from stream.offline import score_differences
from stream.scoring import Scorer, StayPoint, canonical_order
from stream.state import epoch


def effective_points(events: Sequence[_Event]) -> list[tuple[datetime, _Event]]:
    """(point, event) in delivery order: a stay's point never moves back (in-order partitions)."""
    clock, out = None, []
    for e in events:
        clock = e.available_time if clock is None else max(clock, e.available_time)
        out.append((clock, e))
    return out


def expected_scores(per_stay: dict[int, list[_Event]], scorers: Sequence[Scorer]) -> dict[tuple, RiskScore]:
    """(stay_id, scorer, scored_at) -> the score the contract requires."""
    want: dict[tuple, RiskScore] = {}
    for sid, events in per_stay.items():
        inputs = [e for e in events if e.kind != "outcome"]
        by_point: dict[datetime, list[_Event]] = defaultdict(list)
        for at, e in effective_points(inputs):
            by_point[at].append(e)
        closed_at = next((at for at, e in effective_points(inputs) if isinstance(e, StayClosed)), None)
        states = {s.name: s.new_state() for s in scorers}
        held: dict[str, list[_Event]] = defaultdict(list)
        last_by: dict[str, datetime] = {}
        opened, n_inputs, band, first = None, 0, None, True
        for at in sorted(by_point):
            batch = canonical_order(by_point[at])
            opened = next((e for e in batch if isinstance(e, StayOpened)), opened)
            n_inputs += sum(isinstance(e, (Measurement, Ecg)) for e in batch)
            point = StayPoint(sid, inputs[0].subject_id, at, opened, n_inputs)
            band_changed = False
            for s in scorers:
                if s.needs.cadence is not None:
                    held[s.name] += batch
                    continue
                s.apply(states[s.name], batch)
                score, = s.score([(states[s.name], point)])
                want[(sid, s.name, at)] = score
                if s.name == "news2":
                    new_band = score.tasks["news2"].band
                    band_changed, band = (new_band != band and not first), new_band
            for s in scorers:
                if s.needs.cadence is None:
                    continue
                last = last_by.get(s.name)
                step = s.needs.cadence.total_seconds()
                if (last is None or band_changed or (closed_at is not None and at >= closed_at)
                        or epoch(at) // step > epoch(last) // step):
                    s.apply(states[s.name], held.pop(s.name, []))
                    score, = s.score([(states[s.name], point)])
                    want[(sid, s.name, at)] = score
                    last_by[s.name] = at
            first = False
    return want


compare = score_differences  # the worker's own comparison (stream/offline.py), for the tests' streams


