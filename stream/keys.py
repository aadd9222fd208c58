"""Redis key layout, declared once. Writers: the worker (stream/). Readers: the dashboard, tests.

Per-stay keys are hash-tagged `{stay:ID}` so that all of one stay's keys land on one Redis Cluster slot
and can be updated atomically in one MULTI/EXEC or Lua script.

| key                              | type   | value                                                              |
|----------------------------------|--------|--------------------------------------------------------------------|
| {stay:ID}:meta                   | hash   | stay_id, subject_id, partition, opened (StayOpened JSON), opened_at,|
|                                  |        | closed ("0"/"1"), closed_at, clock (latest point, epoch s), scored   |
|                                  |        | (last scored point), scored:SCORER, band, n_inputs, last_time (ISO   |
|                                  |        | of the scored point), last_wall (epoch s of the last arrival),       |
|                                  |        | n_events, timer (epoch s of the next alert timer, "" when none)      |
| {stay:ID}:ids                    | hash   | event_id -> digest@point of the bytes first applied (idempotency)    |
| {stay:ID}:events                 | zset   | Measurement JSON, score = effective point (epoch s), trimmed to the  |
|                                  |        | scorers' lookback (all of the stay when a scorer reads all of it)     |
| {stay:ID}:ecgs                   | zset   | Ecg JSON, score = effective point, the latest the scorers read        |
| {stay:ID}:score:SCORER           | string | latest RiskScore JSON of that scorer                                |
| {stay:ID}:history:SCORER         | zset   | RiskScore JSON, score = scored_at epoch s (bounded)                 |
| {stay:ID}:alerts                 | list   | Alert JSON, newest first: the stay's alert audit trail (bounded)    |
| {stay:ID}:alertbyid              | hash   | alert_id -> Alert JSON (what an action names is looked up here)     |
| {stay:ID}:alertstate             | hash   | SCORER/RULE -> alert engine state JSON (level, hysteresis, lifecycle)|
| {stay:ID}:actions                | hash   | action_id -> alert_id of each AlertAction applied (idempotency)     |
| ward:active                      | zset   | stay_id, score = last_wall; closed stays are removed                |
| ward:stays                       | set    | every stay_id the worker has seen                                   |
| alerts:feed                      | list   | Alert JSON, newest first (capped)                                   |
| alerts:stays                     | hash   | alert_id -> stay_id (so `medm2t alerts ack ID` can find the stay)   |
| metrics:counters                 | hash   | events_in, duplicates, deadletters, batches, scores, alerts, ...    |
| metrics:latency                  | list   | recent batch latencies in ms (capped)                               |
| input:offsets                    | hash   | partition -> last input offset delivered to a worker                |
| models:SCORER                    | string | model card / version JSON of each active scorer                     |
| alerts:policy                    | string | AlertPolicy JSON the workers run (stream/policy.py)                 |
| quality:outcomes                 | hash   | stay_id -> Outcome JSON (the outcome agent; the scorers never read) |
| quality:history                  | list   | alert-quality report JSON, oldest first (stream/quality.py, capped) |
| quality:lock                     | string | which worker snapshots the quality history this interval            |
"""
from __future__ import annotations


def stay(stay_id: int, part: str) -> str:
    return f"{{stay:{int(stay_id)}}}:{part}"


def meta(stay_id: int) -> str:
    return stay(stay_id, "meta")


def ids(stay_id: int) -> str:
    return stay(stay_id, "ids")


def events(stay_id: int) -> str:
    return stay(stay_id, "events")


def ecgs(stay_id: int) -> str:
    return stay(stay_id, "ecgs")


def latest_score(stay_id: int, scorer: str) -> str:
    return stay(stay_id, f"score:{scorer}")


def score_history(stay_id: int, scorer: str) -> str:
    return stay(stay_id, f"history:{scorer}")


def stay_alerts(stay_id: int) -> str:
    return stay(stay_id, "alerts")


def alert_state(stay_id: int) -> str:
    return stay(stay_id, "alertstate")


def alert_by_id(stay_id: int) -> str:
    return stay(stay_id, "alertbyid")


def actions(stay_id: int) -> str:
    return stay(stay_id, "actions")


def model_card(scorer: str) -> str:
    return f"models:{scorer}"


WARD_ACTIVE = "ward:active"
WARD_STAYS = "ward:stays"
ALERT_FEED = "alerts:feed"
ALERT_STAYS = "alerts:stays"
ALERT_POLICY = "alerts:policy"
# How much Redis keeps (the topics keep everything):
ALERT_FEED_LENGTH = 1000  # newest alerts in the ward feed; the dashboard reads them all
STAY_ALERTS_KEPT = 2000   # alert records per stay: its audit trail
SCORE_HISTORY_KEPT = 2000  # score updates per stay and scorer
COUNTERS = "metrics:counters"
OFFSETS = "input:offsets"
LATENCY = "metrics:latency"
QUALITY_OUTCOMES = "quality:outcomes"
QUALITY_HISTORY = "quality:history"
QUALITY_LOCK = "quality:lock"
