"""The replay time model on hand-made canonical events: ordering, ward re-anchoring, bed occupancy, pacing."""
from datetime import datetime, timedelta

import pytest

from medm2t.events import Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, make_event_id
from replay.engine import Pacer, merge_recorded, merge_ward, select_stays, shift_event

BASE = datetime(2150, 6, 1, 0, 0)


def make_stay(sid: int, start: datetime, hours: int, avail_delay=timedelta(minutes=10)) -> list:
    common = dict(stay_id=sid, subject_id=sid + 1000, source="test")
    evs = [StayOpened(event_id=make_event_id("t", sid, "open"), time=start, available_time=start, static=StaticFeatures(), **common)]
    for h in range(hours):
        t = start + timedelta(hours=h, minutes=5)
        evs.append(Measurement(event_id=make_event_id("t", sid, h), time=t, available_time=t + avail_delay, item="hr",
                               category="vital", concept="hr", value=70.0 + h, **common))
    end = start + timedelta(hours=hours)
    evs.append(StayClosed(event_id=make_event_id("t", sid, "close"), time=end, available_time=end, **common))
    evs.append(Outcome(event_id=make_event_id("t", sid, "outcome"), time=end, available_time=end + timedelta(days=1),
                       icu_intime=start, icu_outtime=end, **common))
    return evs


def test_recorded_mode_is_globally_ordered_by_availability_and_keeps_each_stays_order():
    stays = [make_stay(1, BASE, 5), make_stay(2, BASE + timedelta(minutes=30), 5), make_stay(3, BASE - timedelta(days=1), 3)]
    out = list(merge_recorded(iter(stays)))
    assert len(out) == sum(map(len, stays))
    assert [r.at for r in out] == sorted(r.at for r in out)
    for sid, evs in ((s[0].stay_id, s) for s in stays):
        assert [r.event for r in out if r.event.stay_id == sid] == evs
    assert all(r.at >= r.event.available_time for r in out)  # never released before it was known


def test_release_time_never_goes_back_within_a_stay():
    stay = make_stay(1, BASE, 3)
    # a lab known before the StayOpened row (pre-admission draw): it waits for the stay to open
    early = stay[1].model_copy(update={"available_time": BASE - timedelta(hours=2)})
    out = list(merge_recorded([[stay[0], early, *stay[2:]]]))
    assert out[0].event.kind == "stay_opened" and out[1].at == BASE


def test_ward_mode_reanchors_all_clock_fields_and_keeps_event_ids():
    stay = make_stay(7, datetime(2180, 1, 1), 4)
    start = datetime(2030, 5, 5, 12, 0)
    out = list(merge_ward([stay], beds=1, start=start))
    assert out[0].event.time == start and out[0].at == start
    delta = start - datetime(2180, 1, 1)
    for orig, rel in zip(stay, out):
        assert rel.event.event_id == orig.event_id
        assert rel.event.available_time == orig.available_time + delta
    outcome = out[-1].event
    assert outcome.kind == "outcome" and outcome.icu_outtime == stay[-1].icu_outtime + delta


def test_ward_keeps_n_beds_occupied_and_admits_when_a_bed_frees():
    stays = [make_stay(i, BASE + timedelta(days=i * 3), hours=10 + i) for i in range(7)]
    start = datetime(2030, 1, 1)
    out = list(merge_ward(iter(stays), beds=3, start=start, seed=1))
    assert [r.at for r in out] == sorted(r.at for r in out)
    occupied, peak = set(), 0
    admitted_at = {}
    for r in out:
        if r.event.kind == "stay_opened":
            assert r.bed not in occupied, "a bed took a second stay before the first left"
            assert r.event.bed == str(r.bed + 1)  # the StayOpened says which bed, for the ward board
            occupied.add(r.bed)
            admitted_at[r.event.stay_id] = r.at
        elif r.event.kind == "stay_closed":
            occupied.discard(r.bed)
        peak = max(peak, len(occupied))
    assert peak == 3
    assert len(admitted_at) == 7
    first_three = sorted(admitted_at[i] for i in range(3))
    assert first_three[0] == start and first_three[-1] <= start + timedelta(hours=2)  # staggered, not all at once
    assert min(admitted_at[i] for i in range(3, 7)) > start + timedelta(hours=10)  # only after a discharge


def test_ward_mode_is_deterministic_for_a_seed_and_varies_with_it():
    stays = [make_stay(i, BASE, hours=6) for i in range(5)]
    run = lambda seed: [(r.at, r.event.event_id) for r in merge_ward(iter(stays), 2, BASE, seed=seed)]  # noqa: E731
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_ward_reads_stays_lazily():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield make_stay(i, BASE, hours=2)

    gen = merge_ward(source(), beds=2, start=BASE)
    for _ in range(5):
        next(gen)
    assert len(pulled) <= 4  # bounded memory: only stays in beds (plus the next) have been read


def test_select_stays_by_id_and_limit():
    stays = [make_stay(i, BASE, 1) for i in range(10)]
    assert [s[0].stay_id for s in select_stays(iter(stays), {2, 5, 8}, None)] == [2, 5, 8]
    assert [s[0].stay_id for s in select_stays(iter(stays), None, 3)] == [0, 1, 2]


def test_shift_event_moves_outcome_deathtime():
    o = Outcome(event_id="x", stay_id=1, subject_id=2, time=BASE, available_time=BASE, source="t", deathtime=BASE)
    assert shift_event(o, timedelta(hours=2)).deathtime == BASE + timedelta(hours=2)


def test_pacer_sleeps_on_the_simulated_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    pacer = Pacer(60.0, sleep=sleep, clock=lambda: now[0])
    pacer.wait_until(BASE)
    pacer.wait_until(BASE + timedelta(minutes=30))  # 30 sim-minutes at 60x = 30 s
    assert slept == [pytest.approx(30.0)]
    assert Pacer(None).wait_until(BASE + timedelta(days=9)) == 0.0
    with pytest.raises(ValueError):
        Pacer(0)
