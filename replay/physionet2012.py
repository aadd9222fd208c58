"""PhysioNet/CinC Challenge 2012 reader: a folder of `RecordID.txt` files or a `set-x.tar.gz` (members
are read from the archive, never extracted), with `Outcomes-x.txt` found beside it.

Each record holds `Time,Parameter,Value` rows, times `HH:MM` since ICU admission, `-1` = missing.
Records carry no dates, so every stay is placed on one fixed, stated admission time, EPOCH
(2100-01-01 00:00), and stay_id = subject_id = RecordID. Age, Gender, Height and ICUType (at 00:00)
are static; Weight is both (its first 00:00 value is the static weight) and a time series.
Item codes are the challenge's own parameter names. FiO2 arrives as a fraction and is emitted in
percent so that concept 'fio2' means the same on every source. SaO2 is arterial, not pulse oximetry.
StayClosed is placed at the record's last observation (records cover the first 48 h only).
"""
from __future__ import annotations

import tarfile
from collections import Counter
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from medm2t.events import Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, _Event, make_event_id
from medm2t.items import CONCEPT_ITEMS

SOURCE = "physionet2012"
EPOCH = datetime(2100, 1, 1)
STATIC = ("RecordID", "Age", "Gender", "Height", "ICUType")
ICU_TYPES = {1: "Coronary Care Unit", 2: "Cardiac Surgery Recovery Unit", 3: "Medical ICU", 4: "Surgical ICU"}

# parameter → (unit, concept); category 'vital' for bedside parameters, 'lab' otherwise.
VITAL_PARAMETERS: dict[str, tuple[str | None, str | None]] = {
    "HR": ("bpm", "hr"), "SysABP": ("mmHg", "sbp"), "NISysABP": ("mmHg", "sbp"), "DiasABP": ("mmHg", "dbp"),
    "NIDiasABP": ("mmHg", "dbp"), "MAP": ("mmHg", "map"), "NIMAP": ("mmHg", "map"), "RespRate": ("insp/min", "rr"),
    "Temp": ("°C", "temp"), "FiO2": ("%", "fio2"), "GCS": (None, "gcs"), "MechVent": (None, None),
    "Urine": ("mL", None), "Weight": ("kg", None),
}
LAB_PARAMETERS: dict[str, str | None] = {
    "Albumin": "g/dL", "ALP": "IU/L", "ALT": "IU/L", "AST": "IU/L", "Bilirubin": "mg/dL", "BUN": "mg/dL",
    "Cholesterol": "mg/dL", "Creatinine": "mg/dL", "Glucose": "mg/dL", "HCO3": "mmol/L", "HCT": "%", "K": "mEq/L",
    "Lactate": "mmol/L", "Mg": "mmol/L", "Na": "mEq/L", "PaCO2": "mmHg", "PaO2": "mmHg", "pH": None,
    "Platelets": "cells/nL", "SaO2": "%", "TroponinI": "ug/L", "TroponinT": "ug/L", "WBC": "cells/nL",
}
_VALID = {"gcs": (3, 15), "pH": (6.0, 8.5), "PaO2": (0, 1000), "SaO2": (0, 100), "HCT": (0, 100), "Weight": (0, 500)}


_MEASUREMENT_FIELDS = set(Measurement.model_fields)


def _trusted_measurement(fields: dict) -> Measurement:
    """A Measurement from fields this module has already typed and checked, without pydantic validation.
    Model training reads ~1.7 M measurements per set; validating each costs ~10x this and dominated the
    read time. `fields` must hold every field of Measurement (tests compare with the validated model)."""
    m = object.__new__(Measurement)
    object.__setattr__(m, "__dict__", fields)
    object.__setattr__(m, "__pydantic_fields_set__", _MEASUREMENT_FIELDS)
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


def _measurement(record_id: int, lineno: int, t: datetime, parameter: str, value: float, unit: str,
                 concept: str | None, category: str) -> Measurement:
    """One checked line of a record (its values were validated above, so no second validation)."""
    return _trusted_measurement({
        "event_id": make_event_id(SOURCE, record_id, lineno), "stay_id": record_id, "subject_id": record_id,
        "time": t, "available_time": t, "source": SOURCE, "kind": "measurement", "item": parameter,
        "label": parameter, "category": category, "concept": concept, "value": value, "text": None,
        "unit": unit, "source_item": parameter,
    })


def _opened(record_id: int, static: dict[str, float], weight0: float | None) -> StayOpened:
    """The stay's opening, with the record's general descriptors (the first weight of the stay as its weight)."""
    gender = {0.0: "F", 1.0: "M"}.get(static.get("Gender"))
    height = static.get("Height")
    return StayOpened(
        event_id=make_event_id(SOURCE, record_id, "open"), stay_id=record_id, subject_id=record_id, time=EPOCH,
        available_time=EPOCH, source=SOURCE,
        static=StaticFeatures(gender=gender, age=static.get("Age"),
                              first_careunit=ICU_TYPES.get(int(static.get("ICUType", 0))),
                              height_cm=height if height and 50 <= height <= 250 else None, weight_kg=weight0),
    )


@lru_cache(maxsize=8192)
def _clock_time(clock: str) -> datetime:
    """'HH:MM' since admission → datetime on EPOCH (cached: a set repeats a few thousand clock values)."""
    hours, minutes = clock.split(":")
    return EPOCH + timedelta(hours=int(hours), minutes=int(minutes))


def _valid_range(parameter: str, concept: str | None) -> tuple[float, float]:
    if concept in CONCEPT_ITEMS and CONCEPT_ITEMS[concept].valid:
        return CONCEPT_ITEMS[concept].valid
    return _VALID.get(concept or parameter, (0.0, 1e6))


class PhysioNet2012Reader:
    name = SOURCE
    dense_vitals = False  # vitals about hourly: a 6-minute grid would be mostly carried-forward values

    def __init__(self, path: Path, outcomes: Path | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"PhysioNet 2012 set {self.path} does not exist")
        self.warnings: list[str] = []
        self.outcomes_path = Path(outcomes) if outcomes else self._outcomes_beside()
        if self.outcomes_path is None:
            self.warnings.append(f"{self.path}: no Outcomes-x.txt found beside it (pass --outcomes FILE); no outcomes")
        elif not self.outcomes_path.exists():
            raise ValueError(f"outcomes file {self.outcomes_path} does not exist")

    def _outcomes_beside(self) -> Path | None:
        stem = self.path.name.removesuffix(".tar.gz").removesuffix(".tgz")
        letter = stem.split("-")[-1] if "-" in stem else stem
        for candidate in (self.path.parent / f"Outcomes-{letter}.txt", self.path / f"Outcomes-{letter}.txt"):
            if candidate.is_file():
                return candidate
        return None

    # ---- records -----------------------------------------------------------------------------------
    def _records(self) -> Iterator[tuple[str, str]]:
        """(member name, text) of every RecordID.txt, in RecordID order for folders and archive order for tars."""
        if self.path.is_dir():
            for file in sorted(self.path.glob("*.txt"), key=lambda p: p.name):
                if file.stem.isdigit():
                    yield file.name, file.read_text(errors="replace")
            return
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    name = Path(member.name).name
                    if member.isfile() and name.endswith(".txt") and name[:-4].isdigit():
                        yield name, tar.extractfile(member).read().decode(errors="replace")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"{self.path}: not a readable tar archive ({exc})") from None

    def stay_ids(self) -> list[int]:
        if self.path.is_dir():
            return sorted(int(p.stem) for p in self.path.glob("*.txt") if p.stem.isdigit())
        with tarfile.open(self.path, "r:*") as tar:
            return [int(Path(n).name[:-4]) for n in tar.getnames()
                    if n.endswith(".txt") and Path(n).name[:-4].isdigit()]

    def _outcomes(self) -> dict[int, dict[str, float]]:
        if self.outcomes_path is None:
            return {}
        lines = self.outcomes_path.read_text().splitlines()
        header = [h.strip() for h in lines[0].split(",")] if lines else []
        out, bad = {}, []
        for lineno, line in enumerate(lines[1:], start=2):
            parts = line.split(",")
            try:
                row = {h: float(v) for h, v in zip(header, parts, strict=True)}
                out[int(row["RecordID"])] = row
            except (ValueError, KeyError):
                if line.strip():
                    bad.append(lineno)
        if bad:
            self.warnings.append(f"{self.outcomes_path}: {len(bad)} unparsable line(s) skipped (first: line {bad[0]})")
        return out

    def stays(self) -> Iterator[list[_Event]]:
        outcomes = self._outcomes()
        problems: Counter = Counter()
        first_problem: dict[str, str] = {}
        try:
            for name, text in self._records():
                events = self._stay(name, text, outcomes, problems, first_problem)
                if events:
                    yield events
        finally:
            for reason, n in sorted(problems.items()):
                self.warnings.append(f"{self.path}: {n} line(s) skipped, {reason} (first: {first_problem[reason]})")

    def _stay(self, name: str, text: str, outcomes: dict, problems: Counter, first: dict) -> list[_Event] | None:
        def problem(reason: str, where: str) -> None:
            problems[reason] += 1
            first.setdefault(reason, where)

        record_id = int(name[:-4])
        static: dict[str, float] = {}
        weight0 = None
        body: list[Measurement] = []
        last = EPOCH
        lines = text.splitlines()
        if not lines or not lines[0].startswith("Time"):
            problem("record without a Time,Parameter,Value header", name)
            return None
        for lineno, line in enumerate(lines[1:], start=2):
            parts = line.split(",")
            if len(parts) != 3 or not parts[1]:
                if line.strip():
                    problem("not Time,Parameter,Value", f"{name} line {lineno}")
                continue
            clock, parameter, raw = parts
            try:
                t = _clock_time(clock)
                value = float(raw)
            except ValueError:
                problem("unparsable time or value", f"{name} line {lineno}")
                continue
            if value == -1:
                continue
            if parameter in STATIC:
                static[parameter] = value
                continue
            if parameter in VITAL_PARAMETERS:
                unit, concept = VITAL_PARAMETERS[parameter]
                category = "vital"
            elif parameter in LAB_PARAMETERS:
                unit, concept, category = LAB_PARAMETERS[parameter], None, "lab"
            else:
                problem("unknown parameter", f"{name} line {lineno} ({parameter!r})")
                continue
            if parameter == "FiO2" and value <= 1.0:
                value *= 100.0
            lo, hi = _valid_range(parameter, concept)
            if not lo <= value <= hi:
                problem("physiologically impossible value", f"{name} line {lineno} ({parameter}={raw})")
                continue
            if parameter == "Weight" and t == EPOCH and weight0 is None:
                weight0 = value
            last = max(last, t)
            body.append(_measurement(record_id, lineno, t, parameter, value, unit, concept, category))
        body.sort(key=lambda e: (e.available_time, e.time, e.event_id))
        closed = StayClosed(event_id=make_event_id(SOURCE, record_id, "close"), stay_id=record_id, subject_id=record_id,
                            time=last, available_time=last, source=SOURCE)
        events: list[_Event] = [_opened(record_id, static, weight0), *body, closed]
        if record_id in outcomes:
            events.append(self._outcome(record_id, outcomes[record_id], last))
        return events

    @staticmethod
    def _outcome(record_id: int, row: dict[str, float], last: datetime) -> Outcome:
        los = row.get("Length_of_stay", -1)
        survival = row.get("Survival", -1)
        death = row.get("In-hospital_death")
        outtime = EPOCH + timedelta(days=los) if los is not None and los >= 0 else None
        known = max(last, outtime) if outtime else last
        return Outcome(
            event_id=make_event_id(SOURCE, record_id, "outcome"), stay_id=record_id, subject_id=record_id, time=known,
            available_time=known, source=SOURCE, hospital_death=None if death not in (0, 1) else death == 1,
            deathtime=EPOCH + timedelta(days=survival) if survival is not None and survival >= 0 else None,
            icu_intime=EPOCH, icu_outtime=outtime, los_days=los if los is not None and los >= 0 else None,
        )
