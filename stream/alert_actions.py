"""Producing people's actions on alerts (risk.alert-actions.v1): what the dashboard's buttons and
`medm2t alerts ack|snooze|unsnooze|comment` share. The worker applies them (stream.pipeline.act_on)."""
from __future__ import annotations

import time
import uuid
from datetime import datetime

from medm2t import topics
from medm2t.events import Alert, AlertAction
from stream import keys
from stream.alerts import action_record_id


class UnknownAlert(LookupError):
    pass


def new_action(redis, alert_id: str, action: str, by: str, reason: str | None = None,
               snooze_minutes: float | None = None) -> AlertAction:
    """An action on `alert_id`, its stay looked up in Redis (a sync client). Raises UnknownAlert, or pydantic's
    ValidationError for an incomplete action (no user, a snooze without a reason)."""
    stay = redis.hget(keys.ALERT_STAYS, alert_id)
    if stay is None:
        raise UnknownAlert(f"no alert {alert_id} is known to the worker (alert ids are in `medm2t alerts --json`)")
    return AlertAction(action_id=uuid.uuid4().hex, alert_id=alert_id, stay_id=int(stay), action=action, by=by,
                       reason=reason or None, snooze_minutes=snooze_minutes, at=datetime.utcnow())


def send(producer, action: AlertAction, timeout_s: float = 10.0) -> None:
    """Publish on a kafka-python producer (medm2t.kafka.make_producer), keyed by stay like every input."""
    producer.send(topics.ACTIONS, key=str(action.stay_id).encode(), value=action.model_dump_json().encode()).get(timeout_s)


def recorded(redis, action: AlertAction, timeout_s: float = 0.0) -> Alert | None:
    """The worker's record of `action` once it has applied it (polls up to timeout_s); None if not (yet)."""
    deadline = time.monotonic() + timeout_s
    record_id = action_record_id(action.action_id)
    while True:
        raw = redis.hget(keys.alert_by_id(action.stay_id), record_id)
        if raw is not None:
            return Alert.read(raw)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
