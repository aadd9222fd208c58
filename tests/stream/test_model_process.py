"""stream/scorers/model_process.py: MedM2T in a process of its own scores like MedM2T in the worker's own
thread, also from a state rebuilt at once (as from Redis), and drops the states of the stays the worker drops."""
from __future__ import annotations

import asyncio
import gc
from datetime import datetime

import pytest

from medm2t import topics
from medm2t.events import Ecg, Measurement, StayOpened
from stream.offline import MODEL_ROUNDING_STEPS, backlog, run_backlog, score_differences, score_key, score_stream
from stream.scorers import ScorerConfigError, load_medm2t
from stream.scorers.model_process import ModelProcess
from stream.scorers.news2 import News2Scorer
from stream.scoring import StayPoint, canonical_order

REDIS_DB = 6
PARTITIONS = 3


@pytest.fixture(scope="module")
def settings(pipeline_settings, checkpoint):
    base = pipeline_settings.redis_url.rsplit("/", 1)[0]
    return pipeline_settings.model_copy(update={"redis_url": f"{base}/{REDIS_DB}", "checkpoint": checkpoint[0],
                                                "device": "cpu", "torch_threads": 1})


@pytest.fixture(scope="module")
def model_process(settings):
    scorer = ModelProcess(settings)
    yield scorer
    scorer.close()


@pytest.mark.integration
def test_scores_in_the_model_process_equal_the_threads(settings, model_process, synth_cohort):
    """Eight stays as a backlog through the pipeline: MedM2T in the worker's thread, then in its own process."""
    messages, _ = backlog(_stays(synth_cohort)[:8], PARTITIONS)
    url = settings.redis_url
    want = asyncio.run(run_backlog(url, [News2Scorer(), load_medm2t(settings)], messages, PARTITIONS))
    got = asyncio.run(run_backlog(url, [News2Scorer(), model_process], messages, PARTITIONS))

    got_scores, _ = score_stream(got.sent[topics.SCORES])
    want_scores, _ = score_stream(want.sent[topics.SCORES])
    assert sum(s.scorer == "medm2t" for s in got_scores.values()) > 100
    assert score_differences(got_scores, want_scores, MODEL_ROUNDING_STEPS) == []


@pytest.mark.integration
def test_a_state_rebuilt_here_scores_like_one_fed_point_by_point(model_process, synth_cohort):
    """A stay rebuilt from Redis applies its scored history to a fresh handle at once; those events reach the
    child with the stay's next point, and score as if each point had been sent on its own."""
    stay = next(s for s in _stays(synth_cohort) if any(isinstance(e, Ecg) for e in s))
    points: dict[datetime, list] = {}
    for e in canonical_order(e for e in stay if e.kind != "outcome"):
        points.setdefault(e.available_time, []).append(e)
    opened = next(e for e in stay if isinstance(e, StayOpened))
    fed, rebuilt = model_process.new_state(), model_process.new_state()
    n_inputs, last = 0, None
    for at, events in points.items():
        n_inputs += sum(isinstance(e, (Measurement, Ecg)) for e in events)
        point = StayPoint(opened.stay_id, opened.subject_id, at, opened, n_inputs)
        last = asyncio.run(_scores(model_process, [(fed, events, point)]))[0]
        model_process.apply(rebuilt, events)
    again = asyncio.run(_scores(model_process, [(rebuilt, [], point)]))[0]
    assert len(points) > 20 and again.inputs_seen == last.inputs_seen
    assert score_differences({score_key(again): again}, {score_key(last): last}, MODEL_ROUNDING_STEPS) == []


@pytest.mark.integration
def test_the_child_drops_the_states_of_stays_the_worker_dropped(model_process):
    at = datetime(2150, 1, 1, 8)
    def one_pass(hs):
        return asyncio.run(_scores(model_process, [(h, [], StayPoint(i + 1, 1, at, None, 0)) for i, h in enumerate(hs)]))

    gc.collect()
    handles = [model_process.new_state() for _ in range(3)]
    assert len(one_pass(handles)) == 3   # (it also takes the drops of earlier tests' stays along)
    held = model_process.states_held()
    del handles[:2]
    gc.collect()
    one_pass(handles)  # the drops travel with the next pass
    assert model_process.states_held() == held - 2


@pytest.mark.integration
def test_a_model_process_that_dies_stops_the_worker_with_a_clear_message(settings):
    import psutil

    from stream.scorers.model_process import ModelProcessDied

    doomed = ModelProcess(settings)
    try:
        child = psutil.Process(doomed.pid)
        child.kill()
        child.wait(10)
        point = StayPoint(1, 1, datetime(2150, 1, 1, 8), None, 0)
        with pytest.raises(ModelProcessDied, match="stopped unexpectedly"):
            asyncio.run(_scores(doomed, [(doomed.new_state(), [], point)]))
    finally:
        doomed.close()


@pytest.mark.integration
def test_a_model_process_killed_while_loading_says_so(settings):
    import threading
    import time

    import psutil

    def model_children() -> set[int]:
        return {p.pid for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())}

    before, outcome = model_children(), []

    def start():
        try:
            ModelProcess(settings).close()
        except ScorerConfigError as exc:
            outcome.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    deadline = time.monotonic() + 30
    while not (new := model_children() - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in new:  # it imports torch and reads the checkpoint for seconds: killed long before it is done
        psutil.Process(pid).kill()
    starter.join(60)
    assert len(outcome) == 1 and "stopped while loading" in str(outcome[0])


def test_a_model_process_that_cannot_load_says_why(tmp_path):
    from medm2t.settings import Settings

    with pytest.raises(ScorerConfigError, match="does not exist"):
        ModelProcess(Settings(checkpoint=tmp_path / "nowhere", device="cpu"))


def _stays(cohort) -> list[list]:
    from replay.sources import parse_spec

    return [list(s) for s in parse_spec(f"synth:{cohort}").stays()]


async def _scores(model_process, work):
    return await model_process.start_pass(work)
