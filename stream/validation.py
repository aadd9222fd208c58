"""What the worker accepts from the input topic: strictly valid input events keyed by their stay, one per
message or several of one stay in an observation set (medm2t.events.ObservationSet). Anything else raises
InvalidMessage with a reason fit for a log line and the dead-letter topic: it names the field and the rule,
never the value. A bad member of a set is rejected on its own, with its index; its siblings still count."""
from __future__ import annotations

import json

from medm2t import topics
from medm2t.events import MAX_ID, MAX_MESSAGE_BYTES, MAX_SET_EVENTS, ObservationSet, Outcome, _Event, dump_event, parse_event

class InvalidMessage(ValueError):
    pass


def validate_message(value: bytes | None, key: bytes | None,
                     topic: str = topics.EVENTS) -> tuple[list[tuple[_Event, bytes]], list[str]]:
    """The input events of one message, each with the bytes it is stored as (a single event: exactly the
    bytes it arrived as; a set's member: as dump_event writes it), and why each rejected member of a set was
    rejected. Raises InvalidMessage when the message as a whole is unusable.

    A single event goes straight to parse_event; a set is read with json first, to take its members one by
    one (pydantic would reject the whole set for one bad member), and each member then goes to parse_event."""
    if value is not None and b"observation_set" in value:
        members = _set_members(value, key)
        if members is not None:
            return members
    event = _parse(value, key)
    _input(event)
    return [(event, bytes(value))], []


def validate_outcome(value: bytes | None, key: bytes | None) -> tuple[Outcome, bytes]:
    """What the outcome agent accepts from icu.outcomes.v1: one Outcome, keyed by its stay."""
    event = _parse(value, key)
    if not isinstance(event, Outcome):
        raise InvalidMessage(f"a {event.kind} event on {topics.OUTCOMES}: only outcomes belong there")
    return event, bytes(value)


def _set_members(value: bytes, key: bytes | None) -> tuple[list[tuple[_Event, bytes]], list[str]] | None:
    """An observation set's members and rejections; None if the message is not a set after all (an event
    whose text merely mentions one)."""
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message: larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        raise InvalidMessage("message: not valid JSON (or nested too deeply)") from None
    if not isinstance(doc, dict) or doc.get("kind") != "observation_set":
        return None
    if unknown := sorted(set(doc) - set(ObservationSet.model_fields)):
        raise InvalidMessage(f"observation set: unknown field {unknown[0]!r}")
    stay_id, events = doc.get("stay_id"), doc.get("events")
    if type(stay_id) is not int or not 1 <= stay_id <= MAX_ID:
        raise InvalidMessage(f"observation set: stay_id must be an integer from 1 to {MAX_ID}")
    if key is None or key != str(stay_id).encode():
        raise InvalidMessage("message key must be the observation set's stay_id (one stay, one partition, in order)")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_SET_EVENTS:
        raise InvalidMessage(f"observation set: events must be a list of 1 to {MAX_SET_EVENTS} events")
    good, rejected = [], []
    for i, member in enumerate(events):
        try:
            if not isinstance(member, dict):
                raise InvalidMessage("not a JSON object")
            try:
                text = json.dumps(member, separators=(",", ":"), ensure_ascii=False).encode()
            except (ValueError, RecursionError):  # a lone surrogate is a UnicodeEncodeError, a ValueError
                raise InvalidMessage("not valid UTF-8 (or nested too deeply)") from None
            event = _event(text)
            _input(event)
            if event.stay_id != stay_id:
                raise InvalidMessage("its stay_id is not the set's")
            # Stored, and de-duplicated, as the event alone would be by medm2t's producers (dump_event):
            # one event in a set and alone is the same event, not a conflict.
            good.append((event, dump_event(event)))
        except InvalidMessage as exc:
            rejected.append(f"observation set member {i}: {exc}")
    return good, rejected


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _input(event: _Event) -> None:
    if event.kind == "outcome":
        raise InvalidMessage(f"outcome events belong on {topics.OUTCOMES}; the worker never reads them")


def _parse(value: bytes | None, key: bytes | None) -> _Event:
    if value is None:
        raise InvalidMessage("empty message (no value)")
    event = _event(value)
    if key is None or key != str(event.stay_id).encode():
        raise InvalidMessage("message key must be the event's stay_id (one stay, one partition, in order)")
    return event


def _event(value: bytes) -> _Event:
    try:
        return parse_event(value)
    except ValueError as exc:  # InvalidEvent and pydantic's ValidationError are both ValueErrors
        raise InvalidMessage(getattr(exc, "reason", None) or _short(exc)) from None


def _short(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"invalid event: {where}: {first.get('msg')}"
    return f"invalid event: {type(exc).__name__}"
