"""Vitals panels (dashboard/vitals.py): clinical order, units, GCS total, reference ranges and out-of-range marks."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from dashboard.vitals import PANELS, vitals_chart, vitals_frame
from medm2t.events import Measurement, make_event_id

T0 = datetime(2150, 1, 1, 8)


def _m(concept: str, value: float, minutes: int) -> Measurement:
    t = T0 + timedelta(minutes=minutes)
    return Measurement(event_id=make_event_id("t", concept, minutes), stay_id=1, subject_id=1, source="test", time=t,
                       available_time=t, item=concept, category="vital", concept=concept, value=value)


def test_gcs_total_only_where_all_three_parts_share_a_time():
    ms = [_m("gcs_eye", 4, 0), _m("gcs_verbal", 5, 0), _m("gcs_motor", 6, 0), _m("gcs_eye", 2, 60)]
    df = vitals_frame(ms)
    total = df[df.concept == "gcs_total"]
    assert list(total.value) == [15.0] and list(total.time) == [T0]


def test_panels_in_clinical_order_with_units_ranges_and_marks():
    assert [p.title for p in PANELS][:5] == ["Heart rate", "Blood pressure", "Respiratory rate", "SpO2 and FiO2",
                                             "Temperature"]
    ms = [_m("hr", 80, 0), _m("hr", 130, 30), _m("sbp", 95, 0), _m("dbp", 60, 0), _m("map", 72, 0),
          _m("temp", 37.2, 0), _m("spo2", 91, 0), _m("fio2", 40, 0)]
    spec = vitals_chart(ms, (T0, T0 + timedelta(hours=2))).to_dict()
    titles = [p["title"] for p in spec["vconcat"]]
    assert titles == ["Heart rate (bpm)", "Blood pressure (mmHg)", "SpO2 and FiO2 (%)", "Temperature (°C)"]
    text = json.dumps(spec, ensure_ascii=False)
    assert "HR reference 51–90 bpm" in text and "systolic reference 111–219 mmHg" in text
    assert ",.1f" in text  # temperature keeps one decimal; the others none
    assert text.count('"domain": ["2150-01-01T08:00:00", "2150-01-01T10:00:00"]') >= 4  # the shared clinical time axis
    marked = {row["concept"]: row["value"] for ds in spec["datasets"].values() for row in ds
              if isinstance(row, dict) and row.get("outside") is True}
    assert marked == {"hr": 130.0, "sbp": 95.0, "spo2": 91.0}
    assert vitals_chart([]) is None


def test_labs_show_change_trend_and_an_old_flag():
    from dashboard.charts import labs_table

    def lab(name, value, hours, item=None, unit="mmol/L"):
        t = T0 + timedelta(hours=hours)
        return Measurement(event_id=make_event_id("lab", name, hours), stay_id=1, subject_id=1, source="test", time=t,
                           available_time=t, item=item or name, label=name, category="lab", value=value, unit=unit)

    table = labs_table([lab("Lactate", 1.2, 0, "50813"), lab("Lactate", 4.1, 6, "50813"),
                        lab("Sodium", 140, 1, "50983", "mEq/L"), lab("Potassium", 3.2, 2, "50971", "mEq/L"),
                        lab("Mg", 0.8, 3), lab("Magnesium", 0.8, 3, "50960", "mmol/L"), _m("hr", 80, 40 * 60)])
    assert list(table.columns[:5]) == ["lab", "latest", "unit", "range", "flag"]
    lactate, sodium, potassium, mg, magnesium = (table[table.lab == n].iloc[0]
                                                 for n in ("Lactate", "Sodium", "Potassium", "Mg", "Magnesium"))
    assert lactate.latest == "4.1" and lactate.change == "↑ from 1.2" and lactate.trend == [1.2, 4.1]
    assert lactate.age_h == 34.0 and lactate.old and sodium.change == "" and sodium.results == 1
    # the adult reference range (MIMIC-IV's modal lab range) in clinical words with the unit, and the latest against it
    assert (lactate.range, lactate.flag) == ("0.5–2 mmol/L", "high")
    assert (sodium.range, sodium.flag) == ("133–145 mEq/L", "")
    assert (potassium.range, potassium.flag) == ("3.3–5.1 mEq/L", "low")
    # a lab outside the catalogue (PhysioNet 2012's own names), or in another unit than the catalogue's: no range
    assert (mg.range, mg.flag) == ("", "") and (magnesium.range, magnesium.flag) == ("", "")
    assert labs_table([]).empty and list(labs_table([]).columns[3:5]) == ["range", "flag"]


def test_labs_range_and_flag_follow_the_patients_sex():
    from dashboard.charts import labs_table

    def lab(name, item, value, unit):
        return Measurement(event_id=make_event_id("lab", name), stay_id=1, subject_id=1, source="test", time=T0,
                           available_time=T0, item=item, label=name, category="lab", value=value, unit=unit)

    results = [lab("Hemoglobin", "51222", 12.5, "g/dL"), lab("Sodium", "50983", 150, "mEq/L")]

    def rows(sex):
        table = labs_table(results, sex)
        return {r.lab: (r.range, r.flag) for r in table.itertuples()}

    # haemoglobin 12.5 g/dL: within a woman's range (MIMIC-IV's female modal range), low for a man
    assert rows("F") == {"Hemoglobin": ("11.2–15.7 g/dL (female)", ""), "Sodium": ("133–145 mEq/L", "high")}
    assert rows("M") == {"Hemoglobin": ("14–18 g/dL (male)", "low"), "Sodium": ("133–145 mEq/L", "high")}
    # sex unknown: both ranges, labelled, and no flag rather than a wrong one; other labs flag as before
    assert rows(None) == {"Hemoglobin": ("female 11.2–15.7, male 14–18 g/dL", ""), "Sodium": ("133–145 mEq/L", "high")}
    assert rows(None) == {r.lab: (r.range, r.flag) for r in labs_table(results).itertuples()}  # sex defaults to unknown
