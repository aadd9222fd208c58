"""MedM2T in a process of its own beside the worker (MEDM2T_MODEL_PROCESS).

A worker process is bound to one core by Python's global interpreter lock: the model thread and the event
loop take turns. Here the MedM2T scorer and its per-stay states live in a child process instead, so the
model's passes run on another core while the event loop ingests, takes points (NEWS2) and publishes.

This side keeps the Scorer protocol (stream/scoring.py). A state here is a handle: `apply` only holds the
events (a stay rebuilt from Redis applies its whole scored history at once), and the next pass ships them
with the point. The child applies and scores exactly as `stream.scheduler.apply_and_score` does in a thread,
so the scores are the same. A handle that the worker drops (a stay forgotten, a rebalance) drops its state
in the child with the next pass. A child that dies takes the worker down with it at its next pass
(ModelProcessDied crashes the Faust app, with a line that says so): `worker --processes N` or the
container's restart policy starts it again, and the states are rebuilt from Redis as after any crash.
"""
from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

from medm2t.events import RiskScore, _Event
from medm2t.settings import Settings, machine_cores
from stream import metrics
from stream.scorers.loading import ScorerConfigError, load_medm2t
from stream.scoring import StayPoint


class ModelProcessDied(RuntimeError):
    """The child is gone; its states with it. The worker must stop (and restart) to rebuild them from Redis."""


class StateHandle:
    """One stay's state, held in the child under `key`; `pending`: events applied here, not shipped yet."""

    def __init__(self, key: int):
        self.key = key
        self.pending: list[_Event] = []


class ModelProcess:
    """A cadence scorer (MedM2T) run in a child process; `start_pass` is what the scheduler calls for it."""

    def __init__(self, settings: Settings):
        # spawn, not fork: a forked copy of a process that has started threads (torch, aiokafka) can deadlock
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            loaded = self._pool.submit(_load, settings, os.getpid()).result()
            self.name, self.version, self.needs, self._card, self.pid = loaded
        except BrokenProcessPool as exc:  # killed while loading (out of memory, a crash in torch): say so
            self._pool.shutdown(cancel_futures=True)
            raise ScorerConfigError(f"MedM2T's model process stopped while loading {settings.checkpoint} (killed, "
                                    "or out of memory?); set MEDM2T_MODEL_PROCESS=0 to load it in the worker "
                                    "itself and see its error") from exc
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise
        if self.needs.cadence is None:
            self._pool.shutdown()
            raise ScorerConfigError(f"{self.name} scores at every point; only a cadence scorer runs in a process")
        self._keys = itertools.count()
        self._dropped: deque[int] = deque()  # keys of dropped handles (finalizers append; any thread)

    def new_state(self) -> StateHandle:
        handle = StateHandle(next(self._keys))
        weakref.finalize(handle, self._dropped.append, handle.key)
        return handle

    def apply(self, state: StateHandle, events: Sequence[_Event]) -> None:
        state.pending += events

    def start_pass(self, work: Sequence[tuple[StateHandle, list[_Event], StayPoint]]) -> asyncio.Future:
        """Send one pass (each point's state, held events and point) to the child at once; the future
        resolves to the scores, in order."""
        dropped = [self._dropped.popleft() for _ in range(len(self._dropped))]
        items = []
        for handle, events, point in work:
            items.append((handle.key, handle.pending + list(events), point))
            handle.pending = []
        try:
            done = self._pool.submit(_apply_and_score, dropped, items)
        except BrokenProcessPool as exc:
            raise self._died() from exc
        return asyncio.ensure_future(self._scores(done))

    async def _scores(self, done) -> list[RiskScore]:
        try:
            scores, unknown = await asyncio.wrap_future(done)
        except BrokenProcessPool as exc:
            raise self._died() from exc
        metrics.UNKNOWN_ITEMS.inc(unknown)
        return scores

    def _died(self) -> ModelProcessDied:
        return ModelProcessDied(f"MedM2T's model process (pid {self.pid}) stopped unexpectedly (killed, or out of "
                                "memory?), so this worker stops too: start it again and it rebuilds its stays from "
                                "Redis (`medm2t worker --processes N` restarts its workers itself)")

    def states_held(self) -> int:
        """How many stay states the child holds (tests)."""
        return self._pool.submit(_states_held).result()

    def card(self) -> dict:
        return self._card

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


# ---- the child process -------------------------------------------------------------------------------

_scorer: Any = None
_states: dict[int, Any] = {}


def _load(settings: Settings, parent: int):
    global _scorer
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="exit-with-worker").start()
    if not settings.torch_threads:  # the worker's event loop keeps one core busy
        settings = settings.model_copy(update={"torch_threads": max(1, machine_cores() - 1)})
    _scorer = load_medm2t(settings)
    return _scorer.name, _scorer.version, _scorer.needs, _scorer.card(), os.getpid()


def _exit_with(parent: int) -> None:
    """A worker killed outright (kill -9, OOM) cannot stop its model process: the process stops itself once its
    parent is gone, instead of holding its memory forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _apply_and_score(dropped: list[int], items: list[tuple[int, list[_Event], StayPoint]]):
    """The pass in the child: (scores, unknown items met), as apply_and_score on the states held here."""
    from stream.scheduler import apply_and_score

    for key in dropped:
        _states.pop(key, None)
    work = []
    for key, events, point in items:
        if key not in _states:
            _states[key] = _scorer.new_state()
        work.append((_states[key], events, point))
    unknown = _scorer.predictor.featurizer.unknown_items
    before = unknown.total()
    scores = apply_and_score(_scorer, work)
    return scores, unknown.total() - before


def _states_held() -> int:
    return len(_states)
