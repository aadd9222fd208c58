"""Kafka topic names, declared once. Every message on every topic is keyed by `stay_id`."""

EVENTS = "icu.events.v1"        # stay opened/closed and measurements (canonical events, JSON)
ECG = "icu.ecg.v1"              # ECG events with compact waveforms
OUTCOMES = "icu.outcomes.v1"    # evaluation only: never read by the model
SCORES = "risk.scores.v1"       # every score update (RiskScore JSON)
ALERTS = "risk.alerts.v1"       # alert lifecycle (Alert JSON)
DEADLETTER = "icu.deadletter.v1"  # malformed input with its reason (DeadLetter JSON)

INPUT_TOPICS = (EVENTS, ECG)
ALL_TOPICS = (EVENTS, ECG, OUTCOMES, SCORES, ALERTS, DEADLETTER)


def topic_for(kind: str) -> str:
    """Which input topic an event kind travels on."""
    return {"ecg": ECG, "outcome": OUTCOMES}.get(kind, EVENTS)
