"""The alert rules each scorer declares, by rule key: the signal a rule reads from a score and its reason in
words (its numbers are the alert policy's, stream/policy.py). A scorer not listed has one rule per
probability task of its scores (stream/alerts.py). Apart from the scorers' package __init__, so that the
dashboard reads it without loading the model."""
from __future__ import annotations

from stream.scorers import news2

FIXED_RULES = {news2.NAME: news2.ALERT_SIGNALS}
