"""`medm2t calibrate`: fit a checkpoint's calibration on validation data and store it in the checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """Fits one temperature per task (mortality, cvd_90d) by minimising the log-loss on the data's stays
at the evaluation landmarks (6/12/24/48 h where reached, and the end of data), writes it into CKPT_DIR's
meta.json and model card, and gives the checkpoint a new model_version (suffix -cal<digest>). A
temperature that does not improve the log-likelihood significantly (likelihood-ratio test per stay, 5 %)
is recorded but not applied. Use data the model was not trained on; `medm2t train` already does this with
its validation stays. Temperature scaling keeps AUROC and AUPRC; it changes how far the probabilities can
be read as frequencies (ECE)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit and store a checkpoint's probability calibration", epilog=EPILOG,
                       description="Fit post-hoc calibration (temperature scaling) of a MedM2T checkpoint.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT_DIR", help="checkpoint folder (updated in place)")
    p.add_argument("--data", required=True, metavar="SPEC", help="validation data, e.g. synth:/tmp/synth-val")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the .medm2t/cache data cache")
    p.add_argument("--json", action="store_true", help="print the fitted calibration as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError

    if not args.checkpoint.is_dir():
        raise UserError(f"checkpoint folder {args.checkpoint} does not exist")
    from model.calibration import fit_calibration, short_data_name
    from model.checkpoint import CheckpointError, load_checkpoint, set_calibration
    from model.data import DataSpecError, load_cohort
    from model.evaluate import predict_cohort
    from model.inference import resolve_device

    try:
        device = resolve_device(args.device)
        model, featurizer, _, meta = load_checkpoint(args.checkpoint, device)
        cohort = load_cohort(args.data, not args.no_cache, not args.json)
    except (CheckpointError, DataSpecError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    pred = predict_cohort(model, featurizer, cohort, None, device, not args.no_cache, not args.json)
    calibration = fit_calibration(pred, short_data_name(cohort.spec))
    if not calibration.tasks:
        raise UserError(f"{args.data}: no task has both outcomes in these stays, so nothing can be calibrated")
    before = meta["model_version"]
    meta = set_calibration(args.checkpoint, calibration, featurizer)
    if args.json:
        print(json.dumps({"model_version": meta["model_version"], "previous_version": before,
                          "calibration": calibration.to_dict()}))
        return 0
    print(f"{args.checkpoint}: {before} -> {meta['model_version']}")
    for task, t in calibration.tasks.items():
        print(f"  {task:<10} fitted temperature {t.fitted_temperature:.3f} (p {t.p_value:.3f}), applied {t.temperature:.3f}"
              f" on {t.n:,} samples: ECE {t.ece_before:.4f} -> {t.ece_after:.4f}")
    return 0
