"""Which scorers the worker runs (settings.scorers): 'news2', 'medm2t', a comma list, or 'auto'
(NEWS2 always, plus MedM2T when its checkpoint folder exists and the model package loads)."""
from __future__ import annotations

import json
import logging

from medm2t.settings import Settings
from medm2t.vocabulary import MEDM2T, NEWS2, SCORERS
from stream import keys
from stream.scorers.loading import ScorerConfigError, load_medm2t
from stream.scorers.news2 import News2Scorer
from stream.scoring import Scorer

log = logging.getLogger(__name__)


def medm2t_scorer(settings: Settings) -> Scorer:
    """MedM2T in this process, or in a process of its own beside it (MEDM2T_MODEL_PROCESS)."""
    if not settings.model_process:
        return load_medm2t(settings)
    from stream.scorers.model_process import ModelProcess

    return ModelProcess(settings)


def select_scorers(settings: Settings) -> list[Scorer]:
    wanted = [s.strip() for s in settings.scorers.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in (*SCORERS, "auto")]
    if unknown or not wanted:
        raise ScorerConfigError(f"unknown scorer(s) {unknown or settings.scorers!r} in MEDM2T_SCORERS; use 'auto' or a comma list of {', '.join(SCORERS)}")
    scorers: list[Scorer] = []
    if NEWS2 in wanted or "auto" in wanted:
        scorers.append(News2Scorer())
    if MEDM2T in wanted:
        scorers.append(medm2t_scorer(settings))  # asked for explicitly: failing to load is an error
    elif "auto" in wanted:
        try:
            scorers.append(medm2t_scorer(settings))
        except Exception as exc:  # noqa: BLE001 - auto mode falls back to NEWS2 alone, and says why
            log.warning("MedM2T not loaded, scoring with NEWS2 only: %s", exc)
    return scorers


def card(scorer: Scorer) -> dict:
    """The model card shown on the dashboard's system page."""
    fn = getattr(scorer, "card", None)
    if callable(fn):
        return fn()
    if isinstance(fn, dict):
        return fn
    return {"name": scorer.name, "version": scorer.version}


async def publish_cards(redis, scorers, policy) -> None:
    """What the dashboard's system page reads: each scorer's model card and the alert policy the pipeline runs
    (`redis` is a redis.asyncio client)."""
    for scorer in scorers:
        await redis.set(keys.model_card(scorer.name), json.dumps(card(scorer), default=str))
    await redis.set(keys.ALERT_POLICY, policy.model_dump_json())
