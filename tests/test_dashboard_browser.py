"""End to end: `medm2t dashboard` served for real, opened in headless Chromium, against a real Redis."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from dashboard.sample import write_sample_ward
from stream.services import free_port, stop_process_group, wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
DASHBOARD_DB = 10
pytestmark = pytest.mark.browser


@pytest.fixture
def served_dashboard(redis_url, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run browser tests")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    url = redis_url.rsplit("/", 1)[0] + f"/{DASHBOARD_DB}"
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    stays = write_sample_ward(r)
    port = free_port()
    log = open(tmp_path / "dashboard.log", "wb")
    medm2t = Path(sys.executable).parent / "medm2t"
    proc = subprocess.Popen([str(medm2t), "dashboard", "--port", str(port), "--redis", url], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "MEDM2T_DASHBOARD_REFRESH_S": "2"})
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}", stays
    finally:
        stop_process_group(proc, timeout=10)
        log.close()
        r.flushdb()
        r.close()


def test_ward_board_and_patient_page_in_headless_chromium(served_dashboard):
    from playwright.sync_api import expect, sync_playwright

    base, stays = served_dashboard
    shots = Path(os.environ.get("MEDM2T_SCREENSHOT_DIR", "")) if os.environ.get("MEDM2T_SCREENSHOT_DIR") else None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base, wait_until="domcontentloaded", timeout=60_000)
            board = page.locator("#ward-table")
            board.wait_for(timeout=60_000)
            for s in stays:
                expect(board.get_by_text(str(s.stay_id), exact=True)).to_have_count(1)
            expect(board.get_by_text("NEWS2 (rule score, points)")).to_have_count(1)
            if shots:
                page.screenshot(path=str(shots / "ward_board.png"), full_page=True)

            # The stay link opens the patient page of that stay, and live refresh keeps it there.
            target = stays[-2]
            board.get_by_text(str(target.stay_id), exact=True).click()
            page.get_by_text(f"Stay {target.stay_id}", exact=True).wait_for(timeout=60_000)
            page.get_by_text("Latest 12-lead ECG").wait_for(timeout=30_000)
            page.locator(".vega-embed").nth(3).wait_for(timeout=30_000)
            time.sleep(3)  # across at least one refresh
            expect(page.get_by_text(f"Stay {target.stay_id}", exact=True)).to_have_count(1)
            if shots:  # Streamlit scrolls inside its own container: grow the viewport to capture it all
                page.set_viewport_size({"width": 1400, "height": 3200})
                time.sleep(1)
                page.screenshot(path=str(shots / "patient.png"))
        finally:
            browser.close()
