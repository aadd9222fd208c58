"""Model speed on a synthetic cohort: stays/s of batched inference, and the latency of rescoring one stay
after one new event, incremental (IncrementalEncoder) versus full recompute from raw events.

Weights do not change speed, so without a checkpoint the model is the untrained network of the preset, with
the featurizer fitted on the benchmark cohort. Timings on CUDA synchronise the device before reading the clock.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


@dataclass
class BenchOptions:
    preset: str = "small"
    checkpoint: Path | None = None
    stays: int = 64
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    threads: int | None = None
    repeats: int = 5           # timed forward passes per batch size (median reported)
    warmup: int = 2            # untimed passes before them
    updates: int = 200         # single-event updates timed for the latency figures
    seed: int = 0
    progress: bool = True


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def percentiles(ms: Sequence[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "n": len(a)}


class _Clock:
    """Wall clock that waits for queued CUDA work, so a reading covers the work and not just its launch."""

    def __init__(self, device: str):
        import torch

        self._sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def now(self) -> float:
        self._sync()
        return time.perf_counter()


def _say(opts: BenchOptions, msg: str) -> None:
    if opts.progress:
        print(msg, file=sys.stderr, flush=True)


def load_cohort(n: int, seed: int, progress: bool) -> list[list]:
    """Generate a synthetic cohort into a temporary folder and read it back through the MIMIC reader; only
    the events a live worker would see (no StayClosed/Outcome) are kept."""
    from medm2t.events import Ecg, Measurement, StayOpened
    from replay.sources import parse_spec
    from replay.synth import generate

    with tempfile.TemporaryDirectory(prefix="medm2t-bench-model-") as tmp:
        generate(n, seed, Path(tmp), progress=progress)
        reader = parse_spec(f"synth:{tmp}")
        stays = [[e for e in s if isinstance(e, (StayOpened, Measurement, Ecg))] for s in reader.stays()]
    stays = [s for s in stays if len(s) >= 4]
    if not stays:
        raise ValueError(f"the synthetic cohort of {n} stays has no stay with enough events to benchmark")
    return stays


def build_model(opts: BenchOptions, stays: list[list], device: str):
    """-> (model in eval mode on `device`, featurizer, cfg, model_version or None)."""
    import torch

    if opts.checkpoint is not None:
        from model.checkpoint import load_checkpoint

        model, feat, cfg, meta = load_checkpoint(opts.checkpoint, device)
        return model, feat, cfg, meta.get("model_version")
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.network import MedM2T

    cfg = ModelConfig.from_preset(opts.preset)
    feat = fit_featurizer(stays, cfg)
    torch.manual_seed(opts.seed)
    return MedM2T(cfg, feat.spec()).to(device).eval(), feat, cfg, None


def _history_split(events: list) -> int:
    """Index of the first event after a realistic history: half of the stay's events."""
    return max(1, len(events) // 2)


def bench_batched(model, feat, cfg, stays, device, opts, autocast, tick: Callable[[], None]) -> list[dict]:
    import torch

    from model.inputs import collate

    clock = _Clock(device)
    inputs = []
    for s in stays:
        k = _history_split(s)
        inputs.append(feat.encode(s[:k], s[k - 1].available_time))
    rows = []
    for b in opts.batch_sizes:
        items = [inputs[i % len(inputs)] for i in range(b)]  # stays repeat when the batch exceeds the cohort
        collate_ms, forward_ms = [], []
        for r in range(opts.warmup + opts.repeats):
            t0 = clock.now()
            batch = collate(items, cfg).to(device)
            t1 = clock.now()
            with torch.inference_mode(), autocast():
                model(batch)
            t2 = clock.now()
            if r >= opts.warmup:
                collate_ms.append(1e3 * (t1 - t0))
                forward_ms.append(1e3 * (t2 - t1))
            tick()
        fwd, col = float(np.median(forward_ms)), float(np.median(collate_ms))
        rows.append({"batch_size": b, "forward_ms": fwd, "stays_per_s": 1e3 * b / fwd,
                     "collate_ms": col, "stays_per_s_with_collate": 1e3 * b / (fwd + col)})
    return rows


def _latency_plan(stays, updates: int) -> list[tuple[int, int]]:
    """(stay index, event index) of each new event to time: the stays take turns, each from its history split."""
    plan = []
    for j in range(math.ceil(updates / len(stays))):
        for i, s in enumerate(stays):
            k = _history_split(s) + j
            if k < len(s) and len(plan) < updates:
                plan.append((i, k))
    return plan


def bench_latency(model, feat, cfg, stays, device, opts, autocast, tick: Callable[[], None]) -> dict:
    """Per new event: incremental = IncrementalEncoder.update([event]) + score; full = featurize all events
    so far + collate + forward. Stays take turns; each starts from its first half already applied."""
    import torch

    from medm2t.events import Ecg
    from model.incremental import IncrementalEncoder
    from model.inputs import collate

    clock = _Clock(device)
    inc = IncrementalEncoder(model, feat)
    plan = _latency_plan(stays, opts.updates)
    states = {}

    def state_for(i: int):
        if i not in states:
            s = stays[i]
            states[i] = inc.update(inc.new_state(), s[:_history_split(s)])
        return states[i]

    def full(events: list, at: datetime):
        with torch.inference_mode(), autocast():
            return model(collate([feat.encode(events, at)], cfg).to(device))

    warm = stays[0]
    for _ in range(max(opts.warmup, 1)):  # first calls pay one-off allocation and kernel-selection costs
        st = inc.update(inc.new_state(), warm[:_history_split(warm)])
        inc.score([st], [warm[-1].available_time])
        full(warm, warm[-1].available_time)

    upd_ms, score_ms, full_ms, history, n_ecg = [], [], [], [], 0
    for i, k in plan:
        s = stays[i]
        st = state_for(i)
        event, at = s[k], s[k].available_time
        t0 = clock.now()
        inc.update(st, [event])
        t1 = clock.now()
        inc.score([st], [at])
        t2 = clock.now()
        full(s[:k + 1], at)
        t3 = clock.now()
        upd_ms.append(1e3 * (t1 - t0))
        score_ms.append(1e3 * (t2 - t1))
        full_ms.append(1e3 * (t3 - t2))
        history.append(k)
        n_ecg += isinstance(event, Ecg)
        tick()
    incremental = [u + s for u, s in zip(upd_ms, score_ms)]
    out = {
        "updates": len(plan), "ecg_updates": n_ecg, "stays": len(states),
        "history_events_median": float(np.median(history)),
        "incremental": percentiles(incremental),
        "incremental_update": percentiles(upd_ms),
        "incremental_score": percentiles(score_ms),
        "full_recompute": percentiles(full_ms),
    }
    out["speedup_p50"] = out["full_recompute"]["p50_ms"] / out["incremental"]["p50_ms"]
    return out


def run_benchmark(opts: BenchOptions) -> dict:
    """Run both benchmarks; returns a JSON-ready dict (environment, data, batched rows, latency figures)."""
    import torch
    from tqdm import tqdm

    from model.allocator import reuse_freed_memory
    from model.inference import resolve_device

    reuse_freed_memory()  # as Predictor does for the worker
    if not opts.batch_sizes or min(opts.batch_sizes) < 1:
        raise ValueError("batch sizes must be positive integers")
    if opts.stays < 1 or opts.repeats < 1 or opts.updates < 1 or opts.warmup < 0:
        raise ValueError("stays, repeats and updates must be at least 1, warmup at least 0")
    device = resolve_device(opts.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # before our own work adds to it
    threads_before = torch.get_num_threads()
    threads, threads_note = opts.threads, "set by --threads" if opts.threads else "torch default"
    if not threads and device == "cpu" and load is not None:
        # torch's thread pool slows down far more than proportionally (10-100x seen) when the cores are
        # oversubscribed, so by default only the cores other processes leave idle are used.
        idle = max(1, int((os.cpu_count() or 1) - load + 0.5))
        if idle < threads_before:
            threads, threads_note = idle, f"torch default {threads_before} capped to the idle cores"
    if threads:
        torch.set_num_threads(threads)
    try:
        _say(opts, f"generating and reading a synthetic cohort of {opts.stays} stays ...")
        stays = load_cohort(opts.stays, opts.seed, opts.progress)
        _say(opts, "building the model ...")
        model, feat, cfg, version = build_model(opts, stays, device)
        cuda = device.startswith("cuda")

        def autocast():  # the precision the Predictor serves with
            return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

        env = {
            "device": device,
            "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
            "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "load_avg_1min": load,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "threads_note": threads_note,
            "preset": cfg.preset, "parameters": int(sum(p.numel() for p in model.parameters())),
            "checkpoint": str(opts.checkpoint) if opts.checkpoint else None, "model_version": version,
            "precision": "bf16 autocast (batched, full recompute), fp32 (incremental)" if cuda else "fp32",
        }
        data = {"source": f"replay.synth seed {opts.seed}", "stays": len(stays),
                "events": sum(len(s) for s in stays),
                "ecgs": sum(type(e).__name__ == "Ecg" for s in stays for e in s)}
        total = len(opts.batch_sizes) * (opts.warmup + opts.repeats)
        with tqdm(total=total, desc="batched inference", unit="pass", file=sys.stderr,
                  disable=not opts.progress) as bar:
            batched = bench_batched(model, feat, cfg, stays, device, opts, autocast, bar.update)
        with tqdm(total=opts.updates, desc="update latency", unit="event", file=sys.stderr,
                  disable=not opts.progress) as bar:
            latency = bench_latency(model, feat, cfg, stays, device, opts, autocast, bar.update)
    finally:
        torch.set_num_threads(threads_before)
    return {"env": env, "data": data, "batched": batched, "latency": latency,
            "settings": {"repeats": opts.repeats, "warmup": opts.warmup, "batch_sizes": list(opts.batch_sizes)}}


def format_report(r: dict) -> str:
    e, d, lat = r["env"], r["data"], r["latency"]
    lines = [
        f"device      {e['device']} ({e['device_name']})",
        f"cpu         {e['cpu']}, {e['cpu_cores']} cores, torch {e['torch']}, "
        f"{e['threads']} threads ({e['threads_note']})"
        + (f", 1-min load {e['load_avg_1min']:.1f} before the run" if e["load_avg_1min"] is not None else ""),
        f"model       preset {e['preset']}, {e['parameters']:,} parameters"
        + (f", checkpoint {e['checkpoint']} ({e['model_version']})" if e["checkpoint"] else ", untrained weights")
        + f", {e['precision']}",
        f"data        {d['stays']} synthetic stays, {d['events']:,} events, {d['ecgs']} ECGs ({d['source']})",
    ]
    load = e["load_avg_1min"]
    if e["device"] == "cpu" and load is not None and load + e["threads"] > e["cpu_cores"] + 0.5:
        # torch's thread pool slows down far more than proportionally when the cores are oversubscribed
        lines.append(f"WARNING     other processes were busy (load {load:.1f} on {e['cpu_cores']} cores): CPU timings "
                     "are disturbed; rerun on an idle machine or with fewer --threads")
    lines += [
        "",
        f"batched inference (one forward pass under inference_mode, median of {r['settings']['repeats']} "
        f"after {r['settings']['warmup']} warm-up)",
        f"  {'batch':>5}  {'forward ms':>10}  {'stays/s':>9}  {'collate ms':>10}  {'stays/s incl. collate':>21}",
    ]
    for row in r["batched"]:
        lines.append(f"  {row['batch_size']:>5}  {row['forward_ms']:>10.2f}  {row['stays_per_s']:>9.1f}  "
                     f"{row['collate_ms']:>10.2f}  {row['stays_per_s_with_collate']:>21.1f}")
    lines += [
        "",
        f"rescoring one stay after one new event ({lat['updates']} events over {lat['stays']} stays, "
        f"{lat['ecg_updates']} of them ECGs; median history {lat['history_events_median']:.0f} events)",
        f"  {'':<36}  {'p50 ms':>8}  {'p95 ms':>8}",
    ]
    for key, label in (("incremental", "incremental (update + score)"), ("incremental_update", "  of which update"),
                       ("incremental_score", "  of which score"),
                       ("full_recompute", "full recompute (featurize + forward)")):
        lines.append(f"  {label:<36}  {lat[key]['p50_ms']:>8.2f}  {lat[key]['p95_ms']:>8.2f}")
    lines.append(f"  incremental is {lat['speedup_p50']:.1f}x faster at p50")
    return "\n".join(lines)
