"""End to end in headless Chromium: a real worker raises alerts from events on the real broker, a person
acknowledges one from the ward board and snoozes another from the patient page, and the board and the stay's
audit trail show both. Nothing here is mocked: the dashboard sends to risk.alert-actions.v1 and the worker
records what it applied."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from medm2t import topics
from medm2t.events import Alert, Measurement, StaticFeatures, StayOpened, dump_event
from stream import keys
from stream.services import free_port, stop_process_group, wait_for_port
from tests.helpers.processes import running_worker, service_env

CHROMIUM = Path("/usr/bin/chromium")
DB = 11
T0 = datetime(2150, 1, 1, 8, 0)
STAYS = (31, 32)
NEW_STAY = 33  # raises its alert while the board's action panel is open
pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _events(stays=STAYS):
    """Stays with RR 25 and SpO2 91 (NEWS2 6: an urgent alert each), left open."""
    for sid in stays:
        yield StayOpened(event_id=f"o{sid}", stay_id=sid, subject_id=100 + sid, time=T0, available_time=T0,
                         source="test", static=StaticFeatures(), bed=f"B{sid}")
        for concept, value in (("rr", 25), ("spo2", 91)):
            at = T0 + timedelta(minutes=5)
            yield Measurement(event_id=f"{sid}-{concept}", stay_id=sid, subject_id=100 + sid, time=at, available_time=at,
                              source="test", item=concept, category="vital", concept=concept, value=value)


def _records(r, stay_id: int) -> list[Alert]:
    """The stay's audit trail, newest first."""
    return [Alert.model_validate_json(v) for v in r.lrange(keys.stay_alerts(stay_id), 0, -1)]


def _raised(r) -> dict[int, Alert]:
    return {sid: a for sid in STAYS for a in _records(r, sid) if a.task == "news2" and a.state == "raised"}


@pytest.fixture(scope="module")
def live_ward(pipeline_settings, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run browser tests")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    from medm2t.connections import redis_sync
    from medm2t.kafka import make_producer, recreate_topics

    settings = pipeline_settings.model_copy(update={"redis_url": pipeline_settings.redis_url.rsplit("/", 1)[0] + f"/{DB}"})
    r = redis_sync(settings)
    r.flushdb()
    recreate_topics(settings)
    run = tmp_path_factory.mktemp("live-ward")
    with running_worker(settings, run / "worker.log"):
        producer = make_producer(settings)
        for e in _events():
            producer.send(topics.EVENTS, key=str(e.stay_id).encode(), value=dump_event(e))
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 120
        while len(_raised(r)) < len(STAYS):
            assert time.monotonic() < deadline, (run / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        port = free_port()
        log = open(run / "dashboard.log", "wb")
        medm2t = Path(sys.executable).parent / "medm2t"
        proc = subprocess.Popen([str(medm2t), "dashboard", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**service_env(settings), "MEDM2T_DASHBOARD_REFRESH_S": "2"})
        try:
            wait_for_port(port, timeout=60, proc=proc)
            yield f"http://127.0.0.1:{port}", r, run, settings
        finally:
            stop_process_group(proc, timeout=10)
            log.close()
    r.flushdb()


def _act(page, user: str, meanwhile=lambda: None) -> None:
    name = page.get_by_label("Your name (for alert actions)", exact=True)
    name.fill(user)
    name.press("Enter")
    time.sleep(1)  # the sidebar's rerun
    page.get_by_text("Act on an open alert").first.click()
    meanwhile()
    # A person takes their time: the panel must survive at least two live refreshes (every 2 s here), even
    # while the ward's alerts change under it.
    time.sleep(5)
    assert page.get_by_role("button", name="Acknowledge").is_visible(), "the action panel closed on a refresh"


def _new_alert(settings, r, sid: int):
    """Another stay raises an alert while the person is reading the panel."""
    from medm2t.kafka import make_producer

    def send():
        producer = make_producer(settings)
        for e in _events((sid,)):
            producer.send(topics.EVENTS, key=str(e.stay_id).encode(), value=dump_event(e))
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 60
        while not any(a.state == "raised" for a in _records(r, sid)):
            assert time.monotonic() < deadline, "the worker raised no alert for the new stay"
            time.sleep(0.2)
    return send


def test_acknowledge_on_the_board_and_snooze_on_the_patient_page(live_ward):
    from playwright.sync_api import expect, sync_playwright

    base, r, run, settings = live_ward
    shots = Path(os.environ["MEDM2T_SCREENSHOT_DIR"]) if os.environ.get("MEDM2T_SCREENSHOT_DIR") else None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(base, wait_until="domcontentloaded", timeout=60_000)
            board = page.locator("#ward-table")
            board.wait_for(timeout=60_000)
            _act(page, "nurse.kim", _new_alert(settings, r, NEW_STAY))
            page.get_by_role("button", name="Acknowledge").click()
            expect(board.get_by_text("acknowledged by nurse.kim")).to_have_count(1, timeout=30_000)
            acked = next(sid for sid in STAYS if any(a.state == "acknowledged" for a in _records(r, sid)))
            if shots:
                page.screenshot(path=str(shots / "board_acknowledged.png"), full_page=True)

            other = next(sid for sid in STAYS if sid != acked)
            page.goto(f"{base}/?view=Patient&stay={other}", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text(f"Stay {other}", exact=True).wait_for(timeout=60_000)
            _act(page, "dr.lee")
            page.get_by_label("Reason (required)", exact=True).fill("fluids running, review at 10:00")
            page.get_by_role("button", name="Snooze").click()
            audit = page.locator("#audit-table")
            expect(audit.get_by_text("dr.lee")).to_have_count(1, timeout=30_000)
            expect(audit.get_by_text("snoozed", exact=True)).to_have_count(1)
            expect(audit.get_by_text("snoozed 30 min: fluids running, review at 10:00")).to_have_count(1)
            if shots:
                page.set_viewport_size({"width": 1400, "height": 3200})
                time.sleep(1)
                page.screenshot(path=str(shots / "patient_snoozed.png"))

            page.goto(base, wait_until="domcontentloaded", timeout=60_000)
            board = page.locator("#ward-table")
            expect(board.get_by_text("acknowledged by nurse.kim")).to_have_count(1, timeout=60_000)
            expect(board.get_by_text("snoozed until 08:35")).to_have_count(1)
        finally:
            browser.close()

    records = {sid: _records(r, sid) for sid in STAYS}
    assert [(a.state, a.by) for a in records[acked] if a.task == "news2"][:1] == [("acknowledged", "nurse.kim")]
    assert [(a.state, a.by) for a in records[other] if a.task == "news2"][:1] == [("snoozed", "dr.lee")]
