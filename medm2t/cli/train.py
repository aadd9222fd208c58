"""`medm2t train`: fit MedM2T on a data source and write a self-contained checkpoint folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from medm2t.vocabulary import MORTALITY
from model.config import MODALITIES

EPILOG = """Data specs: physionet2012:ARCHIVE[:OUTCOMES]  mimic:DIR[,ecg=DIR]  synth:DIR  meds:PATH

Stages: optional self-supervised pre-training of the lab and vital encoders (--ssl-epochs); optional
supervised pre-training of every modality encoder (on the stays that have it); the wide head (a
regularised linear model on static inputs and per-item lab/vital summaries, its L2 strength chosen on
validation data); then end-to-end fine-tuning from it with early stopping on the validation loss (--val,
else a subject-grouped 15 % split of --data), where "0 epochs" (the wide head alone) also competes.
The small preset then refits on training + validation stays (--no-refit to skip).
Every stay is sampled at random prediction times plus its end of data (landmark training).
With --folds K, K-fold cross-validation grouped by subject is reported first (pooled out-of-fold and
mean +/- SD), then the saved model is trained on all of --data.

Example (PhysioNet 2012, under 30 min on 2 CPU cores including reading the archives):
  medm2t train --preset small \\
    --data physionet2012:set-a.tar.gz:Outcomes-a.txt --val physionet2012:set-b.tar.gz:Outcomes-b.txt --out ck
"""





def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train MedM2T and write a checkpoint folder", epilog=EPILOG,
                       description="Train MedM2T on a data source (the mortality, ICU length-of-stay and 90-day\n"
                                   "CVD heads together) and write a self-contained checkpoint folder: weights,\n"
                                   "featurizer, config and a model card with the validation metrics.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="SPEC", help="training data source spec")
    p.add_argument("--val", metavar="SPEC", help="validation data for early stopping (default: split of --data)")
    p.add_argument("--out", required=True, type=Path, metavar="CKPT_DIR", help="checkpoint folder to write")
    p.add_argument("--preset", choices=("paper", "small"), default="small", help="model size (default small)")
    p.add_argument("--folds", type=int, default=1, help="K-fold cross-validation by subject before the final fit")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the data splits and the landmark sampling (default 0)")
    p.add_argument("--epochs", type=int, help="max fine-tuning epochs (preset default: small 6, paper 20)")
    p.add_argument("--pretrain-epochs", type=int,
                   help="pre-training epochs per modality encoder (preset default: small 0 = off, paper 5)")
    p.add_argument("--ssl-epochs", type=int, metavar="N",
                   help="self-supervised pre-training epochs of the lab and vital encoders before anything else: "
                        "hide some items of each sample and predict their values, on the inputs of the training "
                        "and validation stays, labels unread (default 0 = off)")
    p.add_argument("--time-encoding", type=int, metavar="K", dest="window_time_dim",
                   help="give the lab and vital encoders a learned K-dimensional encoding of how long ago each of "
                        "their time windows closed (mTAND-style sinusoids of log hours; default 0 = off)")
    p.add_argument("--batch-size", type=int, default=128, help="stays (landmark prefixes) per training step (default 128)")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (preset default: small 1e-3, paper 5e-5)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (preset default: small 0.05, paper 1e-4)")
    p.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs")
    p.add_argument("--landmarks", type=int, default=3, help="random prediction times per stay (plus end of data)")
    p.add_argument("--prefixes-per-epoch", type=int, metavar="K",
                   help="fine-tuning sees K of each stay's training prefixes per epoch, drawn afresh each epoch "
                        "(default: all of them, --landmarks + 1)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="after early stopping, refit the wide head and retrain on training + validation stays for "
                        "the best epoch count; the reported validation metrics are from before the refit "
                        "(preset default: small on, paper off)")
    p.add_argument("--freeze-wide", action=argparse.BooleanOptionalAction, default=None,
                   help="fine-tuning trains the deep part only, as a correction on top of the fitted wide head, "
                        "instead of moving both (default off)")
    p.add_argument("--modalities", metavar="M,M,...",
                   help=f"encoders to use, from {','.join(MODALITIES)} (default: every modality the training "
                        "data have; PhysioNet 2012 without dense vitals)")
    p.add_argument("--max-minutes", type=float,
                   help="fine-tuning wall-clock budget: no epoch is started that would overrun it "
                        "(preset default: small 20, paper none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from CKPT_DIR/train_state.pt")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the .medm2t/cache data cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError

    if args.folds < 1:
        raise UserError("--folds must be at least 1")
    modalities = None
    if args.modalities:
        modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown or not modalities:
            raise UserError(f"--modalities: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(MODALITIES)}")
    if args.window_time_dim is not None and not (args.window_time_dim == 0 or 2 <= args.window_time_dim <= 64):
        raise UserError("--time-encoding must be 0 (off) or from 2 to 64")
    if args.ssl_epochs is not None and args.ssl_epochs < 0:
        raise UserError("--ssl-epochs must be 0 or more")
    if args.prefixes_per_epoch is not None and args.prefixes_per_epoch < 1:
        raise UserError("--prefixes-per-epoch must be at least 1")
    if args.resume and not any(args.out.glob("train_state*.pt")):
        raise UserError(f"--resume: no train_state.pt in {args.out}")
    import torch

    from model.data import DataSpecError
    from model.train import run_training
    from model.train_options import TrainOptions

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    opts = TrainOptions(
        preset=args.preset, seed=args.seed, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
        ssl_epochs=args.ssl_epochs, window_time_dim=args.window_time_dim, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience, n_random=args.landmarks,
        prefixes_per_epoch=args.prefixes_per_epoch, freeze_wide=args.freeze_wide, refit=args.refit,
        device=device, use_cache=not args.no_cache, progress=not args.quiet, max_minutes=args.max_minutes,
        modalities=modalities,
    )
    try:
        result = run_training(args.data, args.out, opts, val_spec=args.val, folds=args.folds, resume=args.resume)
    except DataSpecError as exc:
        raise UserError(str(exc)) from exc
    val = {k: v for k, v in result["metrics"].get("validation", {}).get(MORTALITY, {}).items() if k != "reliability"}
    summary = {"checkpoint": str(args.out), "validation_mortality": val,
               "wall_seconds": result["train_info"]["wall_seconds"]}
    if "refit" in result["train_info"]:
        summary["note"] = ("validation metrics are from the model before it was refit on training + validation "
                           "stays; evaluate the checkpoint on data it never saw")
    print(json.dumps(summary, indent=2))
    return 0
