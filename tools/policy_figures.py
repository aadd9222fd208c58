"""Alert figures of one or more MedM2T alert policies on held-out stays, beside NEWS2.

    python tools/policy_figures.py SPEC NAME=POLICY.json [NAME=POLICY.json ...] [--checkpoint CK]
                                   [--skip N] [--limit N]
    python tools/policy_figures.py synth:/tmp/held23 demo=model/checkpoints/demo/alert-policy.json

The source is scored offline through the worker's own pipeline on a private Redis (NEWS2 + the checkpoint's
MedM2T, default the demo's, hourly cadence), as `medm2t alerts calibrate` does, and each policy's alert
records come from the same alert engine, so the figures are those `medm2t report` prints after a recorded
replay (docs/alert-quality.md). --skip/--limit pick the stays as `alerts calibrate` does, so a policy tuned
on the first N stays (`--limit N`) is reported on the rest (`--skip N`). One JSON line per scorer and policy.
"""
import argparse
import itertools
import json
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from medm2t.settings import DEMO_CHECKPOINT
from medm2t.vocabulary import MEDM2T, NEWS2
from replay.engine import select_stays
from replay.sources import parse_spec
from stream.alert_tuning import evaluate
from stream.offline import backlog, scores_by_stay
from stream.policy import DEFAULT_POLICY, read_policy
from stream.scorers.medm2t import MedM2TScorer
from stream.scorers.news2 import News2Scorer

FIGURES = ("stays", "patient_days", "deaths", "alerts_per_patient_day", "stays_alerted", "beds_urgent",
           "deaths_flagged_2h", "ppv", "median_lead_hours")


def main(spec: str, named: list[str], checkpoint: Path, skip: int | None, limit: int | None) -> None:
    policies = {name: read_policy(Path(path)) for name, path in (a.split("=", 1) for a in named)}
    scorers = [News2Scorer(), MedM2TScorer.load(checkpoint, "auto", cadence=timedelta(minutes=60))]
    stays = itertools.islice(select_stays(parse_spec(spec).stays(), None, None), skip or 0, None)
    messages, outcomes = backlog(select_stays(stays, None, limit), partitions=6)
    scores = scores_by_stay(scorers, messages, partitions=6)
    rows = {f"MedM2T {name}": evaluate(policy, MEDM2T, scores, outcomes) for name, policy in policies.items()}
    rows["NEWS2"] = evaluate(DEFAULT_POLICY, NEWS2, scores, outcomes)
    for name, quality in rows.items():
        figures = {k: asdict(quality)[k] for k in FIGURES}
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="source SPEC, as `medm2t alerts calibrate --data` takes it")
    parser.add_argument("policies", nargs="+", metavar="NAME=POLICY.json", help="alert policies to compare")
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="MedM2T checkpoint (default: demo)")
    parser.add_argument("--skip", type=int, metavar="N", help="leave out the first N stays")
    parser.add_argument("--limit", type=int, metavar="N", help="use at most N stays (after --skip)")
    args = parser.parse_args()
    main(args.spec, args.policies, args.checkpoint, args.skip, args.limit)
