"""Turning a lab/chart row's text into a value: numbers hidden in strings ("<0.01", "7-10", ">500"),
eGFR comments, canonical categories, and the comments that mean the result must not be used."""
from __future__ import annotations

import re

from medm2t.items import Item

# A result whose comment or value says it is unusable is dropped (haemolysis warnings, "unable to report"...).
_EXCLUDED = re.compile(
    r"hemoly|haemoly|unable to report|error|not done|specimen clotted|clotted specimen|insufficient|"
    r"\bqns\b|cancel|discard|\bhold\b|test not performed|not reported|lab accident",
    re.IGNORECASE,
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_PLAIN = re.compile(rf"^\s*({_NUMBER})\s*$")
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|~|to)\s*({_NUMBER})\s*$", re.IGNORECASE)
_BOUND = re.compile(rf"^\s*(<=|>=|<|>|=)\s*({_NUMBER})")
_EGFR = re.compile(
    rf"estimated gfr(?:\s*\(egfr\))?\s*(?:=|is likely between)\s*(>|<)?\s*({_NUMBER})(?:\s*(?:-|~|to|and)\s*({_NUMBER}))?",
    re.IGNORECASE,
)

# Urine glucose (51478) is categorical; numeric dipstick readings fall into these bins (reference §2.2).
_URINE_GLUCOSE_BINS = ((1.0, "NEG"), (1001.0, "TR"), (float("inf"), ">1000"))
_CATEGORY_SYNONYMS = {
    "NEGATIVE": "NEG", "POSITIVE": "POS", "TRACE": "TR", "SMALL": "SM", "MODERATE": "MOD", "LARGE": "LG",
    "OCCASIONAL": "OCC", "N": "NEG",
}


def is_excluded(*texts: str | None) -> bool:
    return any(t and _EXCLUDED.search(t) for t in texts)


def parse_number(text: str | None) -> float | None:
    """A number from a result string, or None. '<x' → just below x, '>x' → just above x (the model only
    bins the value), 'a-b' / 'a~b' → mean, surrounding '=' and trailing '.' / '*' ignored."""
    if text is None:
        return None
    s = text.strip().rstrip(".*").strip()
    if not s:
        return None
    if m := _PLAIN.match(s):
        return float(m.group(1))
    if m := _RANGE.match(s):
        return (float(m.group(1)) + float(m.group(2))) / 2.0
    if m := _BOUND.match(s):
        op, x = m.group(1), float(m.group(2))
        if op == "<":
            return x * 0.9 if x > 0 else x - abs(x) * 0.1
        if op == ">":
            return x + 1.0 if x >= 10 else x * 1.1 if x > 0 else x
        return x
    return None


def parse_egfr(comment: str | None) -> float | None:
    """eGFR (50920) lives in its comment: 'Estimated GFR = 49 if non African-American ...', '= >75' or
    'estimated GFR (eGFR) is likely between 39 and 47' (→ mean)."""
    if not comment:
        return None
    m = _EGFR.search(comment)
    if not m:
        return None
    lo = float(m.group(2))
    return (lo + float(m.group(3))) / 2.0 if m.group(3) else lo


def canonical_category(item: Item, text: str | None, number: float | None) -> str | None:
    """The canonical category string of a categorical item's result, or None when there is none."""
    if item.code == "51478" and number is not None:
        for upper, label in _URINE_GLUCOSE_BINS:
            if number < upper:
                return label
    if text is None:
        return None if number is None else _format_number(number)
    s = re.sub(r"\s+", " ", text.strip().rstrip(".*").strip()).upper()
    if not s or s == "___":
        return None
    return _CATEGORY_SYNONYMS.get(s, s)


def _format_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def resolve(item: Item, valuenum: float | None, value: str | None, comment: str | None = None):
    """(number, category, problem): the parsed result of one row, or a short reason it is unusable.
    Numeric items: valuenum first, else the value text, else (eGFR) the comment."""
    if is_excluded(value, comment):
        return None, None, "excluded comment"
    if item.kind == "categorical":
        number = valuenum if valuenum is not None else parse_number(value)
        text = value if value is not None else comment
        category = canonical_category(item, text, number)
        return (number, category, None) if category else (None, None, "no value")
    number = valuenum
    if number is None:
        number = parse_number(value)
    if number is None and item.code == "50920":
        number = parse_egfr(comment)
    if number is None:
        number = parse_number(comment) if value is None else None
    if number is None:
        return None, None, "unparsable value" if (value or comment) else "no value"
    return number, None, None
