"""Kafka topic names, declared once. Every message on every topic is keyed by `stay_id`."""

# Every input event of a stay, ECGs included, travels on one topic: one partition then holds a stay's
# whole stream in order, which is what makes the score stream reproducible (docs/scoring-contract.md).
EVENTS = "icu.events.v2"        # stay opened/closed, measurements and ECGs: one event or an observation set
EVENTS_V1 = "icu.events.v1"     # retired: not read, not created; the worker warns if it holds messages
OUTCOMES = "icu.outcomes.v1"    # evaluation only: never read by the model
SCORES = "risk.scores.v1"       # every score update (RiskScore JSON)
ALERTS = "risk.alerts.v2"       # alert lifecycle and audit trail (Alert JSON)
ALERTS_V1 = "risk.alerts.v1"    # deprecated: the same records with one 'escalated' state (AlertV1); still written
ACTIONS = "risk.alert-actions.v1"  # people acting on alerts: ack, snooze, unsnooze, comment (AlertAction JSON)
FHIR_RISK = "fhir.riskassessment.v1"  # a FHIR R4 RiskAssessment per probability score (medm2t.fhir)
DEADLETTER = "icu.deadletter.v1"  # malformed input with its reason (DeadLetter JSON)

INPUT_TOPICS = (EVENTS,)
ALL_TOPICS = (EVENTS, OUTCOMES, SCORES, ALERTS, ALERTS_V1, ACTIONS, FHIR_RISK, DEADLETTER)


def topic_for(kind: str) -> str:
    """Which input topic an event kind travels on."""
    return OUTCOMES if kind == "outcome" else EVENTS
