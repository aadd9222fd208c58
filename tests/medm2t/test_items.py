"""The item catalogue and text-value parsing."""
from __future__ import annotations

import gzip
import csv

import pytest

from medm2t import items
from replay.values import canonical_category, parse_egfr, parse_number, resolve


def test_catalogue_has_the_reference_lab_items():
    assert len(items.LABS) == 74
    assert sum(i.kind == "categorical" for i in items.LABS) == 13
    assert len({i.code for i in items.LABS}) == 74


@pytest.mark.parametrize("source, representative", [
    (50806, "50902"), (220602, "50902"), (226536, "50902"), (52024, "50912"), (229761, "50912"), (51084, "51478"),
    (50811, "51222"), (220228, "51222"), (51245, "51244"), (51094, "51491"), (227464, "50971"), (226534, "50983"),
    (220546, "51301"), (226537, "50931"), (220644, "50861"), (227456, "50862"),
    (220050, "220179"), (227242, "220180"), (220052, "220181"), (224690, "220210"), (223761, "223762"),
])
def test_merges_map_onto_the_representative(source, representative):
    assert items.lookup(source).code == representative


def test_vital_concepts_and_unknown_ids():
    concepts = {i.concept: i.code for i in items.VITALS if i.concept}
    assert concepts == {"hr": "220045", "sbp": "220179", "dbp": "220180", "map": "220181", "rr": "220210",
                        "spo2": "220277", "fio2": "223835", "temp": "223762", "gcs_eye": "220739",
                        "gcs_verbal": "223900", "gcs_motor": "223901"}
    assert items.lookup(999999) is None


def test_conversions():
    assert items.convert(223761, 98.6) == pytest.approx(37.0)
    assert items.convert(223835, 0.4) == pytest.approx(40.0)
    assert items.convert(223835, 40.0) == pytest.approx(40.0)
    assert items.convert(220045, 80.0) == 80.0


def test_impossible_values_are_invalid():
    hr = items.lookup(220045)
    assert hr.is_valid(180) and not hr.is_valid(401) and not hr.is_valid(-1)
    assert not items.lookup(220224).is_valid(999998)


def test_labels_come_from_the_mimic_dictionaries(shared_data):
    demo = shared_data / "mimic-iv-demo-2.2"
    labels = {}
    for path in (demo / "hosp" / "d_labitems.csv.gz", demo / "icu" / "d_items.csv.gz"):
        with gzip.open(path, "rt") as fh:
            labels.update({int(r["itemid"]): r["label"] for r in csv.DictReader(fh)})
    for source_id in items.SOURCE_IDS:
        assert source_id in labels, f"catalogue id {source_id} is not in the MIMIC dictionaries"
    assert items.ITEMS["50862"].label == labels[50862]


@pytest.mark.parametrize("text, expected", [
    ("7.4", 7.4), (" 12 ", 12.0), ("7-9", 8.0), ("2~4", 3.0), ("=5", 5.0), ("<0.01", 0.009), (">500", 501.0),
    ("<0.01.  CTROPNT > 0.10 NG/ML SUGGESTS ACUTE MI.", 0.009), ("___", None), ("NEG", None), ("", None), (None, None),
])
def test_parse_number(text, expected):
    got = parse_number(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_parse_egfr():
    assert parse_egfr("Using ... Estimated GFR = 49 if non African-American") == 49
    assert parse_egfr("Estimated GFR = >75 if non African-American") == 75
    assert parse_egfr("estimated GFR (eGFR) is likely between 39 and 47 mL/min") == 43
    assert parse_egfr("no number here") is None


def test_categories_and_exclusions():
    assert canonical_category(items.ITEMS["50812"], "INTUBATED.", None) == "INTUBATED"
    assert canonical_category(items.ITEMS["51487"], "Negative", None) == "NEG"
    assert canonical_category(items.ITEMS["51478"], "1000", 1000.0) == "TR"
    assert canonical_category(items.ITEMS["51478"], ">1000", 1001.0) == ">1000"
    assert resolve(items.ITEMS["50971"], 5.0, "5.0", "Hemolysis falsely elevates this test.")[2] == "excluded comment"
    assert resolve(items.ITEMS["50971"], None, "UNABLE TO REPORT", None)[2] == "excluded comment"
    assert resolve(items.ITEMS["50971"], None, "garbage", None)[2] == "unparsable value"
    assert resolve(items.ITEMS["50971"], None, "4.1", None) == (4.1, None, None)
