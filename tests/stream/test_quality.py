"""The alert-quality figures (stream/quality.py) on hand-made trails, against docs/alert-quality.md."""
from datetime import datetime, timedelta

import pytest

from medm2t.events import Alert, Outcome
from stream.quality import figures, scorer_quality

T0 = datetime(2150, 1, 1)
H = timedelta(hours=1)


def outcome(stay, days=2.0, death=False, death_after=None):
    return Outcome(event_id=f"o{stay}", stay_id=stay, subject_id=stay, time=T0 + days * 24 * H,
                   available_time=T0 + days * 24 * H, source="test", hospital_death=death,
                   deathtime=None if death_after is None else T0 + death_after, icu_intime=T0,
                   icu_outtime=T0 + days * 24 * H)


def alert(stay, at, state="raised", level="urgent", scorer="news2", task="news2", episode="", by="system", n=[0]):
    n[0] += 1
    return Alert(alert_id=f"a{n[0]}", stay_id=stay, subject_id=stay, scorer=scorer, model_version="v", task=task,
                 level=level, state=state, reason="r", value=5.0, at=T0 + at, episode_id=episode or f"a{n[0]}", by=by)


def test_rates_flags_lead_and_ppv():
    outs = [outcome(1, days=1, death=True, death_after=10 * H), outcome(2, days=2, death=True, death_after=5 * H),
            outcome(3, days=1), outcome(4, days=1, death=True)]  # 4: died, no death time
    trails = {
        1: [alert(1, 3 * H, episode="e1"), alert(1, 4 * H, "acknowledged", episode="e1", by="kim"),
            alert(1, 6 * H, "cleared", level="urgent", episode="e1")],           # lead 7 h: flagged
        2: [alert(2, 4 * H, level="info", task="news2:single-parameter"),        # info does not flag
            alert(2, 4.5 * H, episode="e2"),                                       # lead 0.5 h: not flagged
            alert(2, 5 * H, level="info", task="news2:stale-vitals")],            # technical: not counted
        3: [alert(3, 2 * H, level="emergency")],                                   # flagged, survived
        9: [alert(9, 1 * H)],                                                      # no outcome yet: not counted
    }
    q = scorer_quality("news2", outs, trails)
    assert q.stays == 4 and q.patient_days == pytest.approx(5.0)
    assert q.alerts == 4 and q.alerts_per_patient_day == pytest.approx(4 / 5.0)
    assert q.stays_alerted == pytest.approx(3 / 4)
    assert (q.deaths, q.deaths_without_time, q.deaths_flagged_2h_count) == (3, 1, 1)
    assert q.deaths_flagged_2h == pytest.approx(1 / 3)
    assert q.median_lead_hours == pytest.approx((7 + 0.5) / 2)
    assert q.stays_flagged == 3 and q.ppv == pytest.approx(2 / 3)
    assert q.urgent_alerts == 3 and q.acknowledged == pytest.approx(1 / 3) and q.median_minutes_to_ack == 60.0


def test_every_scorer_is_reported_even_without_alerts_and_empty_denominators_are_none():
    out = figures(["news2", "medm2t"], [outcome(1)], {1: [alert(1, H, scorer="news2")]})
    assert set(out) == {"news2", "medm2t"}
    m = out["medm2t"]
    assert m["alerts"] == 0 and m["stays_alerted"] == 0.0 and m["alerts_per_patient_day"] == 0.0
    assert m["deaths"] == 0 and m["deaths_flagged_2h"] is None and m["ppv"] is None and m["median_lead_hours"] is None
    assert figures([], [], {})  == {}


def test_an_alert_after_the_death_time_does_not_flag_it():
    q = scorer_quality("news2", [outcome(1, death=True, death_after=5 * H)], {1: [alert(1, 6 * H)]})
    assert q.deaths_flagged_2h == 0.0 and q.median_lead_hours is None and q.ppv == 1.0


def test_the_outcome_agent_accepts_only_outcomes_keyed_by_their_stay():
    from medm2t.events import StayClosed
    from stream.validation import InvalidMessage, validate_outcome

    raw = outcome(7).model_dump_json().encode()
    closed = StayClosed(event_id="c7", stay_id=7, subject_id=7, time=T0, available_time=T0, source="test")
    assert validate_outcome(raw, b"7")[0].stay_id == 7
    for value, key, why in ((raw, b"8", "key"), (b"{", b"7", "invalid"), (None, b"7", "empty"),
                            (closed.model_dump_json().encode(), b"7", "only outcomes belong there")):
        with pytest.raises(InvalidMessage, match=why):
            validate_outcome(value, key)


def test_bed_time_with_an_urgent_alert_open_is_the_union_of_the_open_spells():
    """Stay 1 (24 h): urgent from 2 h, a second rule's emergency overlapping 4-8 h, cleared at 6 h and 8 h:
    6 h red. Stay 2 (24 h): info only, then urgent from 20 h to the end: 4 h. A comment changes nothing."""
    outs = [outcome(1, days=1), outcome(2, days=1)]
    trails = {
        1: [alert(1, 2 * H, episode="u"), alert(1, 4 * H, level="emergency", task="news2:x", episode="x"),
            alert(1, 6 * H, "cleared", episode="u"), alert(1, 8 * H, "cleared", level="emergency", episode="x"),
            alert(1, 9 * H, "commented", episode="u")],
        2: [alert(2, 1 * H, level="info", task="news2:single-parameter"), alert(2, 20 * H, episode="v")],
    }
    assert scorer_quality("news2", outs, trails).beds_urgent == pytest.approx((6 + 4) / 48)
    assert scorer_quality("news2", outs, {}).beds_urgent == 0.0


QUALITY_DB = 13  # a database of its own on the session Redis


def test_a_timers_cache_parses_only_what_changed_and_reads_as_a_fresh_read(redis_url):
    """The worker's history timer keeps what it parsed (stream/quality.py ReadCache): a new alert, a new or
    corrected outcome is read, an unchanged stay's trail is not parsed again, and the report always equals a
    fresh read."""
    import redis

    from stream import keys
    from stream.quality import ReadCache, read

    r = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{QUALITY_DB}")
    r.flushdb()
    try:
        def store(o, *alerts):
            r.hset(keys.QUALITY_OUTCOMES, str(o.stay_id), o.model_dump_json())
            for a in alerts:
                r.lpush(keys.stay_alerts(a.stay_id), a.model_dump_json())

        store(outcome(1, death=True, death_after=10 * H), alert(1, 3 * H))
        store(outcome(2), alert(2, 1 * H, level="emergency"))
        cache = ReadCache()
        first = read(r, cache)
        assert first["scorers"] == read(r)["scorers"] and first["outcomes"] == 2
        kept = cache.trails[2][1]
        store(outcome(1, death=True, death_after=10 * H), alert(1, 5 * H, "cleared", episode="x"))
        store(outcome(3, death=True, death_after=2 * H), alert(3, 1 * H))
        store(outcome(2, death=True, death_after=30 * H))  # a corrected outcome, the same trail
        second = read(r, cache)
        assert second["scorers"] == read(r)["scorers"] != first["scorers"] and second["outcomes"] == 3
        assert cache.trails[2][1] is kept and len(cache.trails[1][1]) == 2  # stay 2 unchanged: not parsed again
    finally:
        r.flushdb()
        r.close()


def test_the_history_timer_spaces_out_snapshots_that_cost_more_than_its_share(redis_url):
    """A snapshot that took 1 s under a 5 % share waits 20 s before the next; a cheap one runs every tick."""
    import redis

    from stream import keys
    from stream.quality import HistoryTimer

    now = [0.0]
    r = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{QUALITY_DB}")
    r.flushdb()
    try:
        r.hset(keys.QUALITY_OUTCOMES, "1", outcome(1).model_dump_json())
        timer = HistoryTimer(r, 10.0, 0.05, clock=lambda: now[0])
        assert timer.tick() is not None and timer.took == 0.0  # the clock stood still: no cost
        timer.took = 1.0                                          # as if it had taken 1 s
        r.delete(keys.QUALITY_LOCK)
        now[0] = 19.0
        r.hset(keys.QUALITY_OUTCOMES, "2", outcome(2).model_dump_json())  # new figures to record
        assert timer.tick() is None and timer.start == 0.0       # 19 s < 1 s / 5 %: not yet
        now[0] = 20.0
        assert timer.tick()["outcomes"] == 2 and timer.start == 20.0
    finally:
        r.flushdb()
        r.close()
