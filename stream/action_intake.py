"""People acting on alerts (risk.alert-actions.v1), as the worker takes them in: a part of the Pipeline
(stream/pipeline.py). The scoring loop is the one writer of alert state, so valid actions are queued here
and applied between batches; each becomes one record on the alert topics and in the stay's audit trail.
The producing side (the dashboard's buttons, `medm2t alerts ack`) is stream/alert_actions.py.

A mixin of Pipeline: it uses the pipeline's store, stays, rules, state lock and dead letters, and Publish's
_send_alert.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from medm2t.events import Alert, AlertAction
from stream.alerts import ActionRejected, RuleState, act
from stream.runtime import Message


class ActionIntake:
    async def act_on(self, messages: Sequence[Message]) -> None:
        """Queue valid AlertActions for the scoring loop (the one writer of alert state); dead-letter the rest."""
        from pydantic import ValidationError

        for msg in messages:
            try:
                action = AlertAction.model_validate_json(msg.value or b"")
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "message"
                await self.dead_letter(msg, f"invalid alert action: {where}: {first['msg']}")
                continue
            self._actions.append((msg, action))
        self._wake.set()

    async def apply_actions(self) -> int:
        """Apply the queued actions in arrival order: each is one record on the alert topics and in the stay's
        audit trail, published before it is stored (like scores). Returns how many were applied."""
        if not self._actions:
            return 0
        queued, self._actions = self._actions, []
        by_stay: dict[int, tuple[dict[str, str], list[tuple[str, str]], dict[str, str]]] = {}
        deliveries = []
        async with self._state:  # an ingest must not load a stay from Redis half-way through
            for msg, action in queued:
                done, raw = await self.with_redis("action lookup", lambda: self.store.acted_on(
                    action.stay_id, action.action_id, action.alert_id))
                states, records, applied = by_stay.get(action.stay_id, ({}, [], {}))
                if done or action.action_id in applied:  # redelivered: applied once only
                    self.stats["duplicate_actions"] += 1
                    continue
                if raw is None:
                    await self.dead_letter(msg, f"unknown alert {action.alert_id} for stay {action.stay_id}")
                    continue
                acted_on = Alert.read(raw)
                await self._ensure_loaded([(action.stay_id, None)])
                rt = self.stays[action.stay_id]
                rule_key = f"{acted_on.scorer}/{acted_on.task}"
                now = max(filter(None, (rt.scored, rt.timed)), default=acted_on.at)
                try:
                    new, record = act(rt.alert_state.get(rule_key) or RuleState(), action, acted_on, now,
                                      self.rules.policy)
                except ActionRejected as exc:
                    await self.dead_letter(msg, str(exc))
                    continue
                states, records, applied = by_stay.setdefault(action.stay_id, ({}, [], {}))
                rt.alert_state[rule_key] = new
                states[rule_key] = new.dumps()
                self.set_timer(rt)
                records.append((record.alert_id, record.model_dump_json()))
                applied[action.action_id] = action.alert_id
                deliveries += await self._send_alert(str(action.stay_id).encode(), record, records[-1][1])
            await asyncio.gather(*deliveries)
            feed = [(sid, alert_id, raw) for sid, (_, records, _) in by_stay.items() for alert_id, raw in records]

            async def write():
                pipe = self.store.r.pipeline(transaction=False)
                for sid, (states, records, applied) in by_stay.items():
                    self.store.record(pipe, sid, states, records, applied, self.stays[sid].timer)
                self.store.note_batch(pipe, feed, {"actions": len(feed)})
                return await pipe.execute()

            if by_stay:
                await self.with_redis("record actions", write)
            for sid in by_stay:  # a closed stay loaded only for its actions leaves memory again
                self.forget_if_finished(sid)
        self.stats["actions"] += len(feed)
        return len(feed)
