"""The scheduler and batcher: which complete points each scorer scores, and in which pass.

Every-point scorers (NEWS2) score each complete point as it is taken, on the event loop. Cadence scorers
(MedM2T) score the points their cadence, a band change of an every-point scorer (Needs.band_change_scores_all)
or the stay's close calls for; their due points are queued with the events held for them and scored together
in one pass off the event loop: a dynamic batch, as much as is due, up to `batch_max` points.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from medm2t.events import Ecg, Measurement, RiskScore, _Event
from stream import metrics
from stream.runtime import StayRuntime
from stream.scoring import Scorer, StayPoint, canonical_order
from stream.state import epoch

Due = tuple[StayRuntime, list[_Event], StayPoint]   # a cadence scorer's point, with the events held for it


@dataclass
class Taken:
    """One batch's work: the scores so far per stay and scorer, the cadence scorers' due points, each stay's
    last point taken, and the latency timelines of the points taken."""
    scores: dict[int, dict[str, list[RiskScore]]] = field(default_factory=dict)
    due: dict[str, list[Due]] = field(default_factory=lambda: defaultdict(list))
    last_point: dict[int, datetime] = field(default_factory=dict)
    timelines: list[list[float]] = field(default_factory=list)


def take(batch: Sequence[StayRuntime], scorers: Sequence[Scorer], complete: Callable[[StayRuntime, datetime], bool],
         batch_max: int) -> Taken:
    """Apply each stay's complete points in order and score the every-point scorers; queue the cadence
    scorers' due points. A stay stops once a cadence scorer has `batch_max` points queued; each stay after
    it still takes its points up to its first due one, so that every stay in the batch moves on. Synchronous:
    the pipeline runs it under its state lock."""
    every = [s for s in scorers if s.needs.cadence is None]
    cadenced = [s for s in scorers if s.needs.cadence is not None]
    taken = Taken()
    for rt in batch:
        out = taken.scores[rt.stay_id] = {s.name: [] for s in scorers}
        for at in sorted(rt.buffer):
            if not complete(rt, at):
                break
            events = canonical_order(rt.buffer.pop(at))
            if at in rt.timeline:
                taken.timelines.append(rt.timeline.pop(at) + [time.time()])
            rt.n_inputs += sum(isinstance(e, (Measurement, Ecg)) for e in events)
            for s in every:
                s.apply(rt.states[s.name], events)
            for s in cadenced:  # applied when the scorer is next due (off the event loop)
                rt.held[s.name] += events
            point = StayPoint(rt.stay_id, rt.subject_id, at, rt.opened, rt.n_inputs)
            band_changed = False
            for s in every:
                score, = s.score([(rt.states[s.name], point)])
                out[s.name].append(score)
                if s.needs.band_change_scores_all:
                    band = score.tasks[s.name].band if s.name in score.tasks else None
                    band_changed, rt.band = band != rt.band and rt.scored is not None, band
            taken.last_point[rt.stay_id] = rt.scored = at
            full = False
            for s in cadenced:
                if is_due(rt, s, at, band_changed):
                    taken.due[s.name].append((rt, rt.held.pop(s.name, []), point))
                    rt.last_by[s.name] = at
                    full = full or len(taken.due[s.name]) >= batch_max
            if full:
                break
    return taken


def is_due(rt: StayRuntime, scorer: Scorer, at: datetime, band_changed: bool) -> bool:
    last = rt.last_by.get(scorer.name)
    if last is None or band_changed or (rt.closed_at is not None and at >= rt.closed_at):
        return True
    step_s = scorer.needs.cadence.total_seconds()
    return not step_s or epoch(at) // step_s > epoch(last) // step_s


# The model's own thread: one pass at a time, in the order the scoring loop submits them.
_MODEL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="model")

Pass = tuple[Scorer, list[Due], "asyncio.Future[list[RiskScore]]"]


def submit_due(scorers: Sequence[Scorer], taken: Taken) -> list[Pass]:
    """Start each cadence scorer's pass over its due points in `taken`, in the model's thread (or the scorer's
    own process): it runs at once, while the event loop goes on (taking the next part of a batch, publishing
    the last)."""
    passes = []
    for s in scorers:
        if items := taken.due.get(s.name):
            work = [(rt.states[s.name], events, p) for rt, events, p in items]
            start_pass = getattr(s, "start_pass", None)  # a scorer in a process of its own runs the pass there
            scored = (start_pass(work) if start_pass is not None
                      else asyncio.get_running_loop().run_in_executor(_MODEL_THREAD, apply_and_score, s, work))
            passes.append((s, items, scored))
    return passes


async def collect_due(passes: Sequence[Pass], taken: Taken, forward_sizes: dict[str, dict[int, int]]) -> None:
    """Wait for the passes of `submit_due` and add their scores to `taken`."""
    for s, items, scored in passes:
        scores = await scored
        forward_sizes[s.name][len(items)] += 1
        metrics.observe_forward(s.name, len(items))
        for (rt, _, _), score in zip(items, scores):
            taken.scores[rt.stay_id][s.name].append(score)


def apply_and_score(scorer: Scorer, work: list[tuple[Any, list[_Event], StayPoint]]) -> list[RiskScore]:
    """Apply each due point's held events to its stay's state and score all the points in one pass. A stay
    with several points in `work` is scored at each from a snapshot of its state as of that point."""
    last = {id(state): i for i, (state, _, _) in enumerate(work)}
    items = []
    for i, (state, events, point) in enumerate(work):
        if events:
            scorer.apply(state, events)
        items.append((state if last[id(state)] == i else scorer.snapshot(state), point))
    return scorer.score(items)
