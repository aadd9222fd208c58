"""Modal adult reference range of every catalogue lab, per sex, read from MIMIC-IV's own lab records.

    python tools/lab_reference_ranges.py [LABEVENTS [PATIENTS]]
    python tools/lab_reference_ranges.py ../shared/data/mimic-iv-demo-2.2/hosp/labevents.csv.gz

Each hosp/labevents row carries the laboratory's reference range for that result (`ref_range_lower`,
`ref_range_upper`), and hosp/patients gives the subject's sex (`gender`, F/M; PATIENTS defaults to
patients.csv.gz beside LABEVENTS). Rows are mapped onto catalogue lab codes with `medm2t.items.lookup()` (so
merged source ids count toward their representative), and per numeric lab the most common (lower, upper)
pair among rows that give one is found for women's rows, for men's rows and for all rows (ties go to the
pair seen first). Where the women's and men's modal pairs differ (haemoglobin, haematocrit, red cells, ...)
the lab is sex-specific and the catalogue holds both, {"F": (lower, upper), "M": (lower, upper)}; otherwise
it holds the modal pair of all rows. A lab no row gives a range for is printed as a comment and keeps no
range; categorical labs are not read (no numeric range). The output is the REFERENCE_RANGES table in
medm2t/items.py, ready to paste; tests/medm2t/test_lab_reference_ranges.py checks they agree.
"""
from __future__ import annotations

import csv
import gzip
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medm2t import items  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "data" / "mimic-iv-demo-2.2" / "hosp" / "labevents.csv.gz"
SEXES = ("F", "M")

Pair = tuple[float | None, float | None]
Modal = tuple[Pair | None, int, int]  # (modal pair or None, rows with that pair, rows of the lab in that group)


def _bound(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _open(path: Path):
    if not path.exists() and path.suffix == ".gz" and path.with_suffix("").exists():
        path = path.with_suffix("")
    return (gzip.open if path.suffix == ".gz" else open)(path, "rt", newline="")


def _sexes(path: Path) -> dict[str, str]:
    """subject_id -> "F"/"M" from hosp/patients (other or empty values are left out: sex unknown)."""
    with _open(path) as fh:
        return {row["subject_id"]: row["gender"] for row in csv.DictReader(fh) if row["gender"] in SEXES}


def modal_ranges(path: Path = DEFAULT, patients: Path | None = None) -> dict[str, dict[str, Modal]]:
    """{code: {"all": modal, "F": modal, "M": modal}} for every numeric lab, each modal being (modal (lower,
    upper) or None, rows with that pair, rows of the lab); "all" counts rows of subjects of unknown sex too."""
    sex = _sexes(patients or path.parent / "patients.csv.gz")
    groups = ("all", *SEXES)
    pairs = {item.code: {g: Counter() for g in groups} for item in items.LABS if item.kind == "numeric"}
    rows = {code: Counter() for code in pairs}
    with _open(path) as fh:
        for row in csv.DictReader(fh):
            item = items.lookup(int(row["itemid"]))
            if item is None or item.code not in pairs:
                continue
            pair = (_bound(row["ref_range_lower"]), _bound(row["ref_range_upper"]))
            for group in ("all", sex.get(row["subject_id"])):
                if group is None:
                    continue
                rows[item.code][group] += 1
                if pair != (None, None):
                    pairs[item.code][group][pair] += 1
    out = {}
    for code, counters in pairs.items():
        out[code] = {}
        for group, counter in counters.items():
            (pair, n), = counter.most_common(1) or [(None, 0)]
            out[code][group] = (pair, n, rows[code][group])
    return out


def catalogue(modal: dict[str, dict[str, Modal]]) -> dict[str, Pair | dict[str, Pair]]:
    """The REFERENCE_RANGES table: per lab with a range, {"F": pair, "M": pair} where women's and men's modal
    pairs are both known and differ, else the modal pair of all rows."""
    out: dict[str, Pair | dict[str, Pair]] = {}
    for code, groups in modal.items():
        female, male = groups["F"][0], groups["M"][0]
        if female is not None and male is not None and female != male:
            out[code] = {"F": female, "M": male}
        elif groups["all"][0] is not None:
            out[code] = groups["all"][0]
    return out


def _pair(pair: Pair) -> str:
    return "(" + ", ".join("None" if b is None else f"{b:g}" for b in pair) + ")"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT
    modal = modal_ranges(path, Path(argv[1]) if len(argv) > 1 else None)
    table = catalogue(modal)
    print(f"# modal (lower, upper) per numeric catalogue lab in {path.name}, per sex where women's and men's "
          "differ; rows with it / rows of the lab")
    for code, groups in modal.items():
        label = items.ITEMS[code].label
        entry = table.get(code)
        if entry is None:
            total = groups["all"][2]
            why = f"no range in its {total} rows" if total else "not in this file"
            print(f"    # {code} {label}: {why}")
        elif isinstance(entry, dict):
            line = f'    "{code}": {{' + ", ".join(f'"{s}": {_pair(entry[s])}' for s in SEXES) + "},"
            counts = ", ".join(f"{s} {groups[s][1]}/{groups[s][2]}" for s in SEXES)
            print(f"{line:<47} # {label}: {counts} rows")
        else:
            line = f'    "{code}": {_pair(entry)},'
            print(f"{line:<27} # {label}: {groups['all'][1]}/{groups['all'][2]} rows")


if __name__ == "__main__":
    main(sys.argv[1:])
