"""The alert rules each scorer declares, by rule key: the signal a rule reads from a score, its reason in
words and its value with its unit (the numbers are the alert policy's, stream/policy.py). A scorer not
listed has one rule per probability task of its scores (stream/alerts.py). Not in the scorers' package
__init__: its scorer factory imports the MedM2T scorer (and so model/) inside a function, and the layering
test counts such deferred imports, so the dashboard, which reads these rules, would seem to reach model/."""
from __future__ import annotations

from stream.scorers import news2

FIXED_RULES = {news2.NAME: news2.ALERT_SIGNALS}
