"""MIMIC-IV 2.2 reader (`hosp/` + `icu/`, each table `.csv` or `.csv.gz`), optionally with MIMIC-IV-ECG.

Cohort = icu/icustays. Measurements = catalogue items (medm2t/items.py) from icu/chartevents (matched
by stay_id) and hosp/labevents (same subject, charttime inside [intime, outtime], same hadm_id where
the lab row has one). Memory stays bounded at full MIMIC size: the big tables are streamed in blocks and
filtered on item and cohort ids while reading (see `scan_filtered`); the kept rows are spilled to parquet
shards bucketed by subject, and stays are built one bucket at a time. Stays therefore come out grouped
by bucket, then in intime order; MIMIC shifts dates per patient, so no global order would be meaningful.

90-day CVD label (Outcome.cvd_90d), our documented choice for what the reference leaves open: the
admissions considered are the stay's own admission plus every admission of the same subject with
admittime in [intime, intime + 90 d]. An admission is CVD-positive when its primary diagnosis
(seq_num 1) is in the CHD / stroke / HF ICD sets, or it has a CABG/PCI procedure (counted as CHD).
With several, the earliest positive admission decides; within one admission the primary diagnosis
wins over a procedure. 'none' when no admission is positive; None when diagnoses_icd is absent.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np

from medm2t import items as catalogue
from medm2t.events import Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, _Event, make_event_id
from replay.csv_scan import ScanStats, find_table, scan_filtered
from replay.cvd_codes import cvd_type_of_diagnosis, is_cvd_procedure
from replay.values import resolve

SOURCE = "mimic-iv"
_TIME_FMT = "%Y-%m-%d %H:%M:%S"


class MimicLayoutError(ValueError):
    """The folder is not a MIMIC-IV layout (the CLI turns this into a one-line error)."""


class _Problems:
    """Counts dropped rows per (file, reason) and keeps the first example, so a warning names the row
    without flooding the list with one line per bad row."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.first: dict = {}

    def add(self, file: str, reason: str, example: str) -> None:
        key = (file, reason)
        self.counts[key] += 1
        self.first.setdefault(key, example)

    def messages(self) -> list[str]:
        return [f"{file}: {n} row(s) dropped, {reason} (first: {self.first[(file, reason)]})"
                for (file, reason), n in sorted(self.counts.items())]


class MimicReader:
    name = SOURCE
    dense_vitals = True

    def __init__(self, mimic_dir: Path, ecg_dir: Path | None = None, progress: bool = False,
                 stays_per_bucket: int = 2000) -> None:
        self.root = Path(mimic_dir)
        self.ecg_dir = Path(ecg_dir) if ecg_dir else None
        self.progress = progress
        self.stays_per_bucket = stays_per_bucket
        self.warnings: list[str] = []
        if not self.root.is_dir():
            raise MimicLayoutError(f"MIMIC-IV folder {self.root} does not exist")
        for sub in ("hosp", "icu"):
            if not (self.root / sub).is_dir():
                raise MimicLayoutError(f"{self.root / sub}: missing folder (expected MIMIC-IV hosp/ and icu/)")
        self.icustays_path = find_table(self.root / "icu", "icustays")
        if self.icustays_path is None:
            raise MimicLayoutError(f"{self.root / 'icu' / 'icustays.csv.gz'}: missing (the cohort table)")
        if self.ecg_dir is not None and not self.ecg_dir.is_dir():
            raise MimicLayoutError(f"MIMIC-IV-ECG folder {self.ecg_dir} does not exist")
        self.tables = {}
        for sub, name, role in (
            ("hosp", "patients", "gender and age will be missing"),
            ("hosp", "admissions", "admission type/location and hospital death will be missing"),
            ("icu", "chartevents", "no vital signs or chart-side labs will be read"),
            ("hosp", "labevents", "no laboratory results will be read"),
            ("hosp", "diagnoses_icd", "the 90-day CVD label will be missing"),
            ("hosp", "procedures_icd", "the CVD label will ignore CABG/PCI procedures"),
        ):
            path = find_table(self.root / sub, name)
            if path is None:
                self.warnings.append(f"{self.root / sub / (name + '.csv.gz')}: missing (nor .csv); {role}")
            self.tables[name] = path
        self._icustays = None

    # ---- cohort and per-stay static data ---------------------------------------------------------
    def _read_small(self, path: Path, columns: list[str]):
        import polars as pl

        try:
            return pl.read_csv(path, columns=columns, infer_schema_length=0, ignore_errors=True, truncate_ragged_lines=True)
        except pl.exceptions.ColumnNotFoundError as exc:
            raise MimicLayoutError(f"{path}: missing column ({exc})") from None

    def icustays(self):
        """The cohort (one row per ICU stay) with typed columns; rows with unusable ids/times dropped with a warning."""
        import polars as pl

        if self._icustays is None:
            raw = self._read_small(self.icustays_path, ["subject_id", "hadm_id", "stay_id", "first_careunit", "intime", "outtime", "los"])
            df = raw.with_row_index("_row", offset=1).with_columns(
                pl.col("subject_id", "hadm_id", "stay_id").cast(pl.Int64, strict=False),
                pl.col("intime", "outtime").str.to_datetime(_TIME_FMT, strict=False),
                pl.col("los").cast(pl.Float64, strict=False),
            )
            bad = df.filter(pl.any_horizontal(pl.col("subject_id", "stay_id", "intime").is_null()))
            if bad.height:
                self.warnings.append(f"{self.icustays_path}: {bad.height} stay row(s) without usable subject_id/stay_id/intime "
                                     f"dropped (first: row {bad['_row'][0]})")
            df = df.filter(~pl.any_horizontal(pl.col("subject_id", "stay_id", "intime").is_null()))
            dup = df.filter(pl.col("stay_id").is_duplicated())
            if dup.height:
                self.warnings.append(f"{self.icustays_path}: duplicate stay_id rows dropped (first: row {dup['_row'][0]})")
                df = df.unique("stay_id", keep="first", maintain_order=True)
            self._icustays = df.with_columns(pl.col("outtime").fill_null(pl.col("intime")))
        return self._icustays

    def stay_ids(self) -> list[int]:
        return self.icustays()["stay_id"].to_list()

    def _static(self):
        """subject_id → (gender, anchor_age, anchor_year); hadm_id → admission row dict."""
        import polars as pl

        patients, admissions = {}, {}
        if self.tables["patients"]:
            p = self._read_small(self.tables["patients"], ["subject_id", "gender", "anchor_age", "anchor_year"])
            p = p.with_columns(pl.col("subject_id").cast(pl.Int64, strict=False),
                               pl.col("anchor_age", "anchor_year").cast(pl.Float64, strict=False))
            patients = {r[0]: r[1:] for r in p.iter_rows() if r[0] is not None}
        if self.tables["admissions"]:
            a = self._read_small(self.tables["admissions"], ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                                                             "admission_type", "admission_location", "hospital_expire_flag"])
            a = a.with_columns(pl.col("subject_id", "hadm_id").cast(pl.Int64, strict=False),
                               pl.col("admittime", "dischtime", "deathtime").str.to_datetime(_TIME_FMT, strict=False))
            admissions = {r["hadm_id"]: r for r in a.iter_rows(named=True) if r["hadm_id"] is not None}
        return patients, admissions

    def _cvd_by_admission(self, subjects: set[str]) -> dict[int, str] | None:
        """hadm_id → 'chd' | 'stroke' | 'hf' for CVD-positive admissions (primary diagnosis first)."""
        import polars as pl

        if not self.tables["diagnoses_icd"]:
            return None
        positive: dict[int, str] = {}
        for frame in scan_filtered(self.tables["diagnoses_icd"], ["hadm_id", "seq_num", "icd_code", "icd_version"],
                                   {"seq_num": {"1"}}, progress=self.progress):
            for hadm, code, version in frame.select(pl.col("hadm_id").cast(pl.Int64, strict=False), "icd_code",
                                                    pl.col("icd_version").cast(pl.Int64, strict=False)).iter_rows():
                kind = cvd_type_of_diagnosis((code or "").strip(), version) if hadm is not None else None
                if kind:
                    positive[hadm] = kind
        if self.tables["procedures_icd"]:
            for frame in scan_filtered(self.tables["procedures_icd"], ["subject_id", "hadm_id", "icd_code", "icd_version"],
                                       {"subject_id": subjects}, progress=self.progress):
                for hadm, code, version in frame.select(pl.col("hadm_id").cast(pl.Int64, strict=False), "icd_code",
                                                        pl.col("icd_version").cast(pl.Int64, strict=False)).iter_rows():
                    if hadm is not None and hadm not in positive and is_cvd_procedure((code or "").strip(), version):
                        positive[hadm] = "chd"
        return positive

    # ---- measurements: filtered scan, spilled per subject bucket --------------------------------------
    def _spill(self, tmp: Path, n_buckets: int, stays, problems: _Problems) -> None:
        import polars as pl

        stay_set = {str(s) for s in stays["stay_id"].to_list()}
        subject_set = {str(s) for s in stays["subject_id"].to_list()}
        specs = (
            ("chartevents", ["subject_id", "stay_id", "charttime", "storetime", "itemid", "value", "valuenum"],
             {"itemid": {str(i) for i in catalogue.CHART_TABLE_IDS}, "stay_id": stay_set}),
            ("labevents", ["labevent_id", "subject_id", "hadm_id", "itemid", "charttime", "storetime", "value",
                           "valuenum", "comments"],
             {"itemid": {str(i) for i in catalogue.LAB_TABLE_IDS}, "subject_id": subject_set}),
        )
        for table, columns, keep in specs:
            path = self.tables[table]
            if path is None:
                continue
            stats = ScanStats()
            try:
                for k, frame in enumerate(scan_filtered(path, columns, keep, stats, progress=self.progress)):
                    frame = frame.with_columns(pl.col("subject_id").cast(pl.Int64, strict=False))
                    frame = frame.with_columns((pl.col("subject_id") % n_buckets).alias("_bucket"))
                    frame.write_parquet(tmp / f"{table}-{k:06d}.parquet")
            except ValueError as exc:
                self.warnings.append(f"{exc}; table skipped")
                continue
            for line in stats.bad_rows:
                problems.add(str(path), "malformed CSV row (wrong number of fields)", f"line {line}")

    def _load_bucket(self, tmp: Path, table: str, bucket: int):
        import polars as pl

        files = sorted(tmp.glob(f"{table}-*.parquet"))
        if not files:
            return None
        return pl.scan_parquet(files).filter(pl.col("_bucket") == bucket).collect()

    # ---- events ------------------------------------------------------------------------------------
    def stays(self) -> Iterator[list[_Event]]:
        import polars as pl

        cohort = self.icustays()
        if cohort.height == 0:
            return
        patients, admissions = self._static()
        subjects = {str(s) for s in cohort["subject_id"].unique().to_list()}
        cvd = self._cvd_by_admission(subjects)
        admissions_by_subject: dict[int, list[dict]] = {}
        for adm in admissions.values():
            admissions_by_subject.setdefault(adm["subject_id"], []).append(adm)
        ecg_archive = self._ecg_archive()
        problems = _Problems()
        n_buckets = max(1, -(-cohort.height // self.stays_per_bucket))
        cohort = cohort.with_columns((pl.col("subject_id") % n_buckets).alias("_bucket"))
        tmp = Path(tempfile.mkdtemp(prefix="medm2t-mimic-"))
        try:
            self._spill(tmp, n_buckets, cohort, problems)
            for bucket in range(n_buckets):
                stays = cohort.filter(pl.col("_bucket") == bucket).sort("intime", "stay_id")
                chart = self._load_bucket(tmp, "chartevents", bucket)
                labs = self._load_bucket(tmp, "labevents", bucket)
                per_stay = self._measurements(stays, chart, labs, problems)
                for stay in stays.iter_rows(named=True):
                    events = [self._opened(stay, patients.get(stay["subject_id"]), admissions.get(stay["hadm_id"]))]
                    body = per_stay.get(stay["stay_id"], [])
                    if ecg_archive is not None:
                        body.extend(ecg_archive.events_for_stay(stay["stay_id"], stay["subject_id"], stay["intime"], stay["outtime"]))
                    body.sort(key=lambda e: (e.available_time, e.time, e.event_id))
                    events.extend(body)
                    events.append(self._closed(stay))
                    events.append(self._outcome(stay, admissions.get(stay["hadm_id"]),
                                                admissions_by_subject.get(stay["subject_id"], []), cvd))
                    yield events
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self.warnings.extend(problems.messages())

    def _ecg_archive(self):
        if self.ecg_dir is None:
            return None
        from replay.ecg import EcgArchive  # owned by the ECG reader; imported only when asked for

        return EcgArchive(self.ecg_dir, warn=self.warnings.append)

    def _opened(self, stay: dict, patient, admission) -> StayOpened:
        age = gender = None
        if patient:
            gender = patient[0] if patient[0] in ("F", "M") else None
            if patient[1] is not None:
                age = patient[1] + ((stay["intime"].year - patient[2]) if patient[2] is not None else 0)
        static = StaticFeatures(
            gender=gender, age=age,
            admission_type=admission["admission_type"] if admission else None,
            admission_location=admission["admission_location"] if admission else None,
            first_careunit=stay["first_careunit"],
        )
        return StayOpened(event_id=make_event_id(SOURCE, "icustays", stay["stay_id"], "open"), stay_id=stay["stay_id"],
                          subject_id=stay["subject_id"], time=stay["intime"], available_time=stay["intime"], source=SOURCE,
                          hadm_id=stay["hadm_id"], static=static)

    def _closed(self, stay: dict) -> StayClosed:
        return StayClosed(event_id=make_event_id(SOURCE, "icustays", stay["stay_id"], "close"), stay_id=stay["stay_id"],
                          subject_id=stay["subject_id"], time=stay["outtime"], available_time=stay["outtime"], source=SOURCE)

    def _outcome(self, stay: dict, admission, subject_admissions: list[dict], cvd) -> Outcome:
        known = max(stay["outtime"], admission["dischtime"]) if admission and admission["dischtime"] else stay["outtime"]
        flag = admission["hospital_expire_flag"] if admission else None
        return Outcome(
            event_id=make_event_id(SOURCE, "icustays", stay["stay_id"], "outcome"), stay_id=stay["stay_id"],
            subject_id=stay["subject_id"], time=known, available_time=known, source=SOURCE,
            hospital_death=None if flag not in ("0", "1") else flag == "1",
            deathtime=admission["deathtime"] if admission else None,
            icu_intime=stay["intime"], icu_outtime=stay["outtime"], los_days=stay["los"],
            cvd_90d=None if cvd is None else self._cvd_label(stay, subject_admissions, cvd),
        )

    @staticmethod
    def _cvd_label(stay: dict, subject_admissions: list[dict], cvd: dict[int, str]) -> str:
        start, end = stay["intime"], stay["intime"] + timedelta(days=90)
        window = [a for a in subject_admissions
                  if a["hadm_id"] == stay["hadm_id"] or (a["admittime"] is not None and start <= a["admittime"] <= end)]
        window.sort(key=lambda a: (a["hadm_id"] != stay["hadm_id"], a["admittime"] or start))
        for adm in window:
            if adm["hadm_id"] in cvd:
                return cvd[adm["hadm_id"]]
        return "none"

    def _measurements(self, stays, chart, labs, problems: _Problems) -> dict[int, list[Measurement]]:
        import polars as pl

        out: dict[int, list[Measurement]] = {}
        if chart is not None and chart.height:
            chart = chart.with_columns(pl.col("stay_id").cast(pl.Int64, strict=False), pl.lit(None, pl.Utf8).alias("comments"),
                                       pl.lit(None, pl.Utf8).alias("labevent_id"))
            self._rows(chart, "chartevents", str(self.tables["chartevents"]), out, problems)
        if labs is not None and labs.height:
            labs = labs.with_columns(pl.col("hadm_id").cast(pl.Int64, strict=False),
                                     pl.col("charttime").str.to_datetime(_TIME_FMT, strict=False).alias("_t"))
            window = stays.select(pl.col("stay_id"), pl.col("subject_id"), pl.col("hadm_id").alias("_stay_hadm"),
                                  "intime", "outtime")
            joined = labs.join(window, on="subject_id", how="inner").filter(
                (pl.col("_t") >= pl.col("intime")) & (pl.col("_t") <= pl.col("outtime"))
                & (pl.col("hadm_id").is_null() | (pl.col("hadm_id") == pl.col("_stay_hadm")))
            )
            self._rows(joined, "labevents", str(self.tables["labevents"]), out, problems)
        return out

    def _rows(self, df, table: str, file: str, out: dict, problems: _Problems) -> None:
        import polars as pl

        df = df.with_columns(
            pl.col("itemid").cast(pl.Int64, strict=False),
            pl.col("valuenum").cast(pl.Float64, strict=False),
            pl.col("charttime").str.to_datetime(_TIME_FMT, strict=False).alias("_time"),
            pl.col("storetime").str.to_datetime(_TIME_FMT, strict=False).alias("_avail"),
        )
        cols = ["_row", "stay_id", "subject_id", "itemid", "_time", "_avail", "value", "valuenum", "comments", "labevent_id"]
        for row, stay_id, subject_id, itemid, time, avail, value, valuenum, comment, labevent_id in df.select(cols).iter_rows():
            where = f"row {row}"
            item = catalogue.lookup(itemid) if itemid is not None else None
            if item is None or stay_id is None:
                problems.add(file, "unusable itemid/stay_id", where)
                continue
            if time is None:
                problems.add(file, "missing or unparsable charttime", where)
                continue
            if valuenum is not None and not np.isfinite(valuenum):
                valuenum = None
            number, category, problem = resolve(item, valuenum, value, comment)
            if problem:
                problems.add(file, problem, f"{where}, itemid {itemid}, value {value!r}")
                continue
            if number is not None:
                number = catalogue.convert(itemid, number)
                if item.kind == "numeric" and not item.is_valid(number):
                    problems.add(file, "physiologically impossible value", f"{where}, itemid {itemid}, value {number:g}")
                    continue
            # A result cannot be known before it was charted; storetime earlier than charttime is a clock artefact.
            available = max(avail, time) if avail is not None else time
            key = labevent_id if labevent_id is not None else f"{stay_id}|{itemid}|{time}|{value}|{valuenum}"
            out.setdefault(stay_id, []).append(Measurement(
                event_id=make_event_id(SOURCE, table, key), stay_id=stay_id, subject_id=subject_id, time=time,
                available_time=available, source=SOURCE, item=item.code, label=item.label, category=item.category,
                concept=item.concept, value=number, text=category, unit=item.unit, source_item=str(itemid),
            ))
