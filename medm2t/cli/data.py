"""`medm2t data inspect`: read a source end to end and summarise what the replay would send."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from replay.sources import add_source_args

    p = sub.add_parser("data", help="inspect a data source (MIMIC-IV, MEDS, PhysioNet 2012)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    insp = dsub.add_parser(
        "inspect", help="read a source and count stays, subjects, events, ECGs, deaths and warnings",
        description="Read every stay of a source through the same reader the replay uses and print counts. "
                    "Warnings name the file (and row) of every problem met: missing tables, malformed rows, "
                    "unparsable or physiologically impossible values.",
    )
    add_source_args(insp)
    insp.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    insp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    insp.set_defaults(handler=_inspect)


def summarise(reader, progress: bool = False) -> dict:
    from collections import Counter

    from tqdm import tqdm

    kinds: Counter = Counter()
    subjects, stays, deaths = set(), 0, 0
    for events in tqdm(reader.stays(), desc="stays", unit=" stays", file=sys.stderr, disable=not progress, leave=False):
        stays += 1
        subjects.add(events[0].subject_id)
        for e in events:
            kinds[e.kind] += 1
            if e.kind == "outcome" and e.hospital_death:
                deaths += 1
    return {"source": reader.name, "stays": stays, "subjects": len(subjects), "events": dict(sorted(kinds.items())),
            "ecgs": kinds.get("ecg", 0), "deaths": deaths, "warnings": list(reader.warnings)}


def _inspect(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from replay.sources import open_source

    progress = not args.no_progress and sys.stderr.isatty()
    try:
        reader = open_source(args, progress=progress)
        summary = summarise(reader, progress=progress)
    except ValueError as exc:  # readers and source selection raise ValueError subclasses with a clear message
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"source    {summary['source']}")
    for key in ("stays", "subjects", "ecgs", "deaths"):
        print(f"{key:<9} {summary[key]:>12,}")
    print("events")
    for kind, n in summary["events"].items():
        print(f"  {kind:<12} {n:>10,}")
    print(f"warnings  {len(summary['warnings'])}")
    for w in summary["warnings"]:
        print(f"  - {w}")
    return 0
