"""The end-to-end runs' shared steps: `medm2t replay` of the synthetic cohort in ward mode (START, SEED), the events
each stay gets, and reading the results back from Redis and the topics (for test_pipeline_integration and
test_pipeline_medm2t)."""
from __future__ import annotations

import argparse
import subprocess
import time
from collections import defaultdict
from datetime import datetime

import pytest

from stream import keys
from tests.helpers.paths import MEDM2T
from tests.helpers.processes import service_env

START = datetime(2031, 3, 1, 8, 0)
SEED = 5


def _replay(settings, cohort, speed="max") -> subprocess.Popen:
    cmd = [MEDM2T, "replay", "--mimic", str(cohort / "mimic-iv"), "--ecg", str(cohort / "mimic-iv-ecg"),
           "--speed", speed, "--mode", "ward", "--beds", "24", "--seed", str(SEED), "--start", START.isoformat(),
           "--no-progress"]
    return subprocess.Popen(cmd, env=service_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _replayed(settings, cohort) -> str:
    proc = _replay(settings, cohort)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    return out


def _per_stay(cohort) -> dict[int, list]:
    """The replayed events of each stay, shifted exactly as the replay shifts them, in delivery order."""
    from replay.engine import merge_ward
    from replay.sources import open_source

    ns = argparse.Namespace(mimic=cohort / "mimic-iv", ecg=cohort / "mimic-iv-ecg", meds=None, physionet2012=None,
                            outcomes=None)
    per_stay = defaultdict(list)
    for released in merge_ward(open_source(ns).stays(), 24, START, seed=SEED):
        if released.event.kind != "outcome":
            per_stay[released.event.stay_id].append(released.event)
    return per_stay


def _wait(predicate, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    what = what() if callable(what) else what
    pytest.fail(f"timed out after {timeout} s waiting for {what}\nworker log tail:\n{tail}")


def _redis(settings):
    from medm2t.connections import redis_sync

    return redis_sync(settings, decode_responses=True)


def _answers(r) -> bool:
    import redis

    try:
        return bool(r.ping())
    except redis.ConnectionError:  # includes BusyLoadingError while the AOF is read back
        return False


def _counter(r, name) -> int:
    return int(r.hget(keys.COUNTERS, name) or 0)


def _idle(r, n_inputs) -> bool:
    """Every input applied and no stay with a point after its scored mark. Applied events are counted by
    the stays' own n_events, which APPLY writes atomically with them (the global events_in counter is
    bookkeeping written after it, so a kill -9 in between leaves it short)."""
    applied = 0
    for k in r.scan_iter(match="{stay:*}:meta", count=1000):
        clock, scored, n_events = r.hmget(k, "clock", "scored", "n_events")
        if clock and (not scored or float(clock) > float(scored)):
            return False
        applied += int(n_events or 0)
    return applied >= n_inputs


def _read(settings, topic) -> list[bytes]:
    from medm2t.kafka import groupless_consumer

    consumer = groupless_consumer(settings, [topic], True, consumer_timeout_ms=3000)
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()


def _fresh(settings):
    """An empty Redis and empty topics (recreated) for one run."""
    from medm2t.kafka import recreate_topics

    _redis(settings).flushdb()
    recreate_topics(settings)
