"""`medm2t evaluate`: metrics of a checkpoint on a data source."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """Prints per task: mortality (auroc, auprc_trapezoid = sklearn auc(recall, precision) as in the
paper, average_precision, brier, ece with 10 equal-width bins, n, positives), los_remaining and
los_total (mae, mse in days), cvd_90d (one-vs-rest per class and macro). Top-level entries are judged
at the end of each stay's available data; `landmarks` repeats them at 6/12/24/48 h where reached.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a data source", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT_DIR")
    p.add_argument("--data", required=True, metavar="SPEC", help="e.g. physionet2012:set-c.tar.gz:Outcomes-c.txt")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary table")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the .medm2t/cache data cache")
    p.set_defaults(handler=run)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError

    if not args.checkpoint.is_dir():
        raise UserError(f"checkpoint folder {args.checkpoint} does not exist")
    from model.checkpoint import CheckpointError
    from model.data import DataSpecError
    from model.evaluate import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.checkpoint, args.data, args.device, not args.no_cache, progress=not args.json)
    except (CheckpointError, DataSpecError) as exc:
        raise UserError(str(exc)) from exc
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    rows = [("end", result)] + list(result.get("landmarks", {}).items())
    print(f"{'at':>5} {'task':<14} {'n':>6} {'auroc':>7} {'auprc':>7} {'AP':>7} {'brier':>7} {'ece':>7} {'mae':>7}")
    for at, m in rows:
        mo, lo = m["mortality"], m["los_remaining"]
        print(f"{at:>5} {'mortality':<14} {mo['n']:>6} {_fmt(mo['auroc']):>7} {_fmt(mo['auprc_trapezoid']):>7} "
              f"{_fmt(mo['average_precision']):>7} {_fmt(mo['brier']):>7} {_fmt(mo['ece']):>7}")
        print(f"{at:>5} {'los_remaining':<14} {lo['n']:>6} {'':>39} {_fmt(lo['mae']):>7}")
    return 0
