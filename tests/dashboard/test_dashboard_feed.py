"""The alert feed's filters and pages: the pure functions on real Alert records, then the page itself through
Streamlit's AppTest against a real Redis (the session Redis of conftest.py)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import get_args

import pytest
import redis

from dashboard.data import Reader
from dashboard.views.alerts import LEVELS, STATES, filter_feed, open_records, page
from medm2t.events import Alert, AlertState, StaticFeatures, StayOpened
from stream import keys
from tests.helpers.paths import DASHBOARD_APP

T0 = datetime(2150, 1, 1, 8, 0)


def rec(n: int, stay: int, state: str, episode: int | None = None, level: str = "urgent", task: str = "news2",
        by: str = "system") -> Alert:
    """Record `n` (its minute after T0, so a higher n is newer) of the episode raised by record `episode`
    (itself when None; 0: a record written before episodes had ids)."""
    episode_id = "" if episode == 0 else f"a{n if episode is None else episode}"
    return Alert(alert_id=f"a{n}", stay_id=stay, subject_id=stay + 1000, scorer="news2", model_version="news2-test",
                 task=task, level=level, state=state, reason=f"record {n}", value=5.0, at=T0 + timedelta(minutes=n),
                 episode_id=episode_id, by=by)


def newest_first(*records: Alert) -> list[Alert]:
    return sorted(records, key=lambda a: a.at, reverse=True)


@pytest.fixture
def feed() -> list[Alert]:
    return newest_first(
        # stay 1, aggregate: the first alert cleared, the second raised, escalated to emergency and commented on
        rec(1, 1, "raised"), rec(2, 1, "acknowledged", 1, by="nurse.kim"), rec(3, 1, "cleared", 1),
        rec(4, 1, "raised"), rec(5, 1, "level-rose", 4, level="emergency"), rec(6, 1, "commented", 4, by="dr.lee"),
        # stay 1, single parameter: open
        rec(7, 1, "raised", level="info", task="news2:single-parameter"),
        # stay 2: raised and cleared, then a comment on the closed alert
        rec(8, 2, "raised"), rec(9, 2, "cleared", 8), rec(11, 2, "commented", 8, by="dr.lee"),
        # stay 3: an old record without an episode id, still open
        rec(10, 3, "raised", 0, level="emergency"),
    )


def ids(alerts: list[Alert]) -> list[str]:
    return [a.alert_id for a in alerts]


def test_no_filter_keeps_every_record_in_the_feed_order(feed):
    assert filter_feed(feed) == feed
    assert filter_feed(feed, False, LEVELS, STATES, "  ") == feed


def test_open_only_keeps_every_record_of_the_alerts_still_open(feed):
    assert ids(filter_feed(feed, open_only=True)) == ["a10", "a7", "a6", "a5", "a4"]
    # the same alerts the action panel offers (open_records), each with its whole episode
    assert {a.episode_id or a.alert_id for a in open_records(feed)} == {"a4", "a7", "a10"}


def test_open_only_of_a_feed_whose_alerts_all_cleared_is_empty(feed):
    closed = [a for a in feed if a.stay_id == 2]
    assert filter_feed(closed, open_only=True) == []


def test_levels_and_states(feed):
    assert ids(filter_feed(feed, levels=["emergency"])) == ["a10", "a5"]
    assert ids(filter_feed(feed, states=["cleared"])) == ["a9", "a3"]
    assert ids(filter_feed(feed, states=["commented", "acknowledged"])) == ["a11", "a6", "a2"]
    assert filter_feed(feed, levels=[]) == [] and filter_feed(feed, states=()) == []
    assert ids(filter_feed(feed, open_only=True, levels=["urgent"], states=["raised"])) == ["a4"]


def test_stay_filter_takes_a_stay_id_or_a_bed_label(feed):
    beds = {1: "12", 2: "B4"}
    assert ids(filter_feed(feed, stay="2", beds=beds)) == ["a11", "a9", "a8"]
    assert ids(filter_feed(feed, stay=" B4 ", beds=beds)) == ["a11", "a9", "a8"]
    assert {a.stay_id for a in filter_feed(feed, stay="12", beds=beds)} == {1}
    assert filter_feed(feed, stay="99", beds=beds) == [] and filter_feed(feed, stay="b4", beds=beds) == []
    assert ids(filter_feed(feed, stay="3")) == ["a10"]  # no bed known: by stay id alone
    assert ids(filter_feed(feed, open_only=True, stay="12", beds=beds, states=["level-rose"])) == ["a5"]


def test_choices_come_from_the_alert_model():
    assert STATES == get_args(AlertState)
    assert LEVELS == ("emergency", "urgent", "info")  # worst first


def test_pages():
    rows = list(range(312))
    second = page(rows, 50, 2)
    assert second.rows == list(range(50, 100)) and (second.number, second.pages) == (2, 7)
    assert second.caption().startswith("Rows 51–100 of 312 matching (newest first)")
    last = page(rows, 50, 7)
    assert last.rows == list(range(300, 312)) and (last.first, last.last) == (301, 312)
    assert page(rows, 50, 99) == last  # past the end (the list shrank): the last page
    assert page(rows, 50, 0).number == 1 and page(rows, 500, 3).rows == rows
    empty = page([], 50, 4)
    assert (empty.rows, empty.number, empty.pages, empty.first, empty.last) == ([], 1, 1, 0, 0)
    assert empty.caption() == ""  # the page says "No alerts match these filters." instead
    exact = page(list(range(100)), 50, 3)
    assert (exact.pages, exact.number, exact.first, exact.last) == (2, 2, 51, 100)


# ---- the page, through AppTest --------------------------------------------------------------------------------

def seed(r: redis.Redis) -> list[Alert]:
    """60 stays whose alert was raised and cleared, then 3 whose alert is open (one acknowledged); stay 101 lies
    in bed 7. Returns the feed, newest first."""
    records, n = [], 0
    for stay in range(101, 164):
        n += 1
        records.append(rec(n, stay, "raised"))
        raised = n
        n += 1
        records.append(rec(n, stay, "cleared" if stay < 161 else "acknowledged", raised))
    r.lpush(keys.ALERT_FEED, *[a.model_dump_json() for a in records])  # the newest ends first
    opened = StayOpened(event_id="open-101", stay_id=101, subject_id=1101, time=T0, available_time=T0, source="test",
                        bed="7", static=StaticFeatures())
    r.hset(keys.meta(101), "opened", opened.model_dump_json())
    return newest_first(*records)


def run_app(view: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(DASHBOARD_APP, default_timeout=60)
    at.query_params["view"] = view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_rows(at) -> list[str]:
    table = next((m.value for m in at.markdown if 'id="alert-table"' in m.value), None)
    return [] if table is None else table.split("<tbody>", 1)[1].split("<tr>")[1:]


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def test_feed_page_filters_and_pages(dash_redis):
    feed = seed(dash_redis)
    assert Reader(dash_redis).beds({101, 102}) == {101: "7"}
    at = run_app("Alerts")
    rows = table_rows(at)
    assert len(rows) == 50 and "record 126<" in rows[0]  # page 1: the newest 50
    assert "Rows 1–50 of 126 matching (newest first)" in captions(at)

    at.number_input(key="feed_page").set_value(3).run()
    assert "Rows 101–126 of 126 matching" in captions(at) and len(table_rows(at)) == 26
    assert "record 1<" in table_rows(at)[-1]

    # open only: the page goes back to the first, the only one there is
    at.toggle(key="feed_open").set_value(True).run()
    assert not at.exception
    assert at.number_input(key="feed_page").value == 1
    assert "Rows 1–6 of 6 matching" in captions(at)
    shown = {r.split("record ", 1)[1].split("<", 1)[0] for r in table_rows(at)}
    assert shown == {a.reason.split()[-1] for a in feed if a.stay_id >= 161}

    # by state, on top: only the acknowledged records of the open alerts
    at.multiselect(key="feed_states").set_value(["acknowledged"]).run()
    assert len(table_rows(at)) == 3 and all(">acknowledged<" in r for r in table_rows(at))

    # every state again, open or not: the cleared ones alone
    at.toggle(key="feed_open").set_value(False).run()
    at.multiselect(key="feed_states").set_value(["cleared"]).run()
    rows = table_rows(at)
    assert len(rows) == 50 and "Rows 1–50 of 60 matching" in captions(at) and all(">cleared<" in r for r in rows)

    # by bed: stay 101's records, its bed shown
    at.multiselect(key="feed_states").set_value(list(STATES)).run()
    at.text_input(key="feed_stay").input("7").run()
    rows = table_rows(at)
    assert len(rows) == 2 and all(">101</a>" in r and "<td" in r and ">7<" in r for r in rows)
    at.text_input(key="feed_stay").input("163").run()
    assert len(table_rows(at)) == 2 and "Rows 1–2 of 2 matching" in captions(at)
    at.text_input(key="feed_stay").input("999").run()
    assert table_rows(at) == [] and any(i.value == "No alerts match these filters." for i in at.info)


def test_the_page_stays_valid_when_the_feed_shrinks_under_it(dash_redis):
    seed(dash_redis)
    at = run_app("Alerts")
    at.number_input(key="feed_page").set_value(3).run()
    assert "Rows 101–126 of 126" in captions(at)
    dash_redis.ltrim(keys.ALERT_FEED, 0, 59)  # fewer records on the next refresh: two pages
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="feed_page").value == 2 and "Rows 51–60 of 60 matching" in captions(at)
    at.selectbox(key="feed_page_size").set_value(100).run()
    assert "Rows 1–60 of 60 matching" in captions(at) and len(table_rows(at)) == 60
