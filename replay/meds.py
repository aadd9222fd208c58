"""MEDS reader: one parquet file, or a MEDS dataset folder (`data/**/*.parquet`, shards of subjects).

Columns: subject_id, time, code, and the value as `numeric_value` (MEDS) or `value` (the shared demo
export); `text_value` is used where present.

Stays. MEDS has no ICU stay table, so stays are derived from codes: an `ICU_ADMISSION//<unit>` event
opens a stay and the subject's next `ICU_DISCHARGE//...` closes it (the MIMIC-IV MEDS ETL writes both).
A subject with no ICU admission code becomes one pseudo-stay spanning its first to last timed event.
stay_id = subject_id * 1000 + the stay's ordinal within the subject (MEDS carries no stay id).

Measurements. `LAB//<itemid>//<unit>` codes whose itemid is in the catalogue map onto catalogue items
(with merges and conversions, like the MIMIC reader). To keep the volume sane, any other code passes
through as a generic lab measurement (item = the code) only if it carries a numeric or text value and
falls inside a stay; value-less codes (medication orders, transfers, diagnoses) are not measurements.

Static and outcomes: GENDER//F|M, MEDS_BIRTH (age at ICU admission), the last HOSPITAL_ADMISSION//type//
location before the stay, and the death. hospital_death comes from the first HOSPITAL_DISCHARGE//<location>
after the stay began (its admission's discharge; ICU out-times can run past it), as MIMIC-IV's
hospital_expire_flag does: `DIED` is a death in hospital, any other known location is not (a hospice
discharge is alive). Only where the location is missing or `UNK` does it fall back to MEDS_DEATH dated no
later than that discharge (MEDS_DEATH is the date of death from any source, often after discharge).
No CVD label (MEDS carries no primary-diagnosis flag).
"""
from __future__ import annotations

import bisect
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Iterator

from medm2t import items as catalogue
from medm2t.events import Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, _Event, make_event_id

SOURCE = "meds"
_STRUCTURAL = ("ICU_ADMISSION//", "ICU_DISCHARGE//", "HOSPITAL_ADMISSION//", "HOSPITAL_DISCHARGE//", "GENDER//",
               "MEDS_BIRTH", "MEDS_DEATH")


def _hospital_death(discharge: datetime | None, where: str | None,
                    death: datetime | None) -> tuple[bool | None, datetime | None]:
    """(died in hospital, when) from the discharge after the stay: its location where known, else the death date."""
    if discharge is None:
        return None, None
    if where and where.upper() not in ("UNK", "UNKNOWN"):
        return (True, discharge) if where.upper() == "DIED" else (False, None)
    died = bool(death and death.date() <= discharge.date())
    return died, death if died else None


class MedsReader:
    name = SOURCE
    dense_vitals = True

    def __init__(self, path: Path, progress: bool = False) -> None:
        self.path = Path(path)
        self.progress = progress
        self.warnings: list[str] = []
        if self.path.is_dir():
            root = self.path / "data" if (self.path / "data").is_dir() else self.path
            self.files = sorted(root.rglob("*.parquet"))
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise ValueError(f"MEDS path {self.path} does not exist")
        if not self.files:
            raise ValueError(f"{self.path}: no .parquet files (expected a MEDS file or a folder with data/*.parquet)")
        self._stays_cache: list[tuple[int, list]] | None = None

    def _frame(self, file: Path):
        """The shard with normalised columns: subject_id, time, code, numeric, text, and _row (position)."""
        import polars as pl

        try:
            schema = pl.read_parquet_schema(file)
        except Exception as exc:  # noqa: BLE001 - polars raises several error types for a broken file
            raise ValueError(f"{file}: not a readable parquet file ({exc})") from None
        missing = [c for c in ("subject_id", "time", "code") if c not in schema]
        value_col = "numeric_value" if "numeric_value" in schema else "value" if "value" in schema else None
        if missing or value_col is None:
            raise ValueError(f"{file}: missing MEDS column(s) {', '.join(missing or ['numeric_value'])}")
        cols = [pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(pl.Datetime("us")), pl.col("code").cast(pl.Utf8),
                pl.col(value_col).cast(pl.Float64).alias("numeric"),
                (pl.col("text_value").cast(pl.Utf8) if "text_value" in schema else pl.lit(None, pl.Utf8)).alias("text")]
        return pl.scan_parquet(file).with_row_index("_row").select("_row", *cols)

    def _subject_rows(self) -> Iterator[tuple[Path, int, list[tuple]]]:
        """(file, subject_id, rows sorted by time) for every subject, one shard in memory at a time."""
        import polars as pl
        from tqdm import tqdm

        for file in tqdm(self.files, desc="MEDS shards", file=sys.stderr, disable=not self.progress or len(self.files) < 2):
            frame = self._frame(file).collect()
            bad = frame.filter(pl.col("subject_id").is_null() | pl.col("code").is_null())
            if bad.height:
                self.warnings.append(f"{file}: {bad.height} row(s) without subject_id or code dropped (first: row {bad['_row'][0]})")
                frame = frame.filter(pl.col("subject_id").is_not_null() & pl.col("code").is_not_null())
            # Rows with neither a value nor a stay/static meaning never become events: drop them before Python sees them.
            frame = frame.filter(pl.col("numeric").is_not_null() | pl.col("text").is_not_null()
                                 | pl.col("code").str.starts_with("ICU_") | pl.col("code").str.starts_with("HOSPITAL_")
                                 | pl.col("code").str.starts_with("GENDER//") | pl.col("code").str.starts_with("MEDS_"))
            frame = frame.sort("subject_id", "time", "_row", nulls_last=False)
            for part in frame.partition_by("subject_id", maintain_order=True):
                yield file, part["subject_id"][0], part.select("_row", "time", "code", "numeric", "text").rows()

    @staticmethod
    def _derive_stays(rows: list[tuple]) -> list[tuple[datetime, datetime | None, str | None]]:
        stays, open_at, unit = [], None, None
        for _, time, code, _, _ in rows:
            if time is None:
                continue
            if code.startswith("ICU_ADMISSION//") and open_at is None:
                open_at, unit = time, code.split("//", 1)[1]
            elif code.startswith("ICU_DISCHARGE//") and open_at is not None:
                stays.append((open_at, time, unit))
                open_at = None
        if open_at is not None:
            stays.append((open_at, None, unit))
        if not stays:
            times = [r[1] for r in rows if r[1] is not None]
            if times:
                stays.append((times[0], times[-1], None))
        return stays

    def stay_ids(self) -> list[int]:
        return [sid for sid, _ in self._all_stays()]

    def _all_stays(self):
        if self._stays_cache is None:
            self._stays_cache = []
            for _, subject, rows in self._subject_rows():
                for k, stay in enumerate(self._derive_stays(rows), start=1):
                    self._stays_cache.append((subject * 1000 + k, stay))
        return self._stays_cache

    def stays(self) -> Iterator[list[_Event]]:
        counts: Counter = Counter()
        first: dict[str, str] = {}
        try:
            for file, subject, rows in self._subject_rows():
                yield from self._subject_stays(file, subject, rows, counts, first)
        finally:
            for reason, n in sorted(counts.items()):
                self.warnings.append(f"{self.path}: {n} row(s) dropped, {reason} (first: {first[reason]})")

    def _subject_stays(self, file, subject, rows, counts, first) -> Iterator[list[_Event]]:
        def drop(reason: str, where: str) -> None:
            counts[reason] += 1
            first.setdefault(reason, where)

        gender = birth = death = None
        admissions, discharges = [], []
        for _, time, code, _, _ in rows:
            if code.startswith("GENDER//"):
                gender = code.split("//", 1)[1][:1].upper() or None
            elif code == "MEDS_BIRTH":
                birth = time
            elif code == "MEDS_DEATH":
                death = time
            elif code.startswith("HOSPITAL_ADMISSION//") and time is not None:
                parts = code.split("//")
                admissions.append((time, parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None))
            elif code.startswith("HOSPITAL_DISCHARGE//") and time is not None:
                discharges.append((time, code.split("//")[1] if code.count("//") else None))
        timed = [r for r in rows if r[1] is not None]
        times = [r[1] for r in timed]
        for k, (start, end, unit) in enumerate(self._derive_stays(rows), start=1):
            stay_id = subject * 1000 + k
            stop = end or (times[-1] if times else start)
            adm = next((a for a in reversed(admissions) if a[0] <= start), None)
            age = (start - birth).days / 365.25 if birth else None
            opened = StayOpened(
                event_id=make_event_id(SOURCE, subject, start, "open"), stay_id=stay_id, subject_id=subject, time=start,
                available_time=start, source=SOURCE,
                static=StaticFeatures(gender=gender if gender in ("F", "M") else None, age=age,
                                      admission_type=adm[1] if adm else None, admission_location=adm[2] if adm else None,
                                      first_careunit=unit),
            )
            body = []
            for row, time, code, numeric, text in timed[bisect.bisect_left(times, start):bisect.bisect_right(times, stop)]:
                if code.startswith(_STRUCTURAL):
                    continue
                m = self._measurement(subject, stay_id, row, time, code, numeric, text, drop)
                if m is not None:
                    body.append(m)
            body.sort(key=lambda e: (e.available_time, e.time, e.event_id))
            closed = StayClosed(event_id=make_event_id(SOURCE, subject, start, "close"), stay_id=stay_id, subject_id=subject,
                                time=stop, available_time=stop, source=SOURCE)
            discharge, where = next(((d, w) for d, w in sorted(discharges) if d >= start), (None, None))
            in_hospital, deathtime = _hospital_death(discharge, where, death)
            known = max(stop, discharge) if discharge else stop
            outcome = Outcome(event_id=make_event_id(SOURCE, subject, start, "outcome"), stay_id=stay_id, subject_id=subject,
                              time=known, available_time=known, source=SOURCE, hospital_death=in_hospital,
                              deathtime=deathtime, icu_intime=start, icu_outtime=end,
                              los_days=(end - start).total_seconds() / 86400 if end else None)
            yield [opened, *body, closed, outcome]

    @staticmethod
    def _measurement(subject, stay_id, row, time, code, numeric, text, drop) -> Measurement | None:
        where = f"row {row} ({code})"
        item = None
        source_id = None
        if code.startswith("LAB//"):
            parts = code.split("//")
            if len(parts) > 1 and parts[1].isdigit():
                source_id = int(parts[1])
                item = catalogue.lookup(source_id)
        if numeric is not None and numeric != numeric:  # NaN
            numeric = None
        if numeric is None and not text:
            return None
        event_id = make_event_id(SOURCE, subject, row, code, time)
        if item is None:
            return Measurement(event_id=event_id, stay_id=stay_id, subject_id=subject, time=time, available_time=time,
                               source=SOURCE, item=code, label=code, category="lab", value=numeric, text=text or None,
                               source_item=code)
        from replay.values import resolve

        number, category, problem = resolve(item, numeric, text)
        if problem:
            drop(problem, where)
            return None
        if number is not None:
            number = catalogue.convert(source_id, number)
            if item.kind == "numeric" and not item.is_valid(number):
                drop("physiologically impossible value", f"{where} value {number:g}")
                return None
        return Measurement(event_id=event_id, stay_id=stay_id, subject_id=subject, time=time, available_time=time,
                           source=SOURCE, item=item.code, label=item.label, category=item.category, concept=item.concept,
                           value=number, text=category, unit=item.unit, source_item=str(source_id))
