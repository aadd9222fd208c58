"""Live alert quality: were the alerts worth it? Figures per scorer over the stays whose outcome has arrived,
defined in docs/alert-quality.md. The outcome agent (stream/worker.py) is the only reader of icu.outcomes.v1:
it stores each Outcome in Redis, and the scorers never see it. The figures are computed from those outcomes and
the stays' alert audit trails: `medm2t report` computes them afresh, and a worker timer appends them to a
history whenever they change, which the dashboard shows (its newest point, and plots over time).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from medm2t.events import Alert, Outcome
from medm2t.vocabulary import Level
from stream import keys
from stream.scorers.news2 import STALE_VITALS
from stream.validation import InvalidMessage, validate_outcome

TECHNICAL_RULES = frozenset({STALE_VITALS})  # about the data, not the patient: not counted as alerts
FLAG_LEAD = timedelta(hours=2)
HISTORY_LENGTH = 2000
# How the report shows each figure: (label, key, format), for `medm2t report` and the dashboard.
ROWS = (("stays with an outcome", "stays", "{:d}"), ("patient-days", "patient_days", "{:.1f}"),
        ("alerts raised", "alerts", "{:d}"), ("alerts per patient-day", "alerts_per_patient_day", "{:.2f}"),
        ("stays alerted", "stays_alerted", "{:.0%}"),
        ("bed-time with an urgent+ alert open", "beds_urgent", "{:.0%}"), ("deaths", "deaths", "{:d}"),
        ("deaths flagged >= 2 h ahead", "deaths_flagged_2h", "{:.0%}"),
        ("  of them, count", "deaths_flagged_2h_count", "{:d}"),
        ("  deaths without a death time", "deaths_without_time", "{:d}"),
        ("median lead time (h)", "median_lead_hours", "{:.1f}"), ("PPV (urgent+ alerts)", "ppv", "{:.2f}"),
        ("urgent+ alerts", "urgent_alerts", "{:d}"), ("  acknowledged", "acknowledged", "{:.0%}"),
        ("  median minutes to acknowledge", "median_minutes_to_ack", "{:.0f}"))


@dataclass(frozen=True)
class ScorerQuality:
    """One scorer's figures; fractions are None when their denominator is empty (docs/alert-quality.md)."""

    stays: int                        # stays whose outcome has arrived
    patient_days: float               # their ICU days (Outcome icu_intime..icu_outtime)
    alerts: int                       # clinical alerts raised in those stays
    alerts_per_patient_day: float | None
    stays_alerted: float | None       # fraction of stays with at least one clinical alert
    deaths: int                       # in-hospital deaths among the stays
    deaths_flagged_2h: float | None   # fraction of deaths with an urgent+ alert >= 2 h before the death time
    deaths_flagged_2h_count: int
    deaths_without_time: int          # deaths with no death time: counted in `deaths`, never flagged
    median_lead_hours: float | None   # over deaths with an urgent+ alert before the death time
    ppv: float | None                 # of stays with an urgent+ alert, the fraction that died in hospital
    stays_flagged: int                # stays with an urgent+ alert and a known hospital outcome
    urgent_alerts: int                # alert episodes that reached urgent or emergency
    acknowledged: float | None        # fraction of those a person acknowledged
    median_minutes_to_ack: float | None  # clinical minutes from raised to the first acknowledgement
    beds_urgent: float | None = None  # share of occupied bed-time (ICU in to out) with an open urgent+ alert


def _icu_days(o: Outcome) -> float:
    if o.icu_intime is not None and o.icu_outtime is not None and o.icu_outtime >= o.icu_intime:
        return (o.icu_outtime - o.icu_intime).total_seconds() / 86400.0
    return o.los_days or 0.0


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _flags(a: Alert) -> bool:
    """The record says the stay was at an urgent or emergency level at `a.at`."""
    return Level(a.level).demands_response and a.state != "cleared"


def scorer_quality(scorer: str, outcomes: Sequence[Outcome], trails: dict[int, Sequence[Alert]]) -> ScorerQuality:
    """The figures for one scorer. `trails` maps stay_id to the stay's Alert records (any order, any scorer)."""
    alerts = raised_stays = 0
    deaths = flagged = without_time = 0
    leads: list[float] = []
    flagged_stays = flagged_died = 0
    episodes: dict[str, dict] = {}
    for o in outcomes:
        mine = sorted((a for a in trails.get(o.stay_id, ()) if a.scorer == scorer and a.task not in TECHNICAL_RULES),
                      key=lambda a: a.at)
        raised = [a for a in mine if a.state == "raised"]
        alerts += len(raised)
        raised_stays += bool(raised)
        first_flag = next((a.at for a in mine if _flags(a)), None)
        if first_flag is not None and o.hospital_death is not None:
            flagged_stays += 1
            flagged_died += o.hospital_death
        if o.hospital_death:
            deaths += 1
            if o.deathtime is None:
                without_time += 1
            elif first_flag is not None and first_flag <= o.deathtime:
                lead = o.deathtime - first_flag
                leads.append(lead.total_seconds() / 3600.0)
                flagged += lead >= FLAG_LEAD
        for a in mine:
            ep = episodes.setdefault(a.episode_id or a.alert_id, {"raised": None, "flagged": False, "ack": None})
            if a.state == "raised":
                ep["raised"] = a.at
            ep["flagged"] |= _flags(a)
            if a.state == "acknowledged" and ep["ack"] is None:
                ep["ack"] = a.at
    timed = [o for o in outcomes if o.icu_intime is not None and o.icu_outtime is not None and o.icu_outtime > o.icu_intime]
    bed_time = sum((o.icu_outtime - o.icu_intime).total_seconds() for o in timed)
    urgent_time = sum(_urgent_seconds(o, [a for a in trails.get(o.stay_id, ()) if a.scorer == scorer
                                         and a.task not in TECHNICAL_RULES]) for o in timed)
    urgent = [e for e in episodes.values() if e["flagged"] and e["raised"] is not None]
    acked = [(e["ack"] - e["raised"]).total_seconds() / 60.0 for e in urgent if e["ack"] is not None]
    days = sum(_icu_days(o) for o in outcomes)
    return ScorerQuality(
        stays=len(outcomes), patient_days=round(days, 4), alerts=alerts,
        alerts_per_patient_day=_ratio(alerts, days), stays_alerted=_ratio(raised_stays, len(outcomes)),
        deaths=deaths, deaths_flagged_2h=_ratio(flagged, deaths), deaths_flagged_2h_count=flagged,
        deaths_without_time=without_time, median_lead_hours=_median(leads),
        ppv=_ratio(flagged_died, flagged_stays), stays_flagged=flagged_stays,
        urgent_alerts=len(urgent), acknowledged=_ratio(len(acked), len(urgent)), median_minutes_to_ack=_median(acked),
        beds_urgent=_ratio(urgent_time, bed_time),
    )


def _urgent_seconds(o: Outcome, alerts: Sequence[Alert]) -> float:
    """Seconds of the stay's ICU time (in to out) during which any of its alerts was open at urgent or higher."""
    level: dict[str, bool] = {}  # episode -> open at urgent or higher after its latest record
    total, since = 0.0, None
    for a in sorted((a for a in alerts if a.state != "commented"), key=lambda a: a.at):  # a note changes nothing
        at = min(max(a.at, o.icu_intime), o.icu_outtime)
        level[a.episode_id or a.alert_id] = _flags(a)
        if any(level.values()) and since is None:
            since = at
        elif not any(level.values()) and since is not None:
            total, since = total + (at - since).total_seconds(), None
    if since is not None:
        total += (o.icu_outtime - since).total_seconds()
    return total


def figures(scorers: Iterable[str], outcomes: Sequence[Outcome], trails: dict[int, Sequence[Alert]]) -> dict[str, dict]:
    """{scorer: ScorerQuality as a dict} for every scorer named and every scorer that raised an alert."""
    names = set(scorers) | {a.scorer for trail in trails.values() for a in trail}
    return {name: asdict(scorer_quality(name, outcomes, trails)) for name in sorted(names)}


# ---- Redis: written by the worker's outcome agent and timer, read by `medm2t report` and the dashboard ------

async def record_outcomes(pipeline, messages) -> int:
    """The outcome agent's work on one chunk of icu.outcomes.v1: store each valid Outcome (the latest per stay
    wins, so redelivery is harmless), dead-letter the rest through the worker's pipeline. Returns how many."""
    good = []
    for msg in messages:
        try:
            good.append(validate_outcome(msg.value, msg.key))
        except InvalidMessage as exc:
            await pipeline.dead_letter(msg, str(exc))

    async def write():
        pipe = pipeline.store.r.pipeline(transaction=False)
        for outcome, raw in good:
            pipe.hset(keys.QUALITY_OUTCOMES, str(outcome.stay_id), raw)
        return await pipe.execute()

    if good:
        await pipeline.with_redis("store outcomes", write)
    return len(good)


class ReadCache:
    """What `read` parsed last time, so that a worker's history timer parses only what changed: each stay's
    outcome by its stored JSON, and its alert trail by its length (a trail only grows, by LPUSH, until it
    reaches keys.STAY_ALERTS_KEPT; a full one is read every time). Without it a timer at 10,000 stays read
    and parsed every outcome and alert every 10 s, 15 % of a worker's time (py-spy, bench stream)."""

    def __init__(self):
        self.outcomes: dict[bytes | str, tuple[bytes | str, Outcome]] = {}  # stay -> (JSON, Outcome)
        self.trails: dict[int, tuple[int, list[Alert]]] = {}               # stay -> (length, trail)

    def outcomes_of(self, r) -> list[Outcome]:
        stored = r.hgetall(keys.QUALITY_OUTCOMES)
        for stay, raw in stored.items():
            if self.outcomes.get(stay, (None,))[0] != raw:
                self.outcomes[stay] = (raw, Outcome.model_validate_json(raw))
        return [self.outcomes[stay][1] for stay in stored]

    def trails_of(self, r, outcomes: Sequence[Outcome]) -> dict[int, list[Alert]]:
        pipe = r.pipeline(transaction=False)
        for o in outcomes:
            pipe.llen(keys.stay_alerts(o.stay_id))
        lengths = dict(zip((o.stay_id for o in outcomes), pipe.execute()))
        stale = [sid for sid, n in lengths.items()
                 if n >= keys.STAY_ALERTS_KEPT or self.trails.get(sid, (None,))[0] != n]
        pipe = r.pipeline(transaction=False)
        for sid in stale:
            pipe.lrange(keys.stay_alerts(sid), 0, keys.STAY_ALERTS_KEPT - 1)
        for sid, raw in zip(stale, pipe.execute()):
            self.trails[sid] = (len(raw), [Alert.read(x) for x in raw])
        return {sid: self.trails[sid][1] for sid in lengths}


def read(r, cache: ReadCache | None = None) -> dict:
    """The current report from Redis (a sync client): {"outcomes": n, "at": wall clock, "scorers": figures}.
    `cache`: what an earlier call parsed (a timer's; see ReadCache)."""
    cache = cache or ReadCache()
    outcomes = cache.outcomes_of(r)
    trails = cache.trails_of(r, outcomes)
    prefix = keys.model_card("")
    scorers = [(k.decode() if isinstance(k, bytes) else k).removeprefix(prefix)
               for k in r.scan_iter(match=prefix + "*")]
    clinical = max((o.time for o in outcomes), default=None)
    return {"outcomes": len(outcomes), "at": datetime.utcnow().isoformat(timespec="seconds") + "Z",
            "clinical_at": clinical.isoformat() if clinical else None, "scorers": figures(scorers, outcomes, trails)}


def snapshot(r, every_s: float, cache: ReadCache | None = None) -> dict | None:
    """Append the current report to the history when its figures changed since the last point (outcomes
    arrive, and the worker may still be scoring their stays). Several workers share Redis: only one of them
    computes it per interval. The dashboard shows the newest point instead of recomputing on every refresh."""
    if not r.set(keys.QUALITY_LOCK, "1", nx=True, px=max(1, int(every_s * 1000 * 0.9))):
        return None
    report = read(r, cache)
    last = latest(r)
    if not report["outcomes"] or (last is not None and (last["outcomes"], last["scorers"]) ==
                                  (report["outcomes"], report["scorers"])):
        return None
    report["wall_s"] = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.rpush(keys.QUALITY_HISTORY, json.dumps(report))
    pipe.ltrim(keys.QUALITY_HISTORY, -HISTORY_LENGTH, -1)
    pipe.execute()
    return report


class HistoryTimer:
    """The worker's alert-quality history timer: a `snapshot` per tick, parsing only what changed (ReadCache),
    and never more than `share` of the worker's time. The figures are recomputed over every stay with an
    outcome (12 % of a worker's time at 10,000 stays even with the cache; py-spy, bench stream), so a
    snapshot that took longer spaces out the next ones; a small ward keeps its point every tick."""

    def __init__(self, r, every_s: float, share: float, clock=time.monotonic):
        self.r, self.every_s, self.share, self.clock = r, every_s, share, clock
        self.cache = ReadCache()
        self.start, self.took = -float("inf"), 0.0  # the last snapshot's start (clock) and seconds

    def tick(self) -> dict | None:
        """Take a snapshot unless the last one's cost says wait; returns what `snapshot` returns."""
        if self.clock() - self.start < self.took / self.share:
            return None
        self.start = self.clock()
        try:
            return snapshot(self.r, self.every_s, self.cache)
        finally:
            self.took = self.clock() - self.start


def latest(r) -> dict | None:
    raw = r.lindex(keys.QUALITY_HISTORY, -1)
    return None if raw is None else json.loads(raw)


def history(r) -> list[dict]:
    return [json.loads(x) for x in r.lrange(keys.QUALITY_HISTORY, 0, -1)]
