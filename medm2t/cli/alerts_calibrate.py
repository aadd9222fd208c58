"""`medm2t alerts calibrate`: tune MedM2T's alert thresholds and refractory period to an alert budget."""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from medm2t.vocabulary import MEDM2T, MORTALITY, NEWS2

HELP = """Replay a validation source offline through the worker's own pipeline and alert engine, and pick the
MedM2T mortality thresholds and refractory period a ward can carry: within --budget alerts per patient-day,
flagging at least --target of the deaths at least 2 h ahead, with the fewest stays alerted (ties: higher PPV,
then fewer alerts). When no candidate reaches the target within the budget, it takes the one that flags the
most deaths, and says so. It prints the trade-off curve (deaths flagged against stays alerted and alerts per
patient-day) and stores it in the policy. The figures are those of the live Quality page and `medm2t report`
(docs/alert-quality.md), over the source's stays and outcomes.

It writes the tuned policy next to the checkpoint (alert-policy.json, unless --out), where the worker finds
it whenever MedM2T runs from that checkpoint (MEDM2T_ALERT_POLICY names another file). Use a validation
source, not the stays you will report on: a threshold tuned on its own test set overstates its quality.

examples:
  medm2t synth --stays 100 --seed 21 --out .medm2t/val
  medm2t alerts calibrate --data synth:.medm2t/val --budget 1.2
  medm2t alerts calibrate --data physionet2012:../shared/data/physionet2012/set-a --budget 1.2 --checkpoint CK
"""


def register_calibrate(acts: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings
    from replay.sources import SPEC_HELP

    s = help_settings()
    p = acts.add_parser("calibrate", help="tune MedM2T alert thresholds to an alert budget on a validation source",
                        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="SPEC", help=f"validation source: {SPEC_HELP}")
    p.add_argument("--budget", required=True, type=float, metavar="ALERTS_PER_PATIENT_DAY",
                   help="most MedM2T alerts raised per ICU patient-day, e.g. 1.2")
    p.add_argument("--target", type=float, default=0.8, metavar="SHARE",
                   help="share of deaths to flag at least 2 h ahead, 0-1 (default 0.8)")
    p.add_argument("--checkpoint", type=Path, default=s.checkpoint,
                   help=f"MedM2T checkpoint to score with (default {s.checkpoint})")
    p.add_argument("--out", type=Path, default=None, help="where to write the policy (default CHECKPOINT/alert-policy.json)")
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="leave out the first N stays of the source (e.g. those a replay with --limit N reports on)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N stays (after --skip)")
    p.add_argument("--json", action="store_true", help="print the chosen figures as JSON instead of a table")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.settings import get_settings, with_overrides
    from replay.sources import SourceError, parse_spec
    from stream.alert_tuning import choose, evaluate, search, tradeoff, with_rule
    from stream.policy import POLICY_FILE, PolicyError, dumps, load_policy
    from tqdm import tqdm

    _check(args)
    settings = with_overrides(get_settings(), checkpoint=args.checkpoint)
    try:
        base = load_policy(settings, [NEWS2, MEDM2T])
        reader = parse_spec(args.data, progress=sys.stderr.isatty())
    except (PolicyError, SourceError) as exc:
        raise UserError(str(exc)) from None
    scorers = _scorers(args.checkpoint, settings)
    scores, outcomes = _scored(args, reader, scorers)
    deaths = sum(bool(o.hospital_death) for o in outcomes)
    candidates = search(base, MEDM2T, MORTALITY, scores, outcomes,
                        progress=lambda grid: tqdm(grid, desc="candidates", unit="policy", file=sys.stderr,
                                                   disable=not sys.stderr.isatty()))
    if not candidates:
        raise UserError(f"MedM2T gave no mortality probability on {args.data}: nothing to tune")
    choice = choose(candidates, args.budget, args.target)
    if choice is None:
        lowest = min(candidates, key=lambda c: c.quality.alerts_per_patient_day or 0.0)
        raise UserError(f"no candidate meets {args.budget:g} alerts per patient-day: the fewest was "
                        f"{lowest.quality.alerts_per_patient_day:.2f} (urgent at {lowest.urgent:.3f}, refractory "
                        f"{lowest.refractory_min:g} min); nothing written")
    best, curve = choice.candidate, tradeoff(candidates)
    if not choice.reached:
        print(f"warning: no candidate flags {args.target:.0%} of the deaths >= 2 h ahead within {args.budget:g} "
              f"alerts per patient-day; chose the one that flags the most ({best.flagged():.0%})", file=sys.stderr)
    tuned_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tuned = with_rule(base, MEDM2T, MORTALITY, best.urgent, best.emergency, best.refractory_min).model_copy(
        update={"name": f"calibrated on {len(outcomes)} {args.data.split(':', 1)[0]} validation stays for at most "
                        f"{args.budget:g} alerts per patient-day and {args.target:.0%} of deaths flagged 2 h ahead",
                "tuned": {"data": args.data, "stays": len(outcomes), "deaths": deaths, "budget": args.budget,
                          "target": args.target, "target_reached": choice.reached, "tradeoff": curve,
                          "checkpoint": scorers[1].version, "candidates": len(candidates), "at": tuned_at,
                          "urgent": best.urgent, "emergency": best.emergency, "refractory_min": best.refractory_min,
                          "figures": asdict(best.quality)}})
    out = args.out or args.checkpoint / POLICY_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps(tuned) + "\n")
    rows = {"MedM2T, current policy": evaluate(base, MEDM2T, scores, outcomes),
            "MedM2T, calibrated": best.quality, "NEWS2 (RCP 2017)": evaluate(base, NEWS2, scores, outcomes)}
    _report(args, out, best, choice.reached, curve, rows, len(candidates))
    return 0


def _check(args: argparse.Namespace) -> None:
    from medm2t.cli import UserError

    if not args.budget > 0:
        raise UserError("--budget must be a positive number of alerts per patient-day")
    if not 0 < args.target <= 1:
        raise UserError("--target must be a share of deaths between 0 and 1, e.g. 0.8")
    if args.skip < 0:
        raise UserError("--skip must be 0 or more stays")
    if not (args.checkpoint / "meta.json").exists():
        raise UserError(f"no MedM2T checkpoint at {args.checkpoint} (run `make demo` once, or pass --checkpoint)")


def _scored(args: argparse.Namespace, reader, scorers) -> tuple[dict, list]:
    """The validation stays scored offline by NEWS2 and MedM2T, and their outcomes."""
    from medm2t.cli import UserError
    from replay.engine import select_stays
    from stream.offline import backlog, scores_by_stay

    print(f"reading {args.data} ...", file=sys.stderr)
    stays = itertools.islice(select_stays(reader.stays(), None, None), args.skip, None)  # as replay counts them
    messages, outcomes = backlog(select_stays(stays, None, args.limit), partitions=6)
    if not outcomes:
        raise UserError(f"{args.data} has no outcomes: alert quality cannot be measured without them")
    print(f"scoring {len(outcomes)} stays ({len(messages):,} events) offline with NEWS2 and MedM2T "
          f"{scorers[1].version} ...", file=sys.stderr)
    scores = scores_by_stay(scorers, messages, partitions=6)
    if not any(o.hospital_death for o in outcomes):
        print("warning: no deaths among these stays: every candidate flags 0 of 0, so the fewest alerts wins",
              file=sys.stderr)
    return scores, outcomes


def _report(args: argparse.Namespace, out: Path, best, reached: bool, curve: list, rows: dict, n_candidates: int):
    from medm2t.cli.report import figures_table

    if args.json:
        print(json.dumps({"policy": str(out), "urgent": best.urgent, "emergency": best.emergency,
                          "refractory_min": best.refractory_min, "target_reached": reached, "tradeoff": curve,
                          "figures": {name: asdict(q) for name, q in rows.items()}}, indent=2))
        return
    print(figures_table({name: asdict(q) for name, q in rows.items()}, column=24))
    print("\ntrade-off (lightest policy per share of deaths flagged >= 2 h ahead):")
    print(f"  {'deaths flagged':>14}  {'stays alerted':>13}  {'alerts/pt-day':>13}  {'PPV':>5}  urgent at")
    for point in curve:
        ppv = "–" if point["ppv"] is None else f"{point['ppv']:.2f}"
        print(f"  {point['deaths_flagged_2h']:>14.0%}  {point['stays_alerted'] or 0:>13.0%}  "
              f"{point['alerts_per_patient_day'] or 0:>13.2f}  {ppv:>5}  {point['urgent']:.3f}")
    print(f"\nchose urgent at {best.urgent:.3f}, emergency at {best.emergency:.3f}, refractory "
          f"{best.refractory_min:g} min, out of {n_candidates} candidates; wrote {out}")


def _scorers(checkpoint: Path, settings):
    from datetime import timedelta

    from stream.scorers.medm2t import MedM2TScorer
    from stream.scorers.news2 import News2Scorer

    # NEWS2 runs too: MedM2T also scores where the NEWS2 band changes, as in the worker
    return [News2Scorer(), MedM2TScorer.load(checkpoint, "auto", cadence=timedelta(minutes=settings.medm2t_cadence_min))]
