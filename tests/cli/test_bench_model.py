"""`medm2t bench model` on a tiny real run: real synthetic cohort, real featurizer and network, real timing.
Only the structure and sanity of the figures are checked, never their size (machines differ)."""
from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from tests.helpers.paths import MEDM2T


def _finite_positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_benchmark_reports_positive_finite_figures():
    from model.bench import BenchOptions, format_report, run_benchmark

    r = run_benchmark(BenchOptions(stays=8, batch_sizes=(1, 2), repeats=2, warmup=1, updates=6, threads=1,
                                   device="cpu", progress=False))
    assert r["env"]["device"] == "cpu" and r["env"]["threads"] == 1 and r["env"]["parameters"] > 0
    assert r["data"]["stays"] >= 1 and r["data"]["events"] > r["data"]["stays"]
    assert [row["batch_size"] for row in r["batched"]] == [1, 2]
    for row in r["batched"]:
        for key in ("forward_ms", "stays_per_s", "collate_ms", "stays_per_s_with_collate"):
            assert _finite_positive(row[key]), (row["batch_size"], key, row[key])
        assert math.isclose(row["stays_per_s"], 1e3 * row["batch_size"] / row["forward_ms"])
    lat = r["latency"]
    assert lat["updates"] == 6 and lat["history_events_median"] >= 1
    for key in ("incremental", "incremental_update", "incremental_score", "full_recompute"):
        assert lat[key]["n"] == 6
        assert _finite_positive(lat[key]["p50_ms"]) and lat[key]["p95_ms"] >= lat[key]["p50_ms"], key
    assert _finite_positive(lat["speedup_p50"])
    report = format_report(r)
    assert "stays/s" in report and "full recompute" in report
    json.dumps(r)  # the --json output must serialise


def test_cli_rejects_bad_batch_sizes_and_missing_checkpoint(tmp_path):
    bad = subprocess.run([MEDM2T, "bench", "model", "--batch-sizes", "1,x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "comma-separated integers" in bad.stderr
    missing = subprocess.run([MEDM2T, "bench", "model", "--checkpoint", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


@pytest.mark.parametrize("args", [["--stays", "0"], ["--threads", "0"]])
def test_cli_rejects_non_positive_counts(args):
    out = subprocess.run([MEDM2T, "bench", "model", *args], capture_output=True, text=True)
    assert out.returncode == 2 and "at least 1" in out.stderr


def test_benchmark_uses_a_given_checkpoint(tmp_path):
    from model.bench import BenchOptions, build_model, load_cohort, run_benchmark
    from model.checkpoint import save_checkpoint

    opts = BenchOptions(stays=4, batch_sizes=(1,), repeats=1, warmup=0, updates=2, threads=1, device="cpu",
                        progress=False, seed=3)
    model, feat, cfg, _ = build_model(opts, load_cohort(4, 3, progress=False), "cpu")
    ck = save_checkpoint(tmp_path / "ck", model, feat, cfg, {}, {"data": "bench test"})
    r = run_benchmark(BenchOptions(**{**opts.__dict__, "checkpoint": ck}))
    assert r["env"]["checkpoint"] == str(ck) and r["env"]["model_version"].startswith("medm2t-arch-")
    assert r["env"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert r["batched"][0]["stays_per_s"] > 0 and r["latency"]["full_recompute"]["p50_ms"] > 0


@pytest.mark.integration
def test_pipeline_benchmark_scores_every_point_of_a_small_backlog_on_a_real_redis():
    """`medm2t bench pipeline` end to end (it starts its own Redis): the figures it prints are positive and
    the NEWS2 run scored the backlog (a core that lost points would print far fewer scores than events)."""
    import re

    out = subprocess.run([str(MEDM2T), "bench", "pipeline", "--stays", "4", "--scorers", "news2",
                          "--histories", "20"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    events = int(re.search(r"([\d,]+) events, 6 partitions", out.stdout).group(1).replace(",", ""))
    run = re.search(r"news2\s+([\d,]+) events/s .*?, ([\d,]+) scores", out.stdout)
    assert run and int(run.group(1).replace(",", "")) > 0, out.stdout
    assert events // 3 < int(run.group(2).replace(",", "")) <= events, out.stdout
    assert re.search(r"20 events of history each: [\d,]+ µs", out.stdout), out.stdout


def test_pipeline_benchmark_rejects_an_unknown_scorer():
    out = subprocess.run([str(MEDM2T), "bench", "pipeline", "--stays", "1", "--scorers", "news3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "unknown scorer 'news3'" in out.stderr


@pytest.mark.integration
def test_stream_benchmark_runs_bare_faust_the_worker_and_a_paced_replay_over_a_real_broker():
    """`medm2t bench stream` end to end (it starts its own tansu and Redis): every phase prints positive
    figures, and the paced run matched scores to input points (a wrong join would match none)."""
    import re

    out = subprocess.run([str(MEDM2T), "bench", "stream", "--stays", "3", "--paced-rate", "400",
                          "--timeout", "240"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rates = [(float(e.replace(",", "")), float(m.replace(",", "")))
             for e, m in re.findall(r"([\d,]+) events/s, +([\d,]+) msgs/s \(", out.stdout)]
    assert len(rates) == 3 and all(e >= m > 0 for e, m in rates), out.stdout  # bare Faust, news2, news2+medm2t
    assert re.search(r"events in [\d,]+ messages \([\d.]+ per message\)", out.stdout), out.stdout
    assert re.search(r"worker, news2 .*[\d.]+x bare Faust", out.stdout), out.stdout
    assert re.search(r"worker, news2,medm2t .*[\d.]+x bare Faust", out.stdout), out.stdout
    paced = re.search(r"latency p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms over ([\d,]+) scores", out.stdout)
    assert paced, out.stdout
    p50, p99, top, matched = (int(g.replace(",", "")) for g in paced.groups())
    assert 0 <= p50 <= p99 <= top and matched > 0, out.stdout
    from stream.metrics import STAGES

    for stage in STAGES:  # the worker's own split of the latency, read off its /metrics
        assert re.search(rf"{stage} \d+ / ≤[\d.]+", out.stdout), out.stdout
    assert len(re.findall(r"CPU \w+ \d+%", out.stdout)) == 3, out.stdout


@pytest.mark.integration
def test_stream_benchmark_stopped_with_sigterm_leaves_nothing_running(tmp_path):
    """SIGTERM (a service manager, `kill`, a CI timeout) stops `medm2t bench stream` as Ctrl-C does: its
    worker, tansu and Redis stop with it instead of running on with the machine's memory."""
    import signal
    import time

    import psutil

    proc = subprocess.Popen([str(MEDM2T), "bench", "stream", "--stays", "3", "--paced-rate", "0", "--scorers", "news2",
                             "--timeout", "240"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})  # where it keeps its logs when stopped
    deadline = time.monotonic() + 240
    children = _descendants(proc.pid)
    while not any("worker" in argv for argv in children.values()):  # the worker's phase: every kind of child runs
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
        children = _descendants(proc.pid)
    programs = " ".join(argv[0] for argv in children.values())
    assert "tansu" in programs and "-server" in programs, programs  # the broker, and valkey- or redis-server
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and "interrupted" in err and f"logs are in {tmp_path}" in err, err[-2000:]
    _, alive = psutil.wait_procs(list(children), timeout=10)
    assert not alive, [children[p][:3] for p in alive]


def _descendants(pid: int) -> dict:
    """{process: its argv} of every process below `pid` that still runs."""
    import psutil

    found = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            found[p] = p.cmdline()
        except psutil.NoSuchProcess:  # a short-lived child ended while we looked
            pass
    return found
