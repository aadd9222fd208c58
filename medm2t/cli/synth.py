"""`medm2t synth`: write a synthetic ICU cohort in the MIMIC-IV 2.2 and MIMIC-IV-ECG 1.0 file layouts."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = """Generate a synthetic ICU cohort that the MIMIC-IV and MIMIC-IV-ECG readers load exactly like the real
databases:

  DIR/mimic-iv/hosp/{patients,admissions,diagnoses_icd,procedures_icd,labevents,d_labitems}.csv.gz
  DIR/mimic-iv/icu/{icustays,chartevents,d_items}.csv.gz
  DIR/mimic-iv-ecg/{record_list.csv,machine_measurements.csv,files/pNNNN/pSUBJECT/sSTUDY/STUDY.{hea,dat}}

Each stay follows a latent course (stable, deteriorating or recovering) that drives hourly vitals, lab
panels every 4-24 h and 0-4 twelve-lead ECGs (500 Hz, 10 s). In-hospital mortality is about 10 %, mean ICU
stay about 4 days, and about 25 % of admissions have a CHD, stroke or heart-failure primary diagnosis.
The same --seed always writes byte-identical files.

example:  medm2t synth --stays 200 --seed 0 --out data
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic cohort in MIMIC-IV + MIMIC-IV-ECG layout",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=200, help="number of ICU stays (one per patient; default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; existing cohort files are overwritten)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="every stay's course, ICU stay and hospital stay after it run F times as long; "
                        "the demo uses 0.2 so that outcomes arrive within minutes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from replay.synth import generate

    if args.stays < 1:
        raise UserError("--stays must be at least 1")
    if args.seed < 0:
        raise UserError("--seed must be a non-negative integer")
    if not 0.01 <= args.time_scale <= 10:
        raise UserError("--time-scale must be between 0.01 and 10")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    try:
        summary = generate(args.stays, args.seed, args.out, progress=not args.no_progress,
                           time_scale=args.time_scale)
    except OSError as exc:
        raise UserError(f"cannot write the cohort under {args.out}: {exc}") from exc
    cvd = ", ".join(f"{k} {v}" for k, v in summary.cvd.items())
    print(f"wrote {summary.stays} stays to {args.out}: {summary.deaths} in-hospital deaths "
          f"({100 * summary.deaths / summary.stays:.1f} %), mean ICU LOS {summary.mean_los_days:.2f} d, "
          f"CVD classes {cvd}; {summary.ecgs} ECGs in {summary.stays_with_ecg} stays; "
          f"{summary.rows['icu/chartevents']} chartevents and {summary.rows['hosp/labevents']} labevents rows")
    print(f"replay it with: medm2t replay --mimic {args.out / 'mimic-iv'} --ecg {args.out / 'mimic-iv-ecg'}")
    return 0
