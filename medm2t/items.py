"""The model's item catalogue: one home for which labs and vitals MedM2T reads, how source ids merge
onto a representative id, labels, units, categorical vs numeric, the bedside `concept` of vitals, and the
adult reference ranges of labs (REFERENCE_RANGES, from MIMIC-IV's own lab records).

Lab items (74, Tasks 2/3) and vital merges follow docs/medm2t-reference.md §2.2–2.3. Labels come from
the MIMIC-IV dictionaries (hosp/d_labitems, icu/d_items). Every reader maps its own ids through
`lookup()` so that downstream code sees one canonical item code per measured quantity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

# Ranges outside which a value is physiologically impossible (not merely abnormal). Such a row is
# dropped with a counted warning; abnormal-but-possible values are kept for the model's extreme bins.
_NONNEG = (0.0, 1e6)

Range = tuple[float | None, float | None]  # a reference range (lower, upper); either bound may be open (None)
Sex = Literal["F", "M"]                    # as medm2t.events.StaticFeatures.gender


@dataclass(frozen=True)
class Item:
    code: str                                  # representative id (MIMIC itemid as text)
    label: str
    category: Literal["lab", "vital"]
    kind: Literal["numeric", "categorical"]
    unit: str | None = None
    concept: str | None = None                 # hr, sbp, dbp, map, rr, spo2, fio2, temp, gcs_eye, ...
    valid: tuple[float, float] | None = _NONNEG
    merged: tuple[int, ...] = field(default=())  # source ids merged onto `code` (besides itself)
    normal: Range | None = None                # adult reference range, where it is the same for both sexes
    normal_by_sex: tuple[tuple[Sex, Range], ...] = field(default=())  # (("F", range), ("M", range)) where not

    def is_valid(self, value: float) -> bool:
        return self.valid is None or self.valid[0] <= value <= self.valid[1]

    @property
    def sex_specific(self) -> bool:
        """Whether the lab's reference range depends on the patient's sex (REFERENCE_RANGES holds one per sex)."""
        return bool(self.normal_by_sex)

    def reference_range(self, sex: Sex | None = None) -> Range | None:
        """The adult reference range that applies to a patient of this sex ("F", "M" or None for unknown).
        For a sex-specific lab and unknown sex: None, no range, rather than the other sex's (a wrong flag) or
        the union of both (it would hide e.g. a man's haemoglobin of 12 g/dL, low for him): not flagging
        is the safer failure, and the table still shows both ranges."""
        if not self.normal_by_sex:
            return self.normal
        return dict(self.normal_by_sex).get(sex) if sex is not None else None

    def flag(self, value: float | None, sex: Sex | None = None) -> Literal["L", "H"] | None:
        """The abnormal flag of a value for a patient of this sex: "L" below the reference range, "H" above it,
        None within it (bounds included, as MIMIC-IV flags its own results), where no range applies (no range,
        or a sex-specific lab and sex unknown, see reference_range()) or the value is None."""
        normal = self.reference_range(sex)
        if normal is None or value is None:
            return None
        low, high = normal
        return "L" if low is not None and value < low else "H" if high is not None and value > high else None


# Adult reference ranges (lower, upper) of numeric labs, in the item's unit: for each lab the most common
# (modal) `ref_range_lower`/`ref_range_upper` pair of its rows in the MIMIC-IV Clinical Database Demo v2.2
# (hosp/labevents, merged source ids counted toward their representative), with how many rows had it.
# Per sex (hosp/patients `gender`): where women's modal pair differs from men's, the lab is sex-specific and
# holds both, {"F": (lower, upper), "M": (lower, upper)}, with rows per sex; otherwise one pair, the modal
# of all rows. Where a range changed over the years it is still the most common one in those records. Labs
# the demo gives no range for have none. Regenerate (and paste) with
#     .venv/bin/python tools/lab_reference_ranges.py ../shared/data/mimic-iv-demo-2.2/hosp/labevents.csv.gz
# tests/medm2t/test_lab_reference_ranges.py checks this table against that output.
REFERENCE_RANGES: dict[str, Range | dict[Sex, Range]] = {
    # 50802 Base Excess: no range in its 889 rows
    "50808": (1.12, 1.32),  # Free Calcium: 509/509 rows
    "50809": (70, 105),     # Glucose (blood gas): 262/262 rows
    # 50810 Hematocrit, Calculated: no range in its 143 rows
    "50813": (0.5, 2),      # Lactate: 758/758 rows
    # 50825 Temperature (blood gas): no range in its 201 rows
    # 220224 Arterial O2 pressure: not in this file
    # 220227 Arterial O2 Saturation: not in this file
    # 220235 Arterial CO2 Pressure: not in this file
    # 223830 PH (Arterial): not in this file
    # 220274 PH (Venous): not in this file
    # 223679 TCO2 (calc) Venous: not in this file
    # 225698 TCO2 (calc) Arterial: not in this file
    # 226062 Venous CO2 Pressure: not in this file
    # 226063 Venous O2 Pressure: not in this file
    "50861": (0, 40),       # Alanine Aminotransferase (ALT): 1163/1163 rows
    "50862": (3.5, 5.2),    # Albumin: 625/625 rows
    "50863": {"F": (35, 105), "M": (40, 130)},  # Alkaline Phosphatase: F 422/422, M 716/716 rows
    "50868": (8, 20),       # Anion Gap: 2310/2860 rows
    "50878": (0, 40),       # Aspartate Aminotransferase (AST): 1165/1165 rows
    "50882": (22, 32),      # Bicarbonate: 2863/2863 rows
    "50885": (0, 1.5),      # Bilirubin, Total: 1164/1164 rows
    "50893": (8.4, 10.3),   # Calcium, Total: 2377/2377 rows
    "50902": (96, 108),     # Chloride: 3075/3082 rows
    "50910": {"F": (29, 201), "M": (47, 322)},  # Creatine Kinase (CK): F 60/60, M 140/140 rows
    "50911": (0, 10),       # Creatine Kinase, MB Isoenzyme: 187/187 rows
    "50912": {"F": (0.4, 1.1), "M": (0.5, 1.2)}, # Creatinine: F 1319/1320, M 1689/1689 rows
    # 50920 Estimated GFR (MDRD equation): no range in its 739 rows
    "50931": (70, 100),     # Glucose: 2711/2711 rows
    "50954": (94, 250),     # Lactate Dehydrogenase (LD): 663/663 rows
    "50960": (1.6, 2.6),    # Magnesium: 2470/2470 rows
    "50970": (2.7, 4.5),    # Phosphate: 2337/2337 rows
    "50971": (3.3, 5.1),    # Potassium: 3024/3324 rows
    "50983": (133, 145),    # Sodium: 2626/3148 rows
    "51003": (0, 0.01),     # Troponin T: 278/278 rows
    "51006": (6, 20),       # Urea Nitrogen: 2974/2974 rows
    # 225664 Glucose finger stick: not in this file
    "51146": (0, 1),        # Basophils: 569/943 rows
    "51200": (1, 7),        # Eosinophils: 569/943 rows
    "51214": (180, 400),    # Fibrinogen, Functional: 160/166 rows
    "51221": {"F": (34, 45), "M": (40, 51)},    # Hematocrit: F 795/1312, M 814/1601 rows
    "51222": {"F": (11.2, 15.7), "M": (14, 18)}, # Hemoglobin: F 784/1305, M 838/1625 rows
    "51237": (0.9, 1.1),    # INR(PT): 1481/1481 rows
    "51244": (19, 53),      # Lymphocytes: 576/959 rows
    "51248": (26, 32),      # MCH: 1555/2760 rows
    "51249": (32, 37),      # MCHC: 1555/2760 rows
    "51250": (82, 98),      # MCV: 2760/2760 rows
    "51254": (5, 13),       # Monocytes: 569/943 rows
    "51256": (34, 71),      # Neutrophils: 569/943 rows
    "51265": (150, 400),    # Platelet Count: 1602/2827 rows
    "51274": (9.4, 12.5),   # PT: 1406/1481 rows
    "51275": (25, 36.5),    # PTT: 1419/1500 rows
    "51277": (10.5, 15.5),  # RDW: 2760/2760 rows
    "51279": {"F": (3.9, 5.2), "M": (4.6, 6.1)}, # Red Blood Cells: F 775/1259, M 780/1501 rows
    "51301": (4, 10),       # White Blood Cells: 1562/2776 rows
    "52172": (35.1, 46.3),  # RDW-SD: 1555/1555 rows
    # 51476 Epithelial Cells (urine): no range in its 267 rows
    "51491": (5, 8),        # pH (urine): 339/342 rows
    "51493": (0, 2),        # RBC (urine): 267/267 rows
    "51498": (1.001, 1.035), # Specific Gravity (urine): 339/339 rows
    "51516": (0, 5),        # WBC (urine): 267/267 rows
}


def _lab(code, label, unit=None, merged=(), kind="numeric", valid=_NONNEG):
    numeric = kind == "numeric"
    normal = REFERENCE_RANGES.get(str(code)) if numeric else None
    by_sex = tuple(sorted(normal.items())) if isinstance(normal, dict) else ()
    return Item(str(code), label, "lab", kind, unit, None, valid if numeric else None, tuple(merged),
                None if by_sex else normal, by_sex)


def _cat(code, label, merged=()):
    return _lab(code, label, kind="categorical", merged=merged)


# chart-side ids in `merged` are icu/d_items "Labs" entries; hosp ids are other labevents items.
LABS: tuple[Item, ...] = (
    # Blood gas
    _lab(50802, "Base Excess", "mEq/L", [224828], valid=(-60, 60)),
    _lab(50808, "Free Calcium", "mmol/L", [225667], valid=(0, 20)),
    _lab(50809, "Glucose (blood gas)", "mg/dL", valid=(0, 5000)),
    _lab(50810, "Hematocrit, Calculated", "%", [226540], valid=(0, 100)),
    _cat(50812, "Intubated"),
    _lab(50813, "Lactate", "mmol/L", [225668], valid=(0, 100)),
    _lab(50825, "Temperature (blood gas)", "°C", [228242], valid=(10, 50)),
    _cat(50828, "Ventilator"),
    _lab(220224, "Arterial O2 pressure", "mmHg", valid=(0, 1000)),
    _lab(220227, "Arterial O2 Saturation", "%", valid=(0, 100)),
    _lab(220235, "Arterial CO2 Pressure", "mmHg", valid=(0, 300)),
    _lab(223830, "PH (Arterial)", None, valid=(6.0, 8.5)),
    _lab(220274, "PH (Venous)", None, valid=(6.0, 8.5)),
    _lab(223679, "TCO2 (calc) Venous", "mEq/L", valid=(0, 200)),
    _lab(225698, "TCO2 (calc) Arterial", "mEq/L", valid=(0, 200)),
    _lab(226062, "Venous CO2 Pressure", "mmHg", valid=(0, 300)),
    _lab(226063, "Venous O2 Pressure", "mmHg", valid=(0, 1000)),
    # Chemistry
    _lab(50861, "Alanine Aminotransferase (ALT)", "IU/L", [220644]),
    _lab(50862, "Albumin", "g/dL", [227456], valid=(0, 20)),
    _lab(50863, "Alkaline Phosphatase", "IU/L", [225612]),
    _lab(50868, "Anion Gap", "mEq/L", [227073], valid=(-50, 100)),
    _lab(50878, "Aspartate Aminotransferase (AST)", "IU/L", [220587]),
    _lab(50882, "Bicarbonate", "mEq/L", [227443], valid=(0, 200)),
    _lab(50885, "Bilirubin, Total", "mg/dL", [225690], valid=(0, 200)),
    _lab(50893, "Calcium, Total", "mg/dL", [225625], valid=(0, 50)),
    _lab(50902, "Chloride", "mEq/L", [50806, 220602, 226536], valid=(0, 300)),
    _lab(50910, "Creatine Kinase (CK)", "IU/L", [225634]),
    _lab(50911, "Creatine Kinase, MB Isoenzyme", "ng/mL", [227445]),
    _lab(50912, "Creatinine", "mg/dL", [51081, 52024, 220615, 229761], valid=(0, 100)),
    _lab(50920, "Estimated GFR (MDRD equation)", "mL/min/1.73 m2", valid=(0, 1000)),
    _lab(50931, "Glucose", "mg/dL", [220621, 226537], valid=(0, 5000)),
    _lab(50954, "Lactate Dehydrogenase (LD)", "IU/L", [220632]),
    _lab(50960, "Magnesium", "mg/dL", [220635], valid=(0, 50)),
    _lab(50970, "Phosphate", "mg/dL", [225677], valid=(0, 100)),
    _lab(50971, "Potassium", "mEq/L", [50822, 227442, 227464], valid=(0, 30)),
    _lab(50983, "Sodium", "mEq/L", [50824, 220645, 226534], valid=(50, 300)),
    _lab(51003, "Troponin T", "ng/mL", [227429]),
    _lab(51006, "Urea Nitrogen", "mg/dL", [225624], valid=(0, 500)),
    _lab(225664, "Glucose finger stick", "mg/dL", valid=(0, 5000)),
    # Haematology / coagulation
    _lab(51146, "Basophils", "%", [225639], valid=(0, 100)),
    _lab(51200, "Eosinophils", "%", [225640], valid=(0, 100)),
    _lab(51214, "Fibrinogen, Functional", "mg/dL", [227468]),
    _lab(51221, "Hematocrit", "%", [220545], valid=(0, 100)),
    _lab(51222, "Hemoglobin", "g/dL", [50811, 220228], valid=(0, 30)),
    _lab(51237, "INR(PT)", None, [227467], valid=(0, 50)),
    _lab(51244, "Lymphocytes", "%", [51245, 225641], valid=(0, 100)),
    _lab(51248, "MCH", "pg"),
    _lab(51249, "MCHC", "g/dL"),
    _lab(51250, "MCV", "fL"),
    _lab(51254, "Monocytes", "%", [225642], valid=(0, 100)),
    _lab(51256, "Neutrophils", "%", [225643], valid=(0, 100)),
    _lab(51265, "Platelet Count", "K/uL", [227457]),
    _lab(51274, "PT", "sec", [227465], valid=(0, 1000)),
    _lab(51275, "PTT", "sec", [227466], valid=(0, 1000)),
    _lab(51277, "RDW", "%", valid=(0, 100)),
    _lab(51279, "Red Blood Cells", "m/uL", valid=(0, 50)),
    _lab(51301, "White Blood Cells", "K/uL", [51300, 220546]),
    _lab(52172, "RDW-SD", "fL"),
    # Urinalysis
    _cat(51463, "Bacteria (urine)"),
    _cat(51464, "Bilirubin (urine)"),
    _cat(51466, "Blood (urine)"),
    _lab(51476, "Epithelial Cells (urine)", "#/hpf"),
    _cat(51478, "Glucose (urine)", [51084]),
    _cat(51484, "Ketone (urine)"),
    _cat(51486, "Leukocytes (urine)"),
    _cat(51487, "Nitrite (urine)"),
    _lab(51491, "pH (urine)", "units", [51094, 220734], valid=(0, 14)),
    _cat(51492, "Protein (urine)"),
    _lab(51493, "RBC (urine)", "#/hpf"),
    _lab(51498, "Specific Gravity (urine)", None, [227471], valid=(0.9, 1.2)),
    _cat(51512, "Urine Mucous"),
    _cat(51514, "Urobilinogen (urine)"),
    _lab(51516, "WBC (urine)", "#/hpf"),
    _cat(51519, "Yeast (urine)"),
)
# The reference names only ten merges and "about 30 more one-to-one lab/chart pairs"; the chart ids
# merged above beyond those ten (224828, 225667, 226540, 225668, 228242, 220587, 225612, 227073, 227443,
# 225690, 225625, 225634, 227445, 220632, 220635, 225677, 227429, 225624, 225639-225643, 227468, 220545,
# 227467, 227457, 227465, 227466, 220734, 227471) are our own reading of icu/d_items.


def _vital(code, label, unit, concept, valid, merged=(), kind="numeric"):
    return Item(str(code), label, "vital", kind, unit, concept, valid, tuple(merged))


VITALS: tuple[Item, ...] = (
    _vital(220045, "Heart Rate", "bpm", "hr", (0, 400)),
    _vital(220179, "Systolic blood pressure", "mmHg", "sbp", (0, 400), [220050, 224167, 227243]),
    _vital(220180, "Diastolic blood pressure", "mmHg", "dbp", (0, 300), [220051, 224643, 227242]),
    _vital(220181, "Mean blood pressure", "mmHg", "map", (0, 300), [220052]),
    _vital(220210, "Respiratory Rate", "insp/min", "rr", (0, 200), [224688, 224689, 224690]),
    _vital(220277, "O2 saturation pulseoxymetry", "%", "spo2", (0, 100)),
    _vital(223835, "Inspired O2 Fraction", "%", "fio2", (0, 100)),
    _vital(223762, "Temperature", "°C", "temp", (10, 50), [223761]),
    _vital(220739, "GCS - Eye Opening", None, "gcs_eye", (1, 4)),
    _vital(223900, "GCS - Verbal Response", None, "gcs_verbal", (1, 5)),
    _vital(223901, "GCS - Motor Response", None, "gcs_motor", (1, 6)),
    _vital(220048, "Heart Rhythm", None, None, None, kind="categorical"),
)

ITEMS: dict[str, Item] = {item.code: item for item in (*LABS, *VITALS)}
if set(REFERENCE_RANGES) - {item.code for item in LABS if item.normal or item.sex_specific}:
    raise RuntimeError("item catalogue: a reference range for an item that is not a numeric lab")


def _f_to_c(v: float) -> float:
    return (v - 32.0) * 5.0 / 9.0


def _fraction_to_percent(v: float) -> float:
    # MIMIC charts FiO2 mostly in percent, but some rows are entered as a fraction (0.21-1.0).
    return v * 100.0 if 0 < v <= 1.0 else v


# Unit conversions applied to a source id's value before it is checked and emitted.
CONVERSIONS: dict[int, Callable[[float], float]] = {223761: _f_to_c, 223835: _fraction_to_percent}

SOURCE_IDS: dict[int, Item] = {}
for _item in ITEMS.values():
    for _sid in (int(_item.code), *_item.merged):
        if _sid in SOURCE_IDS:
            raise RuntimeError(f"item catalogue: source id {_sid} merged twice")
        SOURCE_IDS[_sid] = _item

LAB_TABLE_IDS: frozenset[int] = frozenset(i for i in SOURCE_IDS if i < 100000)     # hosp/labevents
CHART_TABLE_IDS: frozenset[int] = frozenset(i for i in SOURCE_IDS if i >= 200000)  # icu/chartevents
# Ids with the unit CONCEPT_UNITS gives after conversion; readers of other sources reuse these.
CONCEPT_ITEMS: dict[str, Item] = {item.concept: item for item in VITALS if item.concept}


def lookup(source_id: int) -> Item | None:
    """The catalogue item a source id (MIMIC itemid) merges onto, or None if the model does not read it."""
    return SOURCE_IDS.get(source_id)


def convert(source_id: int, value: float) -> float:
    fn = CONVERSIONS.get(source_id)
    return fn(value) if fn else value
