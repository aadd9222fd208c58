"""`medm2t bench model`: MedM2T inference throughput and per-event rescoring latency on a synthetic cohort."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """Measure MedM2T speed on a synthetic cohort generated on the fly (replay.synth, read back through
the MIMIC reader; the featurizer is fitted on it and the weights are untrained unless --checkpoint is given,
which does not change speed):

  * batched inference: stays/s at each batch size, one forward pass per batch under torch.inference_mode,
    median of several passes after warm-up (also with the collate step that builds the batch);
  * rescoring one stay after one new event, on stays with half of their events already seen:
    incremental (IncrementalEncoder update + score, cost grows with the new events only) versus full
    recompute from the raw events (featurize + collate + forward), p50 and p95 in ms.

On CUDA the clock waits for the device (torch.cuda.synchronize) before every reading.

example:  medm2t bench model --preset paper --batch-sizes 1,8,32 --json
"""


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def register_bench(bsub: argparse._SubParsersAction) -> None:
    from model.config import ModelConfig

    p = bsub.add_parser("model", help="MedM2T stays/s by batch size and per-event latency, incremental vs full",
                        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=ModelConfig.preset_names(), default="small",
                   help="model size when no checkpoint is given (default small)")
    p.add_argument("--checkpoint", type=Path, metavar="DIR", help="benchmark this trained checkpoint instead")
    p.add_argument("--stays", type=int, default=64, help="synthetic stays to generate (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=(1, 8, 32, 128), metavar="LIST",
                   help="comma-separated batch sizes (default 1,8,32,128)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice, capped to the cores the 1-min load average "
                        "leaves idle, since oversubscribed cores slow torch down many times over)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per batch size (default 5)")
    p.add_argument("--updates", type=int, default=200, help="single-event updates timed for latency (default 200)")
    p.add_argument("--seed", type=int, default=0, help="cohort and weight seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError

    for name in ("stays", "repeats", "updates"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise UserError(f"--checkpoint {args.checkpoint} is not a folder")

    from model.bench import BenchOptions, format_report, run_benchmark
    from model.checkpoint import CheckpointError

    opts = BenchOptions(preset=args.preset, checkpoint=args.checkpoint, stays=args.stays, device=args.device,
                        batch_sizes=args.batch_sizes, threads=args.threads, repeats=args.repeats,
                        updates=args.updates, seed=args.seed, progress=not args.no_progress)
    try:
        result = run_benchmark(opts)
    except CheckpointError as exc:
        raise UserError(str(exc)) from exc
    except ValueError as exc:  # unknown device, CUDA absent, bad option values
        raise UserError(str(exc)) from exc
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return 0
