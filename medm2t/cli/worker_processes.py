"""`medm2t worker --processes N`: one command for the whole machine. It starts N worker processes that join
the same consumer group (each takes a share of the partitions, docs/deployment.md), restarts one that dies,
and stops them all on Ctrl-C or SIGTERM. One Python worker keeps about one core busy, two when its MedM2T runs
in a process of its own (MEDM2T_MODEL_PROCESS), so 'auto' starts one per core or per two cores; more processes
than partitions leave the extra ones idle."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medm2t.settings import machine_cores

log = logging.getLogger("medm2t.worker")
RESTARTS_PER_MINUTE = 5  # a worker that dies more often than this is broken, not unlucky: stop


def processes_wanted(text: str | None, partitions: int, cores_each: int = 1) -> int:
    """--processes: a whole number, or 'auto' (one per `cores_each` cores, at most one per partition)."""
    from medm2t.cli import UserError

    if text in (None, "1"):
        return 1
    if text == "auto":
        return max(1, min(machine_cores() // cores_each, partitions))
    try:
        n = int(text)
    except ValueError:
        raise UserError(f"--processes must be a whole number or 'auto', not {text!r}") from None
    if n < 1:
        raise UserError("--processes must be at least 1")
    return n


def cores_each(settings) -> int:
    """Cores one worker keeps busy: two when MedM2T runs in a process of its own beside its event loop."""
    from medm2t.vocabulary import MEDM2T

    wanted = [s.strip() for s in settings.scorers.split(",")]
    medm2t = MEDM2T in wanted or ("auto" in wanted and settings.checkpoint.is_dir())
    return 2 if settings.model_process and medm2t else 1


def process_env(n: int, torch_threads: int = 0, env: dict[str, str] | None = None,
                cores_per_worker: int = 1) -> dict[str, str]:
    """The environment of one of N worker processes: MEDM2T_TORCH_THREADS is `torch_threads` (the settings',
    from the environment or .env) or, when that is 0, the process's share of the cores (less the one its event
    loop keeps busy when its model has a process of its own). Each torch would otherwise start a thread per
    core, and N processes would run N times as many forward-pass threads as there are cores, spinning against
    each other (docs/benchmarks.md)."""
    env = dict(os.environ if env is None else env)
    env["MEDM2T_TORCH_THREADS"] = str(torch_threads or max(1, machine_cores() // n - (cores_per_worker - 1)))
    return env


def supervise(n: int, argv: list[str], metrics_port: int, verbose: bool = False, torch_threads: int = 0,
              cores_per_worker: int = 1) -> int:
    """Run `medm2t worker` N times with `argv` (each with its own metrics port when one is set) until stopped."""
    exe = str(Path(sys.executable).parent / "medm2t")

    def start(i: int) -> subprocess.Popen:
        args = [exe, *(["--verbose"] if verbose else []), "worker", *argv, "--processes", "1"]
        if metrics_port:
            args += ["--metrics-port", str(metrics_port + i)]
        proc = subprocess.Popen(args, env=process_env(n, torch_threads, cores_per_worker=cores_per_worker))
        log.info("worker process %d of %d started (pid %d)", i + 1, n, proc.pid)
        return proc

    procs = [start(i) for i in range(n)]
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.5)
        for i, p in enumerate(procs):
            code = p.poll()
            if code is None or stopping:
                continue
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            if len(restarts) > RESTARTS_PER_MINUTE:
                log.error("worker processes died %d times within a minute (last exit %s): stopping all",
                          len(restarts), code)
                stop(None, None)
                break
            log.warning("worker process %d (pid %d) exited with %s: restarting it", i + 1, p.pid, code)
            procs[i] = start(i)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=30))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return 0 if all(c in (0, -signal.SIGTERM) for c in codes) and len(restarts) <= RESTARTS_PER_MINUTE else 1
