"""Source selection shared by every command that reads data: the --mimic/--ecg/--meds/--physionet2012
/--outcomes flags, and the `kind:PATH` specs the model commands take."""
from __future__ import annotations

import argparse
from pathlib import Path

from replay.source import Reader

SPEC_HELP = ("physionet2012:ARCHIVE[:OUTCOMES] | mimic:DIR[,ecg=DIR] | synth:DIR "
             "(= mimic:DIR/mimic-iv,ecg=DIR/mimic-iv-ecg) | meds:PATH")


class SourceError(ValueError):
    """No usable source was named, or several were (the CLI prints it as one line)."""


def add_source_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data source (exactly one of --mimic, --meds, --physionet2012)")
    g.add_argument("--mimic", type=Path, metavar="DIR", help="MIMIC-IV 2.2 folder with hosp/ and icu/ (CSV or CSV.gz)")
    g.add_argument("--ecg", type=Path, metavar="DIR", help="MIMIC-IV-ECG 1.0 folder matched to the --mimic stays")
    g.add_argument("--meds", type=Path, metavar="PATH", help="MEDS parquet file or dataset folder (data/*.parquet)")
    g.add_argument("--physionet2012", type=Path, metavar="PATH",
                   help="PhysioNet 2012 set: folder of RecordID.txt or set-x.tar.gz (Outcomes-x.txt found beside it)")
    g.add_argument("--outcomes", type=Path, metavar="FILE", help="PhysioNet 2012 outcomes file (overrides the one beside the set)")


def open_source(args: argparse.Namespace, progress: bool = False) -> Reader:
    chosen = [flag for flag in ("mimic", "meds", "physionet2012") if getattr(args, flag, None)]
    if not chosen:
        raise SourceError("no data source given: use one of --mimic DIR, --meds PATH, --physionet2012 PATH")
    if len(chosen) > 1:
        raise SourceError(f"conflicting data sources: {', '.join('--' + c for c in chosen)}; give exactly one")
    if getattr(args, "ecg", None) and chosen[0] != "mimic":
        raise SourceError("--ecg only goes with --mimic")
    if getattr(args, "outcomes", None) and chosen[0] != "physionet2012":
        raise SourceError("--outcomes only goes with --physionet2012")
    if chosen[0] == "mimic":
        from replay.mimic import MimicReader

        return MimicReader(args.mimic, ecg_dir=args.ecg, progress=progress)
    if chosen[0] == "meds":
        from replay.meds import MedsReader

        return MedsReader(args.meds, progress=progress)
    from replay.physionet2012 import PhysioNet2012Reader

    return PhysioNet2012Reader(args.physionet2012, outcomes=args.outcomes)


def source_class(spec: str) -> type[Reader]:
    """The reader class a `kind:PATH` spec opens, without opening it (for the class's properties)."""
    kind = spec.partition(":")[0]
    if kind == "physionet2012":
        from replay.physionet2012 import PhysioNet2012Reader

        return PhysioNet2012Reader
    if kind == "meds":
        from replay.meds import MedsReader

        return MedsReader
    if kind in ("mimic", "synth"):
        from replay.mimic import MimicReader

        return MimicReader
    raise SourceError(f"unknown source kind {kind!r} in {spec!r}: expected {SPEC_HELP}")


def parse_spec(spec: str, progress: bool = False) -> Reader:
    """A reader from a `kind:PATH` spec (see SPEC_HELP)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise SourceError(f"bad source spec {spec!r}: expected {SPEC_HELP}")
    ns = argparse.Namespace(mimic=None, ecg=None, meds=None, physionet2012=None, outcomes=None)
    if kind == "physionet2012":
        # A Windows drive letter aside, the last ':' separates an optional outcomes file.
        archive, _, outcomes = rest.partition(":")
        ns.physionet2012, ns.outcomes = Path(archive), Path(outcomes) if outcomes else None
    elif kind in ("mimic", "synth"):
        path, *options = rest.split(",")
        opts = {}
        for opt in options:
            key, eq, value = opt.partition("=")
            if key != "ecg" or not eq or not value:
                raise SourceError(f"bad option {opt!r} in {spec!r}: only ecg=DIR is known")
            opts[key] = Path(value)
        if kind == "synth":
            ns.mimic, ns.ecg = Path(path) / "mimic-iv", opts.get("ecg", Path(path) / "mimic-iv-ecg")
            if not ns.ecg.is_dir():
                ns.ecg = None
        else:
            ns.mimic, ns.ecg = Path(path), opts.get("ecg")
    elif kind == "meds":
        ns.meds = Path(rest)
    else:
        raise SourceError(f"unknown source kind {kind!r} in {spec!r}: expected {SPEC_HELP}")
    return open_source(ns, progress=progress)
