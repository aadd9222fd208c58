"""Labs' adult reference ranges (medm2t/items.py REFERENCE_RANGES), per sex where they differ, and the
abnormal flag against them."""
from __future__ import annotations

import importlib.util

import pytest

from dashboard.charts import reference_range_text
from medm2t import items
from tests.helpers.paths import ROOT

TOOL = ROOT / "tools" / "lab_reference_ranges.py"


@pytest.mark.parametrize("value, flag", [
    (132.9, "L"), (133, None), (133.1, None), (140, None), (144.9, None), (145, None), (145.1, "H"), (None, None)])
def test_flag_at_and_around_the_bounds(value, flag):
    sodium = items.ITEMS["50983"]
    assert sodium.normal == (133, 145)
    assert sodium.flag(value) == flag


def test_flag_with_one_bound_or_none():
    troponin = items.ITEMS["51003"]
    assert troponin.normal == (0, 0.01) and troponin.flag(0) is None and troponin.flag(0.011) == "H"
    upper_only = items.Item("x", "x", "lab", "numeric", "ng/mL", normal=(None, 0.01))
    assert upper_only.flag(-5) is None and upper_only.flag(0.02) == "H"
    lower_only = items.Item("y", "y", "lab", "numeric", "mL/min", normal=(60, None))
    assert lower_only.flag(59) == "L" and lower_only.flag(1e5) is None
    assert items.ITEMS["50802"].normal is None and items.ITEMS["50802"].flag(-30) is None  # base excess: no range
    assert items.ITEMS["220045"].flag(300) is None  # vitals have no lab range here


SEX_SPECIFIC = {  # from MIMIC-IV demo hosp/labevents joined with hosp/patients (women's, men's modal range)
    "50863": ((35, 105), (40, 130)),      # Alkaline Phosphatase
    "50910": ((29, 201), (47, 322)),      # Creatine Kinase (CK)
    "50912": ((0.4, 1.1), (0.5, 1.2)),    # Creatinine
    "51221": ((34, 45), (40, 51)),        # Hematocrit
    "51222": ((11.2, 15.7), (14, 18)),    # Hemoglobin
    "51279": ((3.9, 5.2), (4.6, 6.1)),    # Red Blood Cells
}


def test_sex_specific_labs_hold_one_range_per_sex():
    specific = {i.code: (i.reference_range("F"), i.reference_range("M")) for i in items.LABS if i.sex_specific}
    assert specific == SEX_SPECIFIC
    for code in SEX_SPECIFIC:
        item = items.ITEMS[code]
        assert item.normal is None and item.reference_range(None) is None
        assert items.REFERENCE_RANGES[code] == {"F": SEX_SPECIFIC[code][0], "M": SEX_SPECIFIC[code][1]}
    sodium = items.ITEMS["50983"]  # the same for both sexes: one range whatever the sex
    assert not sodium.sex_specific and {sodium.reference_range(s) for s in ("F", "M", None)} == {(133, 145)}
    assert sodium.flag(132, "F") == sodium.flag(132, "M") == sodium.flag(132) == "L"


@pytest.mark.parametrize("value, sex, flag", [
    (12.5, "F", None), (12.5, "M", "L"), (12.5, None, None),  # a woman's normal haemoglobin is low for a man
    (11.2, "F", None), (11.1, "F", "L"), (15.7, "F", None), (15.8, "F", "H"), (16.5, "F", "H"), (16.5, "M", None),
    (14, "M", None), (13.9, "M", "L"), (18, "M", None), (18.1, "M", "H"),
    (8.0, None, None), (25.0, None, None),  # sex unknown: no flag rather than a wrong one, however far out
    (None, "F", None),
])
def test_haemoglobin_flag_by_sex(value, sex, flag):
    assert items.ITEMS["51222"].flag(value, sex) == flag


def test_creatinine_flag_by_sex_and_unknown():
    creatinine = items.ITEMS["50912"]
    assert creatinine.flag(1.15, "F") == "H" and creatinine.flag(1.15, "M") is None and creatinine.flag(1.15) is None
    assert creatinine.flag(0.45, "F") is None and creatinine.flag(0.45, "M") == "L"


def test_ranges_are_ordered_and_possible():
    ranged = [i for i in items.LABS if i.normal is not None or i.sex_specific]
    assert len(ranged) == len(items.REFERENCE_RANGES) == 46
    assert sum(i.sex_specific for i in ranged) == len(SEX_SPECIFIC) == 6
    for item in ranged:
        assert item.kind == "numeric", item.label
        assert (item.normal is None) == item.sex_specific, item.label  # one home: one range or one per sex
        for low, high in [item.normal] if item.normal else [r for _, r in item.normal_by_sex]:
            assert low is not None or high is not None, item.label
            if low is not None and high is not None:
                assert low <= high, item.label
            for bound in (low, high):
                assert bound is None or item.is_valid(bound), f"{item.label}: {bound} outside {item.valid}"
    assert all(i.normal is None and not i.sex_specific for i in items.LABS if i.kind == "categorical")


def test_range_text_is_clinical_words_with_the_unit():
    assert reference_range_text(items.ITEMS["50971"]) == "3.3–5.1 mEq/L"
    assert reference_range_text(items.ITEMS["50971"], "F") == "3.3–5.1 mEq/L"  # not sex-specific: no sex named
    assert reference_range_text(items.ITEMS["51237"]) == "0.9–1.1"  # INR has no unit
    assert reference_range_text(items.Item("x", "x", "lab", "numeric", "ng/mL", normal=(None, 0.01))) == "≤ 0.01 ng/mL"
    assert reference_range_text(items.ITEMS["50802"]) == ""


def test_range_text_of_a_sex_specific_lab_names_whose_range():
    hb = items.ITEMS["51222"]
    assert reference_range_text(hb, "F") == "11.2–15.7 g/dL (female)"
    assert reference_range_text(hb, "M") == "14–18 g/dL (male)"
    assert reference_range_text(hb) == "female 11.2–15.7, male 14–18 g/dL"  # sex unknown: both, labelled
    assert reference_range_text(items.ITEMS["51279"], "F") == "3.9–5.2 m/uL (female)"


def test_catalogue_ranges_equal_the_modal_ranges_of_mimic_lab_records(shared_data):
    """The table in medm2t/items.py is what tools/lab_reference_ranges.py prints (per sex where women's and
    men's modal ranges differ), so it cannot drift."""
    spec = importlib.util.spec_from_file_location("lab_reference_ranges", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    labevents = shared_data / "mimic-iv-demo-2.2" / "hosp" / "labevents.csv.gz"
    modal = tool.modal_ranges(labevents)  # sexes from hosp/patients beside it
    assert tool.catalogue(modal) == items.REFERENCE_RANGES
    for code, groups in modal.items():  # sex-specific exactly where women's and men's modal ranges differ
        female, male = groups["F"][0], groups["M"][0]
        assert items.ITEMS[code].sex_specific == (female is not None and male is not None and female != male), code
        if items.ITEMS[code].sex_specific:
            assert (items.ITEMS[code].reference_range("F"), items.ITEMS[code].reference_range("M")) == (female, male)
    assert modal["50983"]["all"][1:] == (2626, 3148)  # sodium: rows with the modal range / rows of the lab
    assert modal["51222"]["F"][1:] == (784, 1305) and modal["51222"]["M"][1:] == (838, 1625)  # haemoglobin
