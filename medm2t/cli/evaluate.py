"""`medm2t evaluate`: metrics of a checkpoint on a data source."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from medm2t.vocabulary import LOS_REMAINING, MORTALITY

EPILOG = """Prints per task: mortality (auroc, auprc_trapezoid = sklearn auc(recall, precision) as in the
paper, average_precision, brier, ece with 10 equal-width bins, n, positives), los_remaining and
los_total (mae, mse in days), cvd_90d (one-vs-rest per class and macro). Top-level entries are judged
at the end of each stay's available data; `landmarks` repeats them at 6/12/24/48 h where reached.
Mortality also gets a reliability table per landmark (10 equal-width bins: count, mean predicted,
observed rate); --reliability-png draws it. Probabilities are calibrated with the checkpoint's own
calibration (see `medm2t calibrate`) unless --uncalibrated is given.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a data source", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT_DIR")
    p.add_argument("--data", required=True, metavar="SPEC", help="e.g. physionet2012:set-c.tar.gz:Outcomes-c.txt")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary table")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the .medm2t/cache data cache")
    p.add_argument("--uncalibrated", action="store_true", help="ignore the checkpoint's calibration (compare with it)")
    p.add_argument("--reliability-png", type=Path, metavar="PATH", help="write the mortality reliability diagram here")
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
        result = evaluate_checkpoint(args.checkpoint, args.data, args.device, not args.no_cache,
                                     progress=not args.json, calibrated=not args.uncalibrated)
    except (CheckpointError, DataSpecError) as exc:
        raise UserError(str(exc)) from exc
    if args.reliability_png:
        write_reliability_png(result, args.reliability_png)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    rows = [("end", result)] + list(result.get("landmarks", {}).items())
    print(f"{result['stays_scored']} of {result['data']['stays']} stays scored at the end of their data "
          f"({result['stays_static_only']} on static inputs only: no measurement or ECG)")
    print(f"{'at':>5} {'task':<14} {'n':>6} {'auroc':>7} {'auprc':>7} {'AP':>7} {'brier':>7} {'ece':>7} {'mae':>7}")
    for at, m in rows:
        mo, lo = m[MORTALITY], m[LOS_REMAINING]
        print(f"{at:>5} {'mortality':<14} {mo['n']:>6} {_fmt(mo['auroc']):>7} {_fmt(mo['auprc_trapezoid']):>7} "
              f"{_fmt(mo['average_precision']):>7} {_fmt(mo['brier']):>7} {_fmt(mo['ece']):>7}")
        print(f"{at:>5} {'los_remaining':<14} {lo['n']:>6} {'':>39} {_fmt(lo['mae']):>7}")
    cal = result["calibration"]
    print(f"\nmortality reliability ({'calibration fitted on ' + cal['data'] if cal else 'uncalibrated'}): "
          "observed rate / mean predicted (count) per bin of predicted probability")
    print(f"{'bin':>9} " + " ".join(f"{at:>20}" for at, _ in rows))
    for b in range(10):
        cells = []
        for _, m in rows:
            r = next((r for r in m[MORTALITY]["reliability"] if round(r["low"] * 10) == b), None)
            cells.append(f"{r['observed']:.3f}/{r['mean_predicted']:.3f} ({r['n']})" if r else "-")
        print(f"{b / 10:.1f}-{(b + 1) / 10:.1f} " + " ".join(f"{c:>20}" for c in cells))
    if args.reliability_png:
        print(f"\nreliability diagram: {args.reliability_png}")
    return 0


def write_reliability_png(result: dict, path: Path) -> None:
    """Observed rate against mean predicted probability per bin, one line per landmark, points sized by count."""
    import matplotlib

    from model.calibration import short_data_name

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfect calibration")
    for at, m in [("end of data", result), *result.get("landmarks", {}).items()]:
        rel, mo = m[MORTALITY]["reliability"], m[MORTALITY]
        if rel:
            ax.plot([r["mean_predicted"] for r in rel], [r["observed"] for r in rel], marker="o", markersize=4,
                    label=f"{at} (n={mo['n']}, ECE {_fmt(mo['ece'])})")
    cal = result.get("calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted mortality probability", ylabel="observed mortality rate",
           title=f"{result['checkpoint']['model_version']}\n{'calibration fitted on ' + cal['data'] if cal else 'uncalibrated'}"
                 f", data {short_data_name(result['data']['spec'])}")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
