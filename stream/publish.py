"""Publish, then commit: a part of the Pipeline (stream/pipeline.py). A batch's scores (and their FHIR
RiskAssessments) and the alert records they and the stays' alert timers make are sent, and only once the
broker has them are they COMMITted to Redis with the stays' marks, in one round trip. A crash in between
only republishes the same scores and alerts under the same ids (docs/scoring-contract.md).

A mixin of Pipeline: it uses the pipeline's store, send, rules, clocks, state lock and counters.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from medm2t import topics
from medm2t.events import Alert, RiskScore, make_event_id
from medm2t.fhir import risk_assessment_json
from stream import metrics
from stream.alerts import RuleState, advance, run_timers
from stream.runtime import StayRuntime
from stream.scheduler import Taken


class Publish:
    async def _send_alert(self, key: bytes, alert: Alert, raw: str) -> list:
        """Send one alert record on its topic, and as v1 on the deprecated topic (docs/schemas.md)."""
        return [await self.send(topics.ALERTS, key, raw.encode()),
                await self.send(topics.ALERTS_V1, key, alert.as_v1().model_dump_json().encode())]

    def _fire_timers(self, rt: StayRuntime, changed: set[str]) -> list[Alert]:
        """Fire the stay's alert timers whose clinical time has passed with no score after them: complete,
        before its next unscored point, and not after its close. Returns their records."""
        horizon = min(rt.buffer) if rt.buffer else None

        def passed(due: datetime) -> bool:
            return ((horizon is None or due < horizon) and self.clocks.complete(rt, due)
                    and (rt.closed_at is None or due <= rt.closed_at))

        out = []
        for rule_key, state in list(rt.alert_state.items()):
            new, records = run_timers(self.rules.by_key(rule_key), state, rt.stay_id, rt.subject_id, passed,
                                      self.rules.policy)
            if records:
                rt.alert_state[rule_key] = new
                changed.add(rule_key)
                rt.timed = max(filter(None, (rt.timed, records[-1].at)))
                out += records
        self.set_timer(rt)
        return out

    async def publish_and_commit(self, batch: Sequence[StayRuntime], start: float, taken: Taken) -> None:
        """Publish the batch's scores and alerts, wait until they are delivered, then COMMIT each stay and the
        batch's bookkeeping in one Redis round trip."""
        deliveries: list = []
        commits = [await self._publish_stay(rt, taken.scores[rt.stay_id], deliveries) for rt in batch]
        await asyncio.gather(*deliveries)   # published before committed: a crash here only republishes
        published = time.time()
        for timeline in taken.timelines:
            metrics.observe_point(timeline + [published])
        seconds = time.perf_counter() - start
        n_scores = sum(len(raws) for c in commits for raws in c.scores.values())
        counts = {"scores": n_scores, "alerts": sum(len(c.alerts) for c in commits), "batches": 1}
        bookkeeping = dict(counts)
        for name, n in self._take_uncounted().items():
            bookkeeping[name] = bookkeeping.get(name, 0) + n
        feed = [(c.rt.stay_id, alert_id, raw) for c in commits for alert_id, raw in c.alerts]

        async def commit():
            pipe = self.store.r.pipeline(transaction=False)
            for c in commits:
                rt = c.rt
                self.store.commit(pipe, rt.stay_id, taken.last_point.get(rt.stay_id, rt.scored), rt.n_inputs, rt.band,
                                  c.scores, c.states, c.alerts, rt.timer)
            self.store.note_batch(pipe, feed, bookkeeping, seconds * 1000.0)
            return await pipe.execute()

        await self.with_redis("commit", commit)
        async with self._state:
            for c in commits:
                self.forget_if_finished(c.rt.stay_id)
        for name, n in counts.items():
            self.stats[name] += n
        metrics.count("scores", n_scores)
        metrics.count("alerts", counts["alerts"])
        metrics.observe_batch(len(batch), seconds)

    async def _publish_stay(self, rt: StayRuntime, scores_by_scorer: dict[str, list[RiskScore]],
                            deliveries: list) -> _Commit:
        """Send one stay's scores, the alert records they and its timers make, and return what to commit.
        Each score is serialised once; each changed rule's alert state once per batch."""
        commit = _Commit(rt)
        changed: set[str] = set()
        records: list[Alert] = []
        key = str(rt.stay_id).encode()
        for name, scores in scores_by_scorer.items():
            raws = commit.scores[name] = []
            for score in scores:
                score.score_id = make_event_id("score", score.stay_id, score.scorer, score.model_version,
                                               score.scored_at.isoformat())
                raw = score.model_dump_json()
                raws.append((score.scored_at, raw))
                deliveries.append(await self.send(topics.SCORES, key, raw.encode()))
                fhir = risk_assessment_json(score)
                if fhir is not None:
                    deliveries.append(await self.send(topics.FHIR_RISK, key, fhir))
                for rule in self.rules.for_score(score):
                    rule_key = f"{score.scorer}/{rule.key}"
                    old = rt.alert_state.get(rule_key) or RuleState()
                    new, made = advance(rule, old, score, self.rules.policy)
                    if new is not old:  # (a quiet rule's state stays the same object, and is not written again)
                        rt.alert_state[rule_key] = new
                        changed.add(rule_key)
                    records += made
        records += self._fire_timers(rt, changed)
        commit.states = {k: rt.alert_state[k].dumps() for k in changed}
        commit.alerts = [(a.alert_id, a.model_dump_json()) for a in records]
        for a, (_, raw) in zip(records, commit.alerts):
            deliveries += await self._send_alert(key, a, raw)
        return commit


@dataclass
class _Commit:
    """What one stay's COMMIT writes: its scores by scorer (time, JSON), changed alert states and records."""
    rt: StayRuntime
    scores: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)
