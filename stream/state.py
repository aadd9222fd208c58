"""Per-stay state in Redis (layout: stream/keys.py), written only by the worker.

Every input event is applied by one Lua script, atomically: SADD its event_id to {stay:ID}:seen and, only if
it was new, apply it. A redelivered event therefore changes nothing but the `duplicates` counter.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Iterable, Sequence

from medm2t.events import Alert, Ecg, Measurement, RiskScore, StayOpened, _Event
from stream import keys
from stream.alerts import RuleState, rules_for, step
from stream.scoring import StayView

ECGS_KEPT = 4          # latest ECGs kept per stay (the model reads the most recent ones)
SCORE_HISTORY = 2000   # score updates kept per stay and scorer
STAY_ALERTS = 200      # alerts kept per stay
ALERT_FEED = 1000      # alerts kept in the ward feed
LATENCY_POINTS = 500

_APPLY = """
-- KEYS: seen meta events ecgs ward_active ward_stays counters
-- ARGV: event_id kind json epoch history_max ecgs_max stay_id subject_id available_iso wall
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  redis.call('HINCRBY', KEYS[7], 'duplicates', 1)
  return 0
end
local kind = ARGV[2]
local sid = ARGV[7]
if kind == 'measurement' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1) end
elseif kind == 'ecg' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
  local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[6])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1) end
elseif kind == 'stay_opened' then
  redis.call('HSET', KEYS[2], 'opened', ARGV[3])
elseif kind == 'stay_closed' then
  redis.call('HSET', KEYS[2], 'closed', '1')
end
redis.call('HSET', KEYS[2], 'stay_id', sid, 'subject_id', ARGV[8], 'last_wall', ARGV[10])
redis.call('HSETNX', KEYS[2], 'closed', '0')
redis.call('HINCRBY', KEYS[2], 'n_events', 1)
local last = redis.call('HGET', KEYS[2], 'last_time')
if (not last) or ARGV[9] > last then redis.call('HSET', KEYS[2], 'last_time', ARGV[9]) end
redis.call('SADD', KEYS[6], sid)
if redis.call('HGET', KEYS[2], 'closed') == '1' then
  redis.call('ZREM', KEYS[5], sid)
else
  redis.call('ZADD', KEYS[5], ARGV[10], sid)
end
redis.call('HINCRBY', KEYS[7], 'events_in', 1)
return 1
"""


def epoch(dt: datetime) -> float:
    """Seconds since 1970 of a naive source-clock datetime (read as UTC, only used for ordering)."""
    return dt.replace(tzinfo=timezone.utc).timestamp() if dt.tzinfo is None else dt.timestamp()


class StayStore:
    """Async access to the per-stay state (redis.asyncio client)."""

    def __init__(self, redis, history_max: int):
        self.r = redis
        self.history_max = history_max
        self._apply = redis.register_script(_APPLY)

    def _call(self, event: _Event) -> tuple[list[str], list]:
        sid = event.stay_id
        args = [event.event_id, event.kind, event.model_dump_json(), epoch(event.available_time), self.history_max,
                ECGS_KEPT, sid, event.subject_id, event.available_time.isoformat(), f"{time.time():.3f}"]
        ks = [keys.seen(sid), keys.meta(sid), keys.events(sid), keys.ecgs(sid), keys.WARD_ACTIVE, keys.WARD_STAYS,
              keys.COUNTERS]
        return ks, args

    async def apply(self, event: _Event) -> bool:
        """Apply one event idempotently. True if it was new."""
        ks, args = self._call(event)
        return bool(await self._apply(keys=ks, args=args))

    async def queue_apply(self, pipe, event: _Event) -> None:
        """Queue the same atomic apply on a pipeline (its reply is 1 if the event was new, else 0)."""
        ks, args = self._call(event)
        await self._apply(keys=ks, args=args, client=pipe)

    async def views(self, stay_ids: Sequence[int]) -> list[StayView]:
        pipe = self.r.pipeline(transaction=False)
        for sid in stay_ids:
            pipe.hgetall(keys.meta(sid))
            pipe.zrange(keys.events(sid), 0, -1)
            pipe.zrange(keys.ecgs(sid), 0, -1)
        replies = await pipe.execute()
        out = []
        for i, sid in enumerate(stay_ids):
            meta, evs, ecgs = replies[3 * i: 3 * i + 3]
            out.append(view_from(sid, meta, evs, ecgs))
        return out

    async def write(self, scores: Iterable[RiskScore], history_max: int = SCORE_HISTORY) -> list[Alert]:
        """Store latest scores + bounded history, advance the alert engine; returns the alerts raised."""
        scores = list(scores)
        pipe = self.r.pipeline(transaction=False)
        for s in scores:
            pipe.hgetall(keys.alert_state(s.stay_id))
        states = await pipe.execute()
        alerts: list[Alert] = []
        pipe = self.r.pipeline(transaction=False)
        for s, state in zip(scores, states):
            state = {_s(k): v for k, v in state.items()}
            raw = s.model_dump_json()
            pipe.set(keys.latest_score(s.stay_id, s.scorer), raw)
            hist = keys.score_history(s.stay_id, s.scorer)
            pipe.zadd(hist, {raw: epoch(s.scored_at)})
            pipe.zremrangebyrank(hist, 0, -history_max - 1)
            for rule in rules_for(s):
                field = f"{s.scorer}/{rule.key}"
                new, alert = step(rule, RuleState.loads(state.get(field)), s)
                pipe.hset(keys.alert_state(s.stay_id), field, new.dumps())
                if alert is not None:
                    a = alert.model_dump_json()
                    pipe.lpush(keys.stay_alerts(s.stay_id), a)
                    pipe.ltrim(keys.stay_alerts(s.stay_id), 0, STAY_ALERTS - 1)
                    pipe.lpush(keys.ALERT_FEED, a)
                    pipe.ltrim(keys.ALERT_FEED, 0, ALERT_FEED - 1)
                    alerts.append(alert)
        pipe.hincrby(keys.COUNTERS, "scores", len(scores))
        if alerts:
            pipe.hincrby(keys.COUNTERS, "alerts", len(alerts))
        await pipe.execute()
        return alerts

    async def count(self, name: str, n: int = 1) -> None:
        await self.r.hincrby(keys.COUNTERS, name, n)

    async def batch_done(self, latency_ms: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(keys.COUNTERS, "batches", 1)
        pipe.lpush(keys.LATENCY, f"{latency_ms:.1f}")
        pipe.ltrim(keys.LATENCY, 0, LATENCY_POINTS - 1)
        await pipe.execute()


def _s(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@lru_cache(maxsize=50_000)
def _measurement(raw: bytes | str) -> Measurement:
    # Each batch re-reads a stay's whole bounded history; parsing only what is new keeps per-event cost flat.
    return Measurement.model_validate_json(raw)


@lru_cache(maxsize=256)
def _ecg(raw: bytes | str) -> Ecg:
    return Ecg.model_validate_json(raw)


def view_from(stay_id: int, meta: dict, events: list, ecgs: list) -> StayView:
    """A StayView from the raw Redis replies (bytes or str)."""
    meta = {_s(k): _s(v) for k, v in meta.items()}
    opened = StayOpened.model_validate_json(meta["opened"]) if meta.get("opened") else None
    ms = sorted((_measurement(r) for r in events), key=lambda m: (m.available_time, m.time, m.event_id))
    es = sorted((_ecg(r) for r in ecgs), key=lambda e: (e.available_time, e.time, e.event_id))
    now = datetime.fromisoformat(meta["last_time"]) if meta.get("last_time") else (opened.available_time if opened else datetime.min)
    subject = int(meta.get("subject_id") or (opened.subject_id if opened else 0))
    return StayView(stay_id=stay_id, subject_id=subject, now=now, opened=opened, measurements=ms, ecgs=es)


def offline_view(events: Sequence[_Event], history_max: int) -> StayView:
    """The StayView the worker builds for a stay once all of `events` are applied (for tests and checks)."""
    inputs = [e for e in events if e.kind != "outcome"]
    opened = next((e for e in inputs if isinstance(e, StayOpened)), None)
    ms = sorted((e for e in inputs if isinstance(e, Measurement)), key=lambda m: (m.available_time, m.time, m.event_id))
    ecgs = sorted((e for e in inputs if isinstance(e, Ecg)), key=lambda e: (e.available_time, e.time, e.event_id))
    first = inputs[0]
    return StayView(stay_id=first.stay_id, subject_id=first.subject_id, now=max(e.available_time for e in inputs),
                    opened=opened, measurements=_keep_last(ms, history_max), ecgs=ecgs[-ECGS_KEPT:])


def _keep_last(ms: list[Measurement], n: int) -> list[Measurement]:
    # Redis trims the zset by rank: (epoch, member JSON) order, not (available_time, time, event_id).
    ranked = sorted(ms, key=lambda m: (epoch(m.available_time), m.model_dump_json()))
    kept = ranked[-n:] if n > 0 else []
    return sorted(kept, key=lambda m: (m.available_time, m.time, m.event_id))

