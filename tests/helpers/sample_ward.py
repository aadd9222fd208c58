"""A small, plausible ward for tests and screenshots, written into Redis the way the worker writes it: made-up
inputs (catalogue items, ECGs with machine measurements) run through the worker's own pipeline, scorers
(NEWS2 and the demo MedM2T checkpoint), alert policy and StayStore, with no Kafka. Only the inputs are
invented; every score, alert and key is what the worker would leave. Nothing here is a clinical claim.

It lives with the tests, not in dashboard/: it drives stream's write side and the MedM2T scorer (model/,
torch), which the dashboard itself never imports.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
import redis

from medm2t.events import LEADS, Alert, Ecg, Measurement, RiskScore, StaticFeatures, StayOpened, Waveform, make_event_id
from medm2t.items import lookup
from stream import keys

SOURCE = "sample"
STALE_S = 3600.0  # the last stay's data "arrived" this long ago
# item code: (value at admission, value after `hours` on a deteriorating course, noise sd, every n hours when
# deteriorating; a stable patient's vitals are charted half as often and labs drawn every 12 h, not 6)
VITALS = {220045: (78, 124, 2.5, 1), 220179: (124, 90, 3, 1), 220180: (72, 52, 2, 1), 220181: (89, 65, 2, 1),
          220210: (16, 27, 0.6, 1), 220277: (97.5, 89, 0.4, 1), 223835: (21, 21, 0, 4), 223762: (36.9, 38.4, 0.15, 2),
          220739: (4, 4, 0, 4), 223900: (5, 5, 0, 4), 223901: (6, 6, 0, 4)}
LABS = {50912: (1.0, 2.1, 0.05), 50813: (1.4, 4.2, 0.1), 51301: (8.5, 15.0, 0.4)}  # results 50 min after the draw


@dataclass
class SampleStay:
    stay_id: int
    subject_id: int
    news2: RiskScore
    medm2t: RiskScore | None
    alerts: list[Alert]          # newest first
    stale: bool


def synthetic_ecg_mv(fs: float = 500.0, seconds: float = 10.0, hr: float = 75.0) -> np.ndarray:
    """(12, n) millivolts: a crude P-QRS-T complex per beat, scaled per lead."""
    t = np.arange(int(fs * seconds)) / fs
    beat = np.zeros_like(t)
    for onset in np.arange(0.2, seconds, 60.0 / hr):
        for centre, width, amp in ((0.0, 0.025, 0.15), (0.16, 0.012, -0.1), (0.18, 0.01, 1.1), (0.2, 0.012, -0.25),
                                   (0.42, 0.04, 0.3)):
            beat += amp * np.exp(-((t - onset - centre) ** 2) / (2 * width ** 2))
    scale = np.array([0.8, 1.0, 0.4, -0.9, 0.5, 0.7, -0.6, 0.2, 0.7, 1.2, 1.1, 0.9])[:, None]
    return scale * beat[None, :]


def _measurement(stay_id: int, subject_id: int, code: int, h: int, t: datetime, delay: timedelta,
                 value: float) -> Measurement:
    item = lookup(code)
    return Measurement(event_id=make_event_id(SOURCE, stay_id, item.code, h), stay_id=stay_id, subject_id=subject_id,
                       time=t, available_time=t + delay, source=SOURCE, item=item.code, label=item.label,
                       category=item.category, concept=item.concept, value=value, unit=item.unit)


def sample_stay_events(i: int, deteriorating: bool, hours: int, rng: np.random.Generator) -> list:
    """One stay's inputs: admission, vitals and labs over `hours` (steady, or drifting towards shock), and a
    previous and a latest ECG."""
    stay_id, subject_id = 30_000_101 + 17 * i, 10_000_200 + i
    admit = datetime(2180, 3, 1, 8, 0) + timedelta(hours=3 * i)
    events: list = [StayOpened(
        event_id=make_event_id(SOURCE, stay_id, "open"), stay_id=stay_id, subject_id=subject_id, time=admit,
        available_time=admit, source=SOURCE, hadm_id=20_000_000 + i, bed=str(i + 1),
        static=StaticFeatures(gender="FM"[i % 2], age=float(74 + 3 * i if deteriorating else 48 + 5 * i), admission_type="EW EMER.",
                              first_careunit="Medical Intensive Care Unit (MICU)", height_cm=170.0,
                              weight_kg=float(rng.integers(55, 110))))]
    for h in range(hours + 1):
        t, drift = admit + timedelta(hours=h), h / hours if deteriorating else 0.0
        for code, (start, end, sd, every) in VITALS.items():
            if h % (every if deteriorating else 2 * every) == 0:  # a stable patient is charted less often
                value = round(float(start + (end - start) * drift + sd * rng.normal()), 1)
                events.append(_measurement(stay_id, subject_id, code, h, t, timedelta(minutes=5), value))
        if h % (6 if deteriorating else 12) == 0:
            for code, (start, end, sd) in LABS.items():
                value = round(float(start + (end - start) * drift + sd * rng.normal()), 2)
                events.append(_measurement(stay_id, subject_id, code, h, t, timedelta(minutes=50), value))
    for k, (ecg_h, hr) in enumerate(((1, 65 + 10 * i), (hours - 1, 70 + 15 * i))):  # a previous and a latest ECG
        ecg_t = admit + timedelta(hours=ecg_h)
        events.append(Ecg(
            event_id=make_event_id(SOURCE, stay_id, "ecg", k), stay_id=stay_id, subject_id=subject_id, time=ecg_t,
            available_time=ecg_t, source=SOURCE, study_id=40_000_000 + 10 * i + k,
            waveform=Waveform.from_array(synthetic_ecg_mv(hr=hr), fs=500.0, leads=LEADS),
            measurements={"rr_interval": round(60000 / hr), "p_onset": 40, "p_end": 140, "qrs_onset": 200,
                          "qrs_end": 290 + 10 * k, "t_end": 600 + 20 * k, "qrs_axis": 30.0, "t_axis": 45.0},
            statements=("Sinus rhythm",) + (("Prolonged QT",) if k and deteriorating else ())))
    return sorted(events, key=lambda e: e.available_time)


@lru_cache(maxsize=1)
def _scorers():
    from medm2t.settings import Settings
    from stream.scorers.medm2t import MedM2TScorer
    from stream.scorers.news2 import News2Scorer
    from stream.policy import load_policy

    settings = Settings()
    news2, medm2t = News2Scorer(), MedM2TScorer.load(settings.checkpoint, device="cpu")
    return news2, medm2t, load_policy(settings, ["news2", "medm2t"])


def _url(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    auth = f":{kw['password']}@" if kw.get("password") else ""
    return f"redis://{auth}{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


async def _through_the_worker(url: str, groups) -> None:
    from medm2t.connections import redis_async
    from medm2t.settings import RedisSettings, Settings
    from stream.offline import backlog, run_backlog
    from stream.scorers import publish_cards

    news2, medm2t, policy = _scorers()
    for scorers, stays in groups:
        if stays:
            messages, _ = backlog(stays, partitions=1)
            await run_backlog(url, scorers, messages, 1, flush=False, policy=policy)
    client = redis_async(Settings(redis_url=url, redis=RedisSettings(password="")))
    try:
        await publish_cards(client, [news2, medm2t], policy)
    finally:
        await client.aclose()


def write_sample_ward(r: redis.Redis, n_stays: int = 4, seed: int = 7, hours: int = 12) -> list[SampleStay]:
    """Write `n_stays` active stays, the later half deteriorating. The last one (of two or more) is scored by
    NEWS2 alone, as by a worker without a checkpoint, and its data arrived an hour ago (stale). Returns what
    the worker left in Redis for each."""
    rng = np.random.default_rng(seed)
    stays = [sample_stay_events(i, i >= n_stays // 2 and n_stays > 1, hours, rng) for i in range(n_stays)]
    news2, medm2t, _ = _scorers()
    alone = stays[-1:] if n_stays > 1 else []
    asyncio.run(_through_the_worker(_url(r), [([news2, medm2t], stays[:len(stays) - len(alone)]), ([news2], alone)]))
    for events in alone:  # as if its last input had arrived STALE_S ago
        sid, wall = events[0].stay_id, time.time() - STALE_S
        r.hset(keys.meta(sid), "last_wall", f"{wall:.3f}")
        r.zadd(keys.WARD_ACTIVE, {str(sid): wall})

    def latest(sid: int, scorer: str) -> RiskScore | None:
        raw = r.get(keys.latest_score(sid, scorer))
        return RiskScore.model_validate_json(raw) if raw else None

    return [SampleStay(e[0].stay_id, e[0].subject_id, latest(e[0].stay_id, "news2"), latest(e[0].stay_id, "medm2t"),
                       [Alert.read(a) for a in r.lrange(keys.stay_alerts(e[0].stay_id), 0, -1)],
                       e in alone) for e in stays]
