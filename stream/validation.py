"""What the worker accepts from the input topic: one strictly valid input event per message, keyed by its
stay. Anything else raises InvalidMessage with a reason fit for a log line and the dead-letter topic: it
names the field and the rule, never the value."""
from __future__ import annotations

from medm2t import topics
from medm2t.events import Outcome, _Event, parse_event


class InvalidMessage(ValueError):
    pass


def validate_message(value: bytes | None, key: bytes | None, topic: str = topics.EVENTS) -> tuple[_Event, bytes]:
    """The event and the exact bytes it arrived as (stored as they are, so what passes can be read back)."""
    event = _parse(value, key)
    if event.kind == "outcome":
        raise InvalidMessage(f"outcome events belong on {topics.OUTCOMES}; the worker never reads them")
    return event, bytes(value)


def validate_outcome(value: bytes | None, key: bytes | None) -> tuple[Outcome, bytes]:
    """What the outcome agent accepts from icu.outcomes.v1: one Outcome, keyed by its stay."""
    event = _parse(value, key)
    if not isinstance(event, Outcome):
        raise InvalidMessage(f"a {event.kind} event on {topics.OUTCOMES}: only outcomes belong there")
    return event, bytes(value)


def _parse(value: bytes | None, key: bytes | None) -> _Event:
    if value is None:
        raise InvalidMessage("empty message (no value)")
    try:
        event = parse_event(value)
    except ValueError as exc:  # InvalidEvent and pydantic's ValidationError are both ValueErrors
        raise InvalidMessage(getattr(exc, "reason", None) or _short(exc)) from None
    if key is None or key != str(event.stay_id).encode():
        raise InvalidMessage("message key must be the event's stay_id (one stay, one partition, in order)")
    return event


def _short(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"invalid event: {where}: {first.get('msg')}"
    return f"invalid event: {type(exc).__name__}"
