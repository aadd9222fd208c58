"""The ICD sets of the 90-day CVD label (reference §1.1, Table A1), matched as code prefixes, by ICD version."""
from __future__ import annotations

CVD_DIAGNOSES = {
    "chd": {9: ("410", "411", "4140"), 10: ("I21", "I22", "I251", "I257", "I258")},
    "stroke": {9: ("3466", "433", "434", "436", "4370", "4371"), 10: ("I63", "I65", "I66")},
    "hf": {9: ("428", "39891", "40201", "40211", "40291", "40401", "40403", "40411", "40413", "40491", "40493"),
           10: ("I50", "I130", "I132")},
}
CVD_PROCEDURES = {9: ("361", "362", "360"), 10: ("0210", "0211", "0212", "0213", "0270", "0271", "0272", "0273")}


def cvd_type_of_diagnosis(code: str, version: int) -> str | None:
    for kind, sets in CVD_DIAGNOSES.items():
        if code.startswith(sets.get(version, ())):
            return kind
    return None


def is_cvd_procedure(code: str, version: int) -> bool:
    return code.startswith(CVD_PROCEDURES.get(version, ()))
