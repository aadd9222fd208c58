"""Everything the dashboard reads from Redis, in one place, through the key layout of stream/keys.py.

Reads are bounded (the last N history points, the first N alerts) so that a page costs the same after
hours of running as after minutes. A malformed entry is skipped and reported in `problems` with the
key it came from; it never hides the good entries beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime

import redis
from pydantic import BaseModel, ValidationError

from medm2t.cards import ModelCard, TaskCard
from medm2t.connections import redis_sync
from medm2t.events import Alert, Ecg, Measurement, RiskScore, StayOpened
from medm2t.settings import with_overrides
from medm2t.vocabulary import Level
from stream import keys
from stream.alerts import signal_of
from stream.policy import DEFAULT_POLICY, AlertPolicy

BOARD_ROWS = 100           # highest-risk stays drawn on the ward board
SPARK_POINTS = 48          # history points drawn in a ward-board sparkline
TRAJECTORY_POINTS = 2000   # history points drawn on the patient page
FEED_ALERTS = keys.ALERT_FEED_LENGTH  # the alert feed shows every alert the worker keeps
STAY_ALERTS_READ = 50      # newest alerts read per stay
LATENCY_POINTS = 500
# Seconds of wall-clock silence after which a stay's data is flagged stale. The worker stamps `last_wall`
# when data arrives, so this measures the feed, whatever the replay speed.
STALE_AFTER_S = 120.0


def connect(url: str | None = None, settings=None) -> redis.Redis:
    """A client for `url` (default: settings.redis_url) with the password medm2t.connections resolves, that
    fails fast (the page retries on its own refresh) instead of hanging the page."""
    if settings is None:
        from medm2t.settings import get_settings

        settings = get_settings()
    if url is not None:
        settings = with_overrides(settings, redis_url=url)
    return redis_sync(settings, decode_responses=True, socket_connect_timeout=1.5, socket_timeout=3)


@dataclass
class StayRow:
    """One bed on the ward board."""

    stay_id: int
    subject_id: int | None
    opened: StayOpened | None
    last_time: datetime | None        # clinical clock of the newest data
    last_wall: float | None           # epoch seconds when that data arrived
    scores: dict[str, RiskScore]      # latest score per scorer
    history: dict[str, list[RiskScore]]
    alerts: list[Alert]               # every alert record (the audit trail), newest first

    @property
    def open_alerts(self) -> list[Alert]:
        return open_alerts(self.alerts)

    @property
    def hours_since_admission(self) -> float | None:
        if self.opened is not None and self.last_time is not None:
            return (self.last_time - self.opened.time).total_seconds() / 3600
        for score in self.scores.values():
            if score.hours_since_admission is not None:
                return score.hours_since_admission
        return None

    def age_s(self, now_wall: float) -> float | None:
        return None if self.last_wall is None else max(0.0, now_wall - self.last_wall)

    def stale(self, now_wall: float) -> bool:
        age = self.age_s(now_wall)
        return age is None or age > STALE_AFTER_S

    def task(self, scorer: str, task: str):
        score = self.scores.get(scorer)
        return None if score is None else score.tasks.get(task)

    def raised_record(self, alert: Alert) -> Alert:
        """The record that raised `alert` (any record of it); the record itself if that one is not read."""
        return next((a for a in self.alerts if a.alert_id == alert.episode_id), alert)

    def chips(self, long: bool = False, policy: AlertPolicy | None = None) -> list[str]:
        """The open alerts as badges, worst first. With the policy, an alert whose newest value is back under
        its level's threshold says it is resolving (it does not escalate while it waits to clear)."""
        from dashboard.format import alert_chip

        ranked = sorted(self.open_alerts, key=lambda a: Level.rank_of(a.level), reverse=True)
        return [alert_chip(a, self.current_value(a), self.raised_record(a), long, self._resolving(a, policy),
                           self.last_time) for a in ranked]

    def _resolving(self, alert: Alert, policy: AlertPolicy | None) -> bool:
        current = self.current_value(alert)
        threshold = policy.rule(alert.scorer, alert.task).raise_at(alert.level) if policy else None
        return current is not None and threshold is not None and current < threshold

    def current_value(self, alert: Alert) -> float | None:
        """The alert's signal in the stay's newest score (an alert's own value is the one at its transition)."""
        score = self.scores.get(alert.scorer)
        signal = signal_of(alert.scorer, alert.task) if score else None
        return None if signal is None else signal(score)

    def risk_key(self, cards: dict[str, ModelCard]) -> tuple:
        """Sort key, highest risk first after reverse: the worst open alert, then each board task in card order
        (its band where it has bands, then its value). `sort_rule` says it in words."""
        key: list = [max((Level.rank_of(a.level) for a in self.open_alerts), default=0)]
        for scorer, task in board_tasks(cards):
            score = self.task(scorer, task.name)
            key += [task.bands.index(score.band) if score and score.band in task.bands else -1,
                    score.value if score else -1.0]
        return tuple(key)


def board_tasks(cards: dict[str, ModelCard]) -> list[tuple[str, TaskCard]]:
    """(scorer, task) of every ward-board column, in card order."""
    return [(scorer, t) for scorer, card in cards.items() for t in card.tasks if t.board]


def sort_rule(cards: dict[str, ModelCard]) -> str:
    """The ward board's order in words, from the cards."""
    parts = ["worst open alert"] + [f"{cards[s].name} {t.display}" + (" band, then its value" if t.bands else "")
                                    for s, t in board_tasks(cards)]
    return ", then ".join(parts)


@dataclass
class Reader:
    """Reads from one Redis; collects parse problems as it goes (shown once on the page)."""

    r: redis.Redis
    problems: list[str] = field(default_factory=list)
    _cards: dict[str, ModelCard] | None = None

    def _parse(self, model: type[BaseModel], raw: str | None, where: str):
        if raw is None:
            return None
        try:
            return model.read(raw) if model is Alert else model.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            self.problems.append(f"{where}: skipped a malformed {model.__name__} "
                                 f"({'.'.join(map(str, first['loc']))}: {first['msg']})")
            return None

    def _parse_all(self, model: type[BaseModel], raws: list[str], where: str) -> list:
        return [x for x in (self._parse(model, raw, where) for raw in raws) if x is not None]

    # ---- ward ------------------------------------------------------------------------------------------

    def active_stay_ids(self) -> list[int]:
        ids = []
        for raw in self.r.zrange(keys.WARD_ACTIVE, 0, -1):
            try:
                ids.append(int(raw))
            except ValueError:
                self.problems.append(f"{keys.WARD_ACTIVE}: skipped member {raw!r} (not a stay id)")
        return ids

    def ward(self, limit: int = BOARD_ROWS, history_points: int = SPARK_POINTS) -> list[StayRow]:
        """Every active stay, highest risk first. Ranking needs only the latest scores, so sparkline history
        is read for the first `limit` rows alone (the ones the board draws)."""
        ids = self.active_stay_ids()
        cards = self.cards()
        scorers = list(cards)
        pipe = self.r.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(keys.meta(sid))
            if scorers:  # none before the worker has published its model cards
                pipe.mget([keys.latest_score(sid, scorer) for scorer in scorers])
            pipe.lrange(keys.stay_alerts(sid), 0, STAY_ALERTS_READ - 1)
        replies = iter(pipe.execute()) if ids else iter(())
        rows = []
        for sid in ids:
            meta = next(replies)
            latest = next(replies) if scorers else []
            alerts = next(replies)
            scores = {scorer: score for scorer, raw in zip(scorers, latest)
                      if (score := self._parse(RiskScore, raw, keys.latest_score(sid, scorer))) is not None}
            rows.append(self._row(sid, meta, scores, {scorer: [] for scorer in scorers},
                                  self._parse_all(Alert, alerts, keys.stay_alerts(sid))))
        rows.sort(key=lambda row: row.risk_key(cards), reverse=True)
        shown = rows[:limit]
        pipe = self.r.pipeline(transaction=False)
        for row in shown:
            for scorer in scorers:
                pipe.zrange(keys.score_history(row.stay_id, scorer), -history_points, -1)
        replies = iter(pipe.execute()) if shown and scorers else iter(())
        for row in shown:
            for scorer in scorers:
                row.history[scorer] = self._parse_all(RiskScore, next(replies), keys.score_history(row.stay_id, scorer))
        return rows

    def _row(self, sid: int, meta: dict, scores: dict, history: dict, alerts: list[Alert]) -> StayRow:
        where = keys.meta(sid)
        last_time = last_wall = subject = None
        try:
            last_time = datetime.fromisoformat(meta["last_time"]) if meta.get("last_time") else None
            last_wall = float(meta["last_wall"]) if meta.get("last_wall") else None
            subject = int(meta["subject_id"]) if meta.get("subject_id") else None
        except ValueError as exc:
            self.problems.append(f"{where}: unreadable field ({exc})")
        opened = self._parse(StayOpened, meta.get("opened"), where)
        if subject is None and opened is not None:
            subject = opened.subject_id
        return StayRow(sid, subject, opened, last_time, last_wall, scores, history, alerts)

    # ---- one stay --------------------------------------------------------------------------------------

    def stay(self, stay_id: int) -> StayRow | None:
        """One stay with its full (bounded) score history; None when Redis knows nothing of it."""
        scorers = list(self.cards())
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.meta(stay_id))
        for scorer in scorers:
            pipe.get(keys.latest_score(stay_id, scorer))
            pipe.zrange(keys.score_history(stay_id, scorer), -TRAJECTORY_POINTS, -1)
        pipe.lrange(keys.stay_alerts(stay_id), 0, STAY_ALERTS_READ - 1)
        replies = iter(pipe.execute())
        meta = next(replies)
        scores, history = {}, {}
        for scorer in scorers:
            latest = self._parse(RiskScore, next(replies), keys.latest_score(stay_id, scorer))
            if latest is not None:
                scores[scorer] = latest
            history[scorer] = self._parse_all(RiskScore, next(replies), keys.score_history(stay_id, scorer))
        alerts = self._parse_all(Alert, next(replies), keys.stay_alerts(stay_id))
        if not meta and not scores:
            return None
        return self._row(stay_id, meta, scores, history, alerts)

    def measurements(self, stay_id: int) -> list[Measurement]:
        return self._parse_all(Measurement, self.r.zrange(keys.events(stay_id), 0, -1), keys.events(stay_id))

    def recent_ecgs(self, stay_id: int, n: int = 2) -> list[Ecg]:
        """The stay's newest `n` ECGs, newest first."""
        raws = self.r.zrange(keys.ecgs(stay_id), -n, -1)
        return self._parse_all(Ecg, raws, keys.ecgs(stay_id))[::-1]

    # ---- feed and system -------------------------------------------------------------------------------

    def alert_feed(self, n: int = FEED_ALERTS) -> list[Alert]:
        return self._parse_all(Alert, self.r.lrange(keys.ALERT_FEED, 0, n - 1), keys.ALERT_FEED)

    def beds(self, stay_ids) -> dict[int, str]:
        """stay id -> bed label, from each stay's StayOpened, where the source gives a bed (one round trip)."""
        ids = sorted(set(stay_ids))
        pipe = self.r.pipeline(transaction=False)
        for sid in ids:
            pipe.hget(keys.meta(sid), "opened")
        out = {}
        for sid, raw in zip(ids, pipe.execute() if ids else []):
            opened = self._parse(StayOpened, raw, keys.meta(sid))
            if opened is not None and opened.bed:
                out[sid] = opened.bed
        return out

    def counters(self) -> dict[str, float]:
        out = {}
        for name, raw in self.r.hgetall(keys.COUNTERS).items():
            try:
                out[name] = float(raw)
            except ValueError:
                self.problems.append(f"{keys.COUNTERS}: field {name!r} is not a number ({raw!r})")
        return out

    def latencies_ms(self) -> list[float]:
        out = []
        for raw in self.r.lrange(keys.LATENCY, 0, LATENCY_POINTS - 1):
            try:
                out.append(float(raw))
            except ValueError:
                self.problems.append(f"{keys.LATENCY}: skipped {raw!r} (not a number)")
        return out

    def model_cards(self) -> dict[str, dict]:
        """scorer name -> model card (parsed JSON), from models:SCORER."""
        names = sorted(k.split(":", 1)[1] for k in self.r.scan_iter(match=keys.model_card("*"), count=100))
        cards = {}
        for name, raw in zip(names, self.r.mget([keys.model_card(n) for n in names]) if names else []):
            if raw is None:
                continue
            try:
                card = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.problems.append(f"{keys.model_card(name)}: not JSON ({exc.msg} at char {exc.pos})")
                continue
            cards[name] = card if isinstance(card, dict) else {"value": card}
        return cards

    def cards(self) -> dict[str, ModelCard]:
        """scorer -> typed model card, in card order: the scorers the pages show. Read once per page."""
        if self._cards is None:
            typed = {}
            for name, raw in self.model_cards().items():
                try:
                    typed[name] = ModelCard.model_validate(raw)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    self.problems.append(f"{keys.model_card(name)}: skipped a malformed model card "
                                         f"({'.'.join(map(str, first['loc']))}: {first['msg']})")
            self._cards = dict(sorted(typed.items(), key=lambda kv: (kv[1].order, kv[0])))
        return self._cards

    def scorer_name(self, scorer: str) -> str:
        """A scorer's name as its model card gives it ('MedM2T', 'NEWS2'); its key in capitals without a card."""
        card = self.cards().get(scorer)
        return card.name if card else scorer.upper()

    def alert_policy(self) -> AlertPolicy:
        """The alert policy the workers published (alerts:policy); the built-in one until they have."""
        raw = self.r.get(keys.ALERT_POLICY)
        policy = self._parse(AlertPolicy, raw, keys.ALERT_POLICY) if raw else None
        return policy or DEFAULT_POLICY

    def feed_age_s(self) -> float | None:
        """Wall-clock seconds since any stay last received data (None: no active stay)."""
        newest = self.r.zrange(keys.WARD_ACTIVE, -1, -1, withscores=True)
        return max(0.0, time.time() - newest[0][1]) if newest else None


def open_alerts(alerts: list[Alert]) -> list[Alert]:
    """The alerts still open: per (scorer, task), the newest record unless it is 'cleared' (each record carries
    the alert's lifecycle as of then; a comment changes nothing, so it is skipped). `alerts` is newest first,
    as the worker stores it."""
    newest: dict[tuple[str, str], Alert] = {}
    for alert in alerts:
        if alert.state != "commented":
            newest.setdefault((alert.scorer, alert.task), alert)
    return [a for a in newest.values() if a.state != "cleared"]
