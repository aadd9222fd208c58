"""Per-stay state in Redis (layout: stream/keys.py), written only by the worker, one stay per script call.

Two Lua scripts, each touching only one stay's hash-tagged keys (so they run unchanged on Redis Cluster):

* APPLY, once per stay per ingested chunk: deduplicate each event by event_id (the same id with other bytes
  is a conflict, never silently dropped), give it its effective scoring point (docs/scoring-contract.md) and
  store it. Pending work is durable by construction: a stay's unscored points are the stored events after its
  `scored` mark, written in the same atomic call that stored the events.
* COMMIT, once per stay per scoring batch: latest scores, score history, alert state and alerts, the new
  `scored` mark, and trimming to what the scorers need (`Needs`).

Global keys (ward lists, counters, input offsets, the alert feed) are written outside these scripts, by
`note_chunk` and `note_batch`, queued on the same pipelines as APPLY and COMMIT (one round trip each).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

from medm2t.events import Ecg, Measurement, StayOpened, _Event
from stream import keys
from stream.scoring import Needs

# Queued as a raw command: redis-py's cluster pipeline refuses its evalsha() method, yet routes an EVALSHA
# whose keys share one slot (each call here touches one stay's {stay:N} keys) like any other command.
EVALSHA = "EVALSHA"

LATENCY_POINTS = 500
_EPOCH = datetime(1970, 1, 1)

_APPLY = """
-- KEYS: meta ids events ecgs
-- ARGV: stay_id subject_id partition last_wall n, then n x (event_id digest kind avail floor raw)
local clock = tonumber(redis.call('HGET', KEYS[1], 'clock') or '-1e18')
local out, new = {}, 0
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  local b = 6 + i * 6
  local id, digest, kind = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local seen = redis.call('HGET', KEYS[2], id)
  if seen then
    local first, first_at = string.match(seen, '^([^@]*)@?(.*)$')
    if first ~= digest then out[#out + 1] = '-1'
    elseif first_at ~= '' then out[#out + 1] = '=' .. first_at
    else out[#out + 1] = '0' end
  else
    local eff = math.max(tonumber(ARGV[b + 3]), clock, tonumber(ARGV[b + 4]))
    clock = eff
    local at = string.format('%.6f', eff)
    redis.call('HSET', KEYS[2], id, digest .. '@' .. at)
    if kind == 'measurement' then redis.call('ZADD', KEYS[3], at, ARGV[b + 5])
    elseif kind == 'ecg' then redis.call('ZADD', KEYS[4], at, ARGV[b + 5])
    elseif kind == 'stay_opened' then redis.call('HSET', KEYS[1], 'opened', ARGV[b + 5], 'opened_at', at)
    elseif kind == 'stay_closed' then redis.call('HSET', KEYS[1], 'closed', '1', 'closed_at', at)
    end
    new = new + 1
    out[#out + 1] = at
  end
end
redis.call('HSET', KEYS[1], 'stay_id', ARGV[1], 'subject_id', ARGV[2], 'partition', ARGV[3], 'last_wall', ARGV[4])
redis.call('HSETNX', KEYS[1], 'closed', '0')
if new > 0 then
  redis.call('HSET', KEYS[1], 'clock', string.format('%.6f', clock))
  redis.call('HINCRBY', KEYS[1], 'n_events', new)
end
return out
"""



def _store_alerts(state_key: int, list_key: int, by_id_key: int, meta_key: int) -> str:
    """Lua shared by COMMIT and RECORD: the stay's next alert timer into its meta, rule states into one hash,
    alert records onto the stay's list (newest first) and into its by-id hash; the arguments are the KEYS
    indices of the four."""
    return f"""
redis.call('HSET', KEYS[{meta_key}], 'timer', ARGV[a]); a = a + 1
local n_state = tonumber(ARGV[a]); a = a + 1
for i = 0, n_state - 1 do redis.call('HSET', KEYS[{state_key}], ARGV[a], ARGV[a + 1]); a = a + 2 end
local n_alerts = tonumber(ARGV[a]); a = a + 1
for i = 0, n_alerts - 1 do
  redis.call('LPUSH', KEYS[{list_key}], ARGV[a + 1]); redis.call('HSET', KEYS[{by_id_key}], ARGV[a], ARGV[a + 1]); a = a + 2
end
if n_alerts > 0 then redis.call('LTRIM', KEYS[{list_key}], 0, {keys.STAY_ALERTS_KEPT} - 1) end
"""

_COMMIT = """
-- KEYS: meta events ecgs alertstate alerts alertbyid, then per scorer: latest history
-- ARGV: scored scored_iso n_inputs lookback_s ecgs_keep band n_scorers,
--       per scorer: name n_hist latest (n_hist x (epoch json)),
--       timer, n_state (n_state x (field json)), n_alerts (n_alerts x (alert_id json))
local scored = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'scored', ARGV[1], 'last_time', ARGV[2], 'n_inputs', ARGV[3], 'band', ARGV[6])
local lookback = tonumber(ARGV[4])
if lookback >= 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.6f', scored - lookback)) end
local keep = tonumber(ARGV[5])
local old = redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1]) - keep
if old > 0 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, old - 1) end
local a = 8
for s = 0, tonumber(ARGV[7]) - 1 do
  local name, n_hist, latest = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  local hist = KEYS[8 + 2 * s]
  for h = 0, n_hist - 1 do
    redis.call('ZADD', hist, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  if n_hist > 0 then
    redis.call('SET', KEYS[7 + 2 * s], latest)
    redis.call('HSET', KEYS[1], 'scored:' .. name, ARGV[a - 2])
    redis.call('ZREMRANGEBYRANK', hist, 0, -HISTORY - 1)
  end
end
STORE_ALERTS
return 1
""".replace("STORE_ALERTS", _store_alerts(4, 5, 6, 1)).replace("HISTORY", str(keys.SCORE_HISTORY_KEPT))

_RECORD = """
-- What people did with a stay's alerts: the rules' new states, the action records, and the action ids applied.
-- KEYS: alertstate alerts alertbyid actions meta
-- ARGV: timer, n_state (n_state x (field json)), n_alerts (n_alerts x (alert_id json)), n_actions (n x (action_id alert_id))
local a = 1
STORE_ALERTS
local n_actions = tonumber(ARGV[a]); a = a + 1
for i = 0, n_actions - 1 do redis.call('HSET', KEYS[4], ARGV[a], ARGV[a + 1]); a = a + 2 end
return 1
""".replace("STORE_ALERTS", _store_alerts(1, 2, 3, 5))


def epoch(dt: datetime) -> float:
    """Seconds since 1970 of a naive source-clock datetime (read as UTC; used for ordering and Redis scores)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone().replace(tzinfo=None)
    return (dt - _EPOCH).total_seconds()


def from_epoch(raw: str | bytes | float) -> datetime:
    """The exact datetime of an epoch written with 6 decimals (str) or a Redis score (float)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if isinstance(text, float):
        text = f"{text:.6f}"
    whole, _, frac = text.partition(".")
    return _EPOCH + timedelta(seconds=int(whole), microseconds=int((frac + "000000")[:6]) if frac else 0)


def stamp(dt: datetime) -> str:
    return f"{epoch(dt):.6f}"


@dataclass
class Incoming:
    """One validated event with the bytes it arrived as, and where its point may start (see the contract)."""

    event: _Event
    raw: bytes
    digest: str
    floor: float   # epoch: the event's point is never earlier than this


@dataclass
class StoredStay:
    """What Redis holds of one stay, as the worker needs it to rebuild its in-memory state."""

    stay_id: int
    meta: dict[str, str]
    events: list[tuple[datetime, _Event]]     # (effective point, event): the stored StayOpened, measurements, ECGs
    alert_state: dict[str, str] = field(default_factory=dict)

    def mark(self, name: str) -> datetime | None:
        raw = self.meta.get(name)
        return from_epoch(raw) if raw else None


class StayStore:
    """Async access to the per-stay state (a redis.asyncio client)."""

    def __init__(self, redis, needs: Sequence[Needs]):
        self.r = redis
        lookbacks = [n.lookback for n in needs]
        # The store keeps what the most demanding scorer reads: the whole stay if any reads it all.
        self.lookback = None if not lookbacks or None in lookbacks else max(lookbacks)
        self.ecgs_keep = max([n.ecgs for n in needs], default=0)
        # Called by SHA inside pipelines (a registered Script would re-check SCRIPT EXISTS on every pipeline).
        self._apply = redis.register_script(_APPLY)
        self._commit = redis.register_script(_COMMIT)
        self._record = redis.register_script(_RECORD)

    async def load_scripts(self) -> None:
        """Load the scripts into Redis (again after a Redis restart emptied its script cache)."""
        for script in (self._apply, self._commit, self._record):
            await self.r.script_load(script.script)

    def apply(self, pipe, stay_id: int, subject_id: int, partition: int | None,
                    items: Sequence[Incoming]) -> None:
        """Queue one stay's APPLY on a pipeline. Its reply: per item '-1' (conflict), the effective point of
        a new event (epoch, 6 decimals), or '=' and the point it was first applied at for a duplicate
        ('0' for one stored before points were recorded with ids)."""
        args: list = [stay_id, subject_id, -1 if partition is None else partition, f"{time.time():.3f}", len(items)]
        for it in items:
            e = it.event
            args += [e.event_id, it.digest, e.kind, stamp(e.available_time), f"{it.floor:.6f}", it.raw]
        ks = [keys.meta(stay_id), keys.ids(stay_id), keys.events(stay_id), keys.ecgs(stay_id)]
        pipe.execute_command(EVALSHA, self._apply.sha, len(ks), *ks, *args)

    def commit(self, pipe, stay_id: int, scored: datetime, n_inputs: int, band: str | None,
                     per_scorer: dict[str, list[tuple[datetime, str]]], alert_state: dict[str, str],
                     alerts: Sequence[tuple[str, str]], timer: datetime | None) -> None:
        """Queue one stay's COMMIT: the scores of its points up to `scored` ((scored_at, JSON) per scorer, in
        point order), its alert records ((alert_id, JSON), oldest first) and its next alert timer."""
        ks = [keys.meta(stay_id), keys.events(stay_id), keys.ecgs(stay_id), keys.alert_state(stay_id),
              keys.stay_alerts(stay_id), keys.alert_by_id(stay_id)]
        lookback = -1 if self.lookback is None else self.lookback.total_seconds()
        args: list = [stamp(scored), scored.isoformat(), n_inputs, lookback, self.ecgs_keep, band or "",
                      len(per_scorer)]
        for name, scores in per_scorer.items():
            ks += [keys.latest_score(stay_id, name), keys.score_history(stay_id, name)]
            args += [name, len(scores), scores[-1][1] if scores else ""]
            for scored_at, raw in scores:
                args += [stamp(scored_at), raw]
        args += _alert_args(timer, alert_state, alerts)
        pipe.execute_command(EVALSHA, self._commit.sha, len(ks), *ks, *args)

    def record(self, pipe, stay_id: int, alert_state: dict[str, str], alerts: Sequence[tuple[str, str]],
               actions: dict[str, str], timer: datetime | None) -> None:
        """Queue one stay's RECORD of people's actions: rule states, action records ((alert_id, JSON), oldest
        first) and the ids of the actions applied (action_id -> alert_id), in one atomic call."""
        ks = [keys.alert_state(stay_id), keys.stay_alerts(stay_id), keys.alert_by_id(stay_id), keys.actions(stay_id),
              keys.meta(stay_id)]
        args = _alert_args(timer, alert_state, alerts) + [len(actions)]
        for action_id, alert_id in actions.items():
            args += [action_id, alert_id]
        pipe.execute_command(EVALSHA, self._record.sha, len(ks), *ks, *args)

    async def acted_on(self, stay_id: int, action_id: str, alert_id: str) -> tuple[bool, str | None]:
        """Whether an action was applied already, and the JSON of the alert record it names (None: unknown)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hexists(keys.actions(stay_id), action_id)
        pipe.hget(keys.alert_by_id(stay_id), alert_id)
        done, raw = await pipe.execute()
        return bool(done), None if raw is None else _s(raw)

    async def load(self, stay_ids: Sequence[int]) -> list[StoredStay]:
        pipe = self.r.pipeline(transaction=False)
        for sid in stay_ids:
            pipe.hgetall(keys.meta(sid))
            pipe.zrange(keys.events(sid), 0, -1, withscores=True)
            pipe.zrange(keys.ecgs(sid), 0, -1, withscores=True)
            pipe.hgetall(keys.alert_state(sid))
        replies = await pipe.execute()
        out = []
        for i, sid in enumerate(stay_ids):
            meta, evs, ecgs, alert_state = replies[4 * i: 4 * i + 4]
            out.append(_stored(sid, meta, evs, ecgs, alert_state))
        return out

    async def input_offsets(self) -> dict[int, int]:
        return {int(p): int(o) for p, o in (await self.r.hgetall(keys.OFFSETS)).items()}

    async def pending_stays(self) -> dict[int, int]:
        """stay_id -> partition of every stay with events after its scored mark or an alert timer to run (read on
        start and rebalance)."""
        metas = [k async for k in self.r.scan_iter(match="{stay:*}:meta", count=1000)]
        out: dict[int, int] = {}
        for start in range(0, len(metas), 500):
            pipe = self.r.pipeline(transaction=False)
            for k in metas[start:start + 500]:
                pipe.hmget(k, "stay_id", "partition", "clock", "scored", "timer")
            for sid, part, clock, scored, timer in await pipe.execute():
                if sid and clock and (not scored or float(clock) > float(scored) or timer):
                    out[int(sid)] = int(part) if part is not None else -1
        return out

    def note_chunk(self, pipe, active: dict[int, bool], counts: dict[str, int], offsets: dict[int, int]) -> None:
        """Queue a chunk's global, non-atomic bookkeeping: the ward lists and counters (dashboard), and the last
        input offset delivered per partition (a worker gaining a partition judges from it whether it is
        caught up)."""
        now = time.time()
        if offsets:
            pipe.hset(keys.OFFSETS, mapping=offsets)
        for sid, closed in active.items():
            pipe.sadd(keys.WARD_STAYS, sid)
            if closed:
                pipe.zrem(keys.WARD_ACTIVE, sid)
            else:
                pipe.zadd(keys.WARD_ACTIVE, {sid: now})
        self.note_counts(pipe, counts)

    @staticmethod
    def note_counts(pipe, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            if n:
                pipe.hincrby(keys.COUNTERS, name, n)

    def note_batch(self, pipe, alerts: Sequence[tuple[int, str, str]], counts: dict[str, int],
                   latency_ms: float | None = None) -> None:
        """Queue a batch's global bookkeeping: the ward's alert feed and the index from alert to stay
        ((stay_id, alert_id, JSON) per record), counters, and the scoring batch's time."""
        for stay_id, alert_id, raw in alerts:
            pipe.lpush(keys.ALERT_FEED, raw)
            pipe.hset(keys.ALERT_STAYS, alert_id, stay_id)
        pipe.ltrim(keys.ALERT_FEED, 0, keys.ALERT_FEED_LENGTH - 1)
        self.note_counts(pipe, counts)
        if latency_ms is not None:
            pipe.lpush(keys.LATENCY, f"{latency_ms:.1f}")
            pipe.ltrim(keys.LATENCY, 0, LATENCY_POINTS - 1)

def _alert_args(timer: datetime | None, alert_state: dict[str, str], alerts: Sequence[tuple[str, str]]) -> list:
    args: list = ["" if timer is None else stamp(timer), len(alert_state)]
    for k, v in alert_state.items():
        args += [k, v]
    args.append(len(alerts))
    for alert_id, raw in alerts:  # LPUSH in this order: the newest ends up first
        args += [alert_id, raw]
    return args


def _s(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _stored(sid: int, meta: dict, evs: list, ecgs: list, alert_state: dict) -> StoredStay:
    meta = {_s(k): _s(v) for k, v in meta.items()}
    events: list[tuple[datetime, _Event]] = []
    if meta.get("opened"):
        events.append((from_epoch(meta["opened_at"]), StayOpened.model_validate_json(meta["opened"])))
    events += [(from_epoch(score), Measurement.model_validate_json(raw)) for raw, score in evs]
    events += [(from_epoch(score), Ecg.model_validate_json(raw)) for raw, score in ecgs]
    return StoredStay(sid, meta, events, {_s(k): _s(v) for k, v in alert_state.items()})
