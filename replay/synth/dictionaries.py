"""Real MIMIC-IV 2.2 / MIMIC-IV-ECG 1.0 vocabulary the synthetic cohort uses: column orders, item ids with
their labels and units (copied from d_items / d_labitems / labevents of the MIMIC-IV demo), ICD codes from
the MedM2T CVD code sets (medm2t-reference §1.1) and categorical values."""
from __future__ import annotations

# ---- table columns, in MIMIC-IV 2.2 order ------------------------------------------------------------

COLUMNS: dict[str, tuple[str, ...]] = {
    "hosp/patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "hosp/admissions": (
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type", "admit_provider_id",
        "admission_location", "discharge_location", "insurance", "language", "marital_status", "race",
        "edregtime", "edouttime", "hospital_expire_flag",
    ),
    "hosp/diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "hosp/procedures_icd": ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    "hosp/labevents": (
        "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime",
        "storetime", "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
        "comments",
    ),
    "hosp/d_labitems": ("itemid", "label", "fluid", "category"),
    "icu/icustays": ("subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"),
    "icu/chartevents": (
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value", "valuenum",
        "valueuom", "warning",
    ),
    "icu/d_items": (
        "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type", "lownormalvalue",
        "highnormalvalue",
    ),
}

ECG_RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
ECG_MEASUREMENT_COLUMNS = (
    ("subject_id", "study_id", "cart_id", "ecg_time")
    + tuple(f"report_{i}" for i in range(18))
    + ("bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
       "p_axis", "qrs_axis", "t_axis")
)

# ---- chartevents items (d_items rows) --------------------------------------------------------------------
# itemid: (label, abbreviation, category, unitname, param_type)
CHART_ITEMS: dict[int, tuple[str, str, str, str, str]] = {
    220045: ("Heart Rate", "HR", "Routine Vital Signs", "bpm", "Numeric"),
    220179: ("Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg", "Numeric"),
    220180: ("Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg", "Numeric"),
    220181: ("Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg", "Numeric"),
    220210: ("Respiratory Rate", "RR", "Respiratory", "insp/min", "Numeric"),
    220277: ("O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", "Numeric"),
    223761: ("Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", "Numeric"),
    223762: ("Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", "Numeric"),
    223835: ("Inspired O2 Fraction", "FiO2", "Respiratory", "", "Numeric"),
    220739: ("GCS - Eye Opening", "Eye Opening", "Neurological", "", "Text"),
    223900: ("GCS - Verbal Response", "Verbal Response", "Neurological", "", "Text"),
    223901: ("GCS - Motor Response", "Motor Response", "Neurological", "", "Text"),
    223830: ("PH (Arterial)", "PH (Arterial)", "Labs", "", "Numeric"),
}
HR, SBP, DBP, MAP, RR, SPO2, TEMP_F, TEMP_C, FIO2 = 220045, 220179, 220180, 220181, 220210, 220277, 223761, 223762, 223835
GCS_EYE, GCS_VERBAL, GCS_MOTOR, PH_ART = 220739, 223900, 223901, 223830

# chartevents valueuom as MIMIC writes it (d_items has none for FiO2 but the rows say %).
CHART_UOM = {HR: "bpm", SBP: "mmHg", DBP: "mmHg", MAP: "mmHg", RR: "insp/min", SPO2: "%", TEMP_F: "°F",
             TEMP_C: "°C", FIO2: "%", GCS_EYE: "", GCS_VERBAL: "", GCS_MOTOR: "", PH_ART: "units"}

# GCS components are charted as text with the score in valuenum.
GCS_TEXT = {
    GCS_EYE: {4: "Spontaneously", 3: "To Speech", 2: "To Pain", 1: "No Response"},
    GCS_VERBAL: {5: "Oriented", 4: "Confused", 3: "Inappropriate Words", 2: "Incomprehensible sounds",
                 1: "No Response"},
    GCS_MOTOR: {6: "Obeys Commands", 5: "Localizes Pain", 4: "Flex-withdraws", 3: "Abnormal Flexion",
                2: "Abnormal extension", 1: "No response"},
}

# ---- labevents items ---------------------------------------------------------------------------------------
# itemid: (label, fluid, category, valueuom, ref_lower, ref_upper, decimals)
LAB_ITEMS: dict[int, tuple[str, str, str, str, float, float, int]] = {
    50813: ("Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2.0, 1),
    50868: ("Anion Gap", "Blood", "Chemistry", "mEq/L", 8, 20, 0),
    50882: ("Bicarbonate", "Blood", "Chemistry", "mEq/L", 22, 32, 0),
    50885: ("Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 0, 1.5, 1),
    50902: ("Chloride", "Blood", "Chemistry", "mEq/L", 96, 108, 0),
    50912: ("Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2, 1),
    50931: ("Glucose", "Blood", "Chemistry", "mg/dL", 70, 100, 0),
    50971: ("Potassium", "Blood", "Chemistry", "mEq/L", 3.3, 5.1, 1),
    50983: ("Sodium", "Blood", "Chemistry", "mEq/L", 133, 145, 0),
    51003: ("Troponin T", "Blood", "Chemistry", "ng/mL", 0, 0.01, 2),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 6, 20, 0),
    51221: ("Hematocrit", "Blood", "Hematology", "%", 40, 51, 1),
    51222: ("Hemoglobin", "Blood", "Hematology", "g/dL", 13.7, 17.5, 1),
    51265: ("Platelet Count", "Blood", "Hematology", "K/uL", 150, 400, 0),
    51301: ("White Blood Cells", "Blood", "Hematology", "K/uL", 4, 10, 1),
}
URINE_NITRITE = 51487  # categorical: value NEG/POS, no valuenum
URINE_NITRITE_ROW = ("Nitrite", "Urine", "Hematology")

# Panels drawn together (one specimen_id each).
CHEM_PANEL = (50983, 50971, 50902, 50882, 50868, 51006, 50912, 50931)
CBC_PANEL = (51301, 51222, 51221, 51265)

# ---- diagnoses and procedures (ICD-10) ---------------------------------------------------------------
PRIMARY_CODES = {
    "chd": ("I214", "I2109", "I2119", "I2510"),
    "stroke": ("I639", "I6350", "I63512", "I6522"),
    "hf": ("I5023", "I5033", "I5043", "I509", "I130"),
    "none": ("A419", "J189", "N179", "J9601", "K922", "K8590", "J441", "E871", "S065X0A", "R6521", "T814XXA"),
}
# Secondary comorbidities (history flags of reference §1.1: hyperlipidemia, DM, AF, hypertension, PAD).
SECONDARY_CODES = ("E785", "E119", "I480", "I482", "I10", "I739", "N183", "E039", "F329", "K219", "Z87891", "D649")
CABG_CODES = ("021009W", "02100Z9", "021109W")
PCI_CODES = ("02703DZ", "027034Z", "02713DZ")
OTHER_PROCEDURES = ("0BH17EZ", "02HV33Z", "5A1955Z", "0W9G3ZZ", "3E0G76Z")

# ---- admissions / icustays categories ------------------------------------------------------------------------
ADMISSION_TYPES = ("EW EMER.", "URGENT", "OBSERVATION ADMIT", "EU OBSERVATION", "SURGICAL SAME DAY ADMISSION",
                   "DIRECT EMER.", "ELECTIVE", "DIRECT OBSERVATION", "AMBULATORY OBSERVATION")
ADMISSION_TYPE_P = (0.45, 0.14, 0.12, 0.08, 0.07, 0.06, 0.05, 0.02, 0.01)
ADMISSION_LOCATIONS = ("EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL", "CLINIC REFERRAL",
                       "PROCEDURE SITE", "WALK-IN/SELF REFERRAL", "PACU", "TRANSFER FROM SKILLED NURSING FACILITY",
                       "INTERNAL TRANSFER TO OR FROM PSYCH", "INFORMATION NOT AVAILABLE", "AMBULATORY SURGERY TRANSFER")
ADMISSION_LOCATION_P = (0.48, 0.2, 0.15, 0.04, 0.03, 0.03, 0.02, 0.02, 0.01, 0.01, 0.01)
DISCHARGE_LOCATIONS = ("HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB",
                       "CHRONIC/LONG TERM ACUTE CARE", "HOSPICE", "AGAINST ADVICE")
DISCHARGE_LOCATION_P = (0.3, 0.3, 0.22, 0.08, 0.05, 0.03, 0.02)
INSURANCE = ("Medicare", "Medicaid", "Other")
INSURANCE_P = (0.45, 0.12, 0.43)
MARITAL = ("SINGLE", "MARRIED", "WIDOWED", "DIVORCED", "")
MARITAL_P = (0.35, 0.4, 0.13, 0.08, 0.04)
RACES = ("WHITE", "BLACK/AFRICAN AMERICAN", "UNKNOWN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "OTHER",
         "WHITE - OTHER EUROPEAN", "UNABLE TO OBTAIN")
RACE_P = (0.62, 0.14, 0.06, 0.05, 0.04, 0.04, 0.03, 0.02)
ANCHOR_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
_MICU, _SICU, _MSICU, _TSICU = ("Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
                                 "Medical/Surgical Intensive Care Unit (MICU/SICU)", "Trauma SICU (TSICU)")
_CCU, _CVICU, _NSICU = ("Coronary Care Unit (CCU)", "Cardiac Vascular Intensive Care Unit (CVICU)",
                        "Neuro Surgical Intensive Care Unit (Neuro SICU)")
# First care unit by the admission's CVD class: (unit, probability). Every class can land in several
# units, and the cardiac and neuro units also take patients without that diagnosis.
CAREUNITS = {
    "none": ((_MICU, 0.35), (_SICU, 0.2), (_MSICU, 0.22), (_TSICU, 0.1), (_CCU, 0.06), (_CVICU, 0.04), (_NSICU, 0.03)),
    "chd": ((_CCU, 0.45), (_CVICU, 0.25), (_MICU, 0.2), (_MSICU, 0.1)),
    "hf": ((_CCU, 0.4), (_MICU, 0.45), (_CVICU, 0.15)),
    "stroke": ((_NSICU, 0.5), (_MSICU, 0.3), (_MICU, 0.2)),
}
