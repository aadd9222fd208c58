"""`medm2t report`: live alert quality per scorer, from what the worker keeps in Redis."""
from __future__ import annotations

import argparse
import json

HELP = """Print the alert-quality figures of the replay so far, per scorer (NEWS2, MedM2T ...), over the stays
whose outcome has arrived on icu.outcomes.v1 (the worker's outcome agent stores them; the scorers never read
them). Definitions: docs/alert-quality.md.

  alerts_per_patient_day  clinical alerts raised per ICU patient-day (technical stale-data alerts excluded)
  stays_alerted           fraction of stays with at least one alert
  beds_urgent             share of occupied bed-time with an urgent/emergency alert open
  deaths                  in-hospital deaths
  deaths_flagged_2h       fraction of deaths with an urgent or emergency alert >= 2 h before the death time
  median_lead_hours       how long before death the first urgent/emergency alert came (median)
  ppv                     of stays with an urgent/emergency alert, the fraction that died in hospital
  acknowledged, median_minutes_to_ack   how people answered urgent/emergency alerts (clinical minutes)

A figure is null when its denominator is empty (no deaths yet, no urgent alert yet).

examples:
  medm2t report
  medm2t report --json | jq '.scorers.news2.alerts_per_patient_day'
"""


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings
    from medm2t.settings import safe_url

    s = help_settings()
    p = sub.add_parser("report", help="live alert quality per scorer (alerts per patient-day, deaths flagged, PPV)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="the report as one JSON object (scorers -> figures)")
    p.add_argument("--redis", metavar="URL", help=f"Redis URL (default {safe_url(s.redis_url)}, MEDM2T_REDIS_URL)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli.worker import check_redis, settings_from
    from stream import quality

    report = quality.read(check_redis(settings_from(args), attempts=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(text(report))
    return 0


def text(report: dict) -> str:
    scorers = report["scorers"]
    if not report["outcomes"]:
        return ("no outcomes yet: the figures count stays whose outcome has arrived on icu.outcomes.v1 "
                "(a replay releases it at hospital discharge)")
    return (f"alert quality over {report['outcomes']} stays with an outcome (clinical clock up to "
            f"{report['clinical_at']}; docs/alert-quality.md)\n\n" + figures_table(scorers))


def figures_table(scorers: dict[str, dict], column: int = 12) -> str:
    """One column of figures per scorer (name -> ScorerQuality as a dict), one row per figure."""
    from stream.quality import ROWS

    width = max(len(r[0]) for r in ROWS)
    lines = [" " * width + "".join(f"{n:>{column}}" for n in scorers)]
    for label, key, fmt in ROWS:
        cells = ["–" if q[key] is None else fmt.format(q[key]) for q in scorers.values()]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>{column}}" for c in cells))
    return "\n".join(lines)
