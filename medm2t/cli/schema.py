from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="export JSON Schemas of the event and output messages")
    ssub = p.add_subparsers(dest="schema_command", metavar="ACTION", required=True)
    exp = ssub.add_parser("export", help="write one JSON Schema per message type into DIR")
    exp.add_argument("dir", type=Path, help="output folder (created if missing)")
    exp.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from medm2t.schemas import export_schemas

    for path in export_schemas(args.dir):
        print(path)
    return 0
