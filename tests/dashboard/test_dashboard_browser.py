"""End to end: `medm2t dashboard` served for real, opened in headless Chromium, against a real Redis."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from stream.services import free_port, stop_process_group, wait_for_port
from tests.helpers.sample_ward import write_sample_ward

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


WIDTH = 1600  # the screen: nothing may be cut off at this width
# What a clinician must never read on a page (the visible text, tooltips aside).
FORBIDDEN = {
    "a file path": r"(?:/(?:work|tmp|home|root|usr|opt)/|\w\.(?:py|pt|json|csv|parquet|log|md)\b)",
    "a Python repr": r"(?:object at 0x|datetime\.datetime\(|Traceback|\bNone\b|\bnan\b|\{'|\['|\d{4}-\d\d-\d\dT\d\d:)",
    "an internal key": r"(?:\{stay:|\b(?:risk|icu|fhir)\.[a-z-]+|\bnews2:|\b[a-z]+(?:_[a-z0-9]+)+\b"
                       r"|\b(?:medm2t|news2)\b(?![-\w]))",  # a scorer's key, not a model version such as medm2t-arch-3+...
    "a record id": r"\b[0-9a-f]{16,}\b",
}
VITALS_AXES = ("Heart rate (bpm)", "Blood pressure (mmHg)", "Respiratory rate (breaths/min)", "SpO2 and FiO2 (%)")


def _axes(chart) -> list[str]:
    """The axis descriptions Vega writes for screen readers, e.g. "Y-axis titled 'in-hospital mortality risk' ... 0% to 100%"."""
    return [x.get_attribute("aria-label") or "" for x in chart.locator('[aria-label*="-axis titled"]').all()]


def _every_chart_has_both_axes(page, view: str) -> None:
    charts = page.locator(".vega-embed")
    for i in range(charts.count()):
        axes = _axes(charts.nth(i))
        assert any(a.startswith("X-axis") for a in axes) and any(a.startswith("Y-axis") for a in axes), (view, i, axes)


def _nothing_internal(page, view: str) -> None:
    """The ward's pages and the sidebar show no FORBIDDEN text. The System page is the operators': its
    connection line and counter names are for them, so it is not checked."""
    if view == "System":
        return
    # Material icons are ligatures (the text "keyboard_arrow_right" drawn as an arrow): not read as words.
    text = page.evaluate("""() => { const main = document.querySelector("[data-testid='stApp']").cloneNode(true);
        main.querySelectorAll("[data-testid='stIconMaterial']").forEach(e => e.remove());
        document.body.appendChild(main); const text = main.innerText; main.remove(); return text; }""")
    found = {what: sorted(set(re.findall(pattern, text)))[:5] for what, pattern in FORBIDDEN.items()}
    assert not any(found.values()), (view, {k: v for k, v in found.items() if v})


def _nothing_cut_off(page, view: str) -> None:
    """No scroller of the page (the page itself, an HTML table's frame) holds content wider than it shows."""
    cut = page.evaluate("""() => [document.scrollingElement, ...document.querySelectorAll('div[style*="overflow-x"]')]
        .filter(e => e.scrollWidth > e.clientWidth + 1)
        .map(e => (e.querySelector('table') || e).id || e.tagName + ' ' + e.scrollWidth + '>' + e.clientWidth)""")
    assert not cut, (view, cut)


def _badges_show_their_raise_records(board, stays) -> None:
    """Each open alert's badge gives the raise record's time and value, not a later record's."""
    from dashboard.data import open_alerts
    from dashboard.format import task_value

    text, checked, later_differs = board.inner_text(), 0, 0
    for s in stays:
        for alert in open_alerts(s.alerts):
            raised = next(a for a in s.alerts if a.alert_id == alert.episode_id)
            shown = (rf"raised {raised.at:%d %b %H:%M}(?: \([^)]*\))?(?: as {raised.level})? at "
                     rf"{re.escape(task_value(raised.task, raised.value))}")
            assert re.search(shown, text), (s.stay_id, shown, text)
            checked += 1
            later_differs += alert.value != raised.value
    assert checked and later_differs, "the sample ward should have an open alert whose newest record has another value"


def test_every_page_in_headless_chromium(served_dashboard, tmp_path):
    """Each page renders at 1,600 px with no console errors or warnings, nothing cut off and nothing internal
    (FORBIDDEN), and every chart has its axes; the board shows bed numbers and badges from their raise
    records; the patient page shows the vitals charts, a MedM2T axis of 0-100 % and the ECG on its grid.
    Screenshots go to MEDM2T_SCREENSHOT_DIR, else to the test's temp folder."""
    from playwright.sync_api import expect, sync_playwright

    base, stays = served_dashboard
    shots = Path(os.environ.get("MEDM2T_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    console: list[tuple[str, str, str]] = []
    target = next(s for s in stays if s.medm2t is not None)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            view = "start"
            page.on("console", lambda m: console.append((view, m.type, m.text)))
            page.goto(base, wait_until="domcontentloaded", timeout=60_000)
            board = page.locator("#ward-table")
            board.wait_for(timeout=60_000)
            for s in stays:
                expect(board.get_by_text(str(s.stay_id), exact=True)).to_have_count(1)
            expect(board.get_by_text("NEWS2 (rule score, points)")).to_have_count(1)
            expect(board.get_by_text("Bed", exact=True)).to_have_count(1)
            for i in range(1, len(stays) + 1):  # the sample ward's beds are numbered 1..n
                expect(board.get_by_text(str(i), exact=True)).to_have_count(1)
            page.screenshot(path=str(shots / "ward_board.png"), full_page=True)  # before the checks: evidence
            _badges_show_their_raise_records(board, stays)
            _nothing_internal(page, "Ward board")
            _nothing_cut_off(page, "Ward board")

            # The stay link opens the patient page of that stay, and live refresh keeps it there.
            view = "Patient"
            board.get_by_text(str(target.stay_id), exact=True).click()
            page.get_by_text(f"Stay {target.stay_id}", exact=True).wait_for(timeout=60_000)
            page.get_by_text("12-lead ECG", exact=True).wait_for(timeout=30_000)
            charts = page.locator(".vega-embed")
            charts.nth(4).wait_for(state="attached", timeout=30_000)  # trajectories x 2, vitals, ECG, previous ECG (hidden tab)
            time.sleep(3)  # across at least one refresh
            expect(page.get_by_text(f"Stay {target.stay_id}", exact=True)).to_have_count(1)
            axes = [a for i in range(charts.count()) for a in _axes(charts.nth(i))]
            assert any(a.startswith("Y-axis titled 'in-hospital mortality risk'") and a.endswith("from 0% to 100%") for a in axes), axes
            for title in VITALS_AXES:
                assert any(a.startswith(f"Y-axis titled '{title}'") for a in axes), (title, axes)
            assert any(a.startswith("X-axis titled 'seconds (25 mm/s; large square 0.2 s") for a in axes), axes
            _every_chart_has_both_axes(page, view)
            _nothing_internal(page, view)
            _nothing_cut_off(page, view)
            # Streamlit scrolls inside its own container: grow the viewport to capture the whole page
            page.set_viewport_size({"width": WIDTH, "height": 5200})
            time.sleep(1)
            page.screenshot(path=str(shots / "patient.png"))
            page.set_viewport_size({"width": WIDTH, "height": 1000})

            for view in ("Alerts", "Quality", "System"):
                page.goto(f"{base}/?view={view}", wait_until="domcontentloaded", timeout=60_000)
                page.get_by_role("heading", name={"Alerts": "Alert feed", "Quality": "Alert quality"}.get(view, view)).first.wait_for(timeout=60_000)
                time.sleep(3)
                page.screenshot(path=str(shots / f"{view.lower()}.png"), full_page=True)
                _every_chart_has_both_axes(page, view)
                _nothing_internal(page, view)
                _nothing_cut_off(page, view)
        finally:
            browser.close()
    noisy = [m for m in console if m[1] in ("error", "warning")]
    assert not noisy, noisy


@pytest.mark.skipif(not os.environ.get("MEDM2T_DASHBOARD_URL"),
                    reason="set MEDM2T_DASHBOARD_URL to a running dashboard (e.g. after 10 min of `make demo`)")
def test_a_running_dashboard(tmp_path):
    """By hand, against a live demo: each page at 1,600 px, its screenshot saved (MEDM2T_SCREENSHOT_DIR, else
    the test's temp folder) before it is checked for internal text and clipped content; a stay's patient page
    too (the first on the board)."""
    from playwright.sync_api import sync_playwright

    base = os.environ["MEDM2T_DASHBOARD_URL"].rstrip("/")
    shots = Path(os.environ.get("MEDM2T_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            page.goto(base, wait_until="domcontentloaded", timeout=60_000)
            board = page.locator("#ward-table")
            board.wait_for(timeout=60_000)
            stay = board.locator("a").first.inner_text()
            problems = []
            for view, url in (("Ward board", base), ("Patient", f"{base}/?view=Patient&stay={stay}"),
                              ("Alerts", f"{base}/?view=Alerts"), ("Quality", f"{base}/?view=Quality")):
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.locator("[data-testid='stMainBlockContainer'] :is(h1, h2, h3)").first.wait_for(timeout=60_000)
                time.sleep(4)
                page.set_viewport_size({"width": WIDTH, "height": 5200 if view == "Patient" else 1000})
                page.screenshot(path=str(shots / f"demo_{view.lower().replace(' ', '_')}.png"), full_page=True)
                for check in (_nothing_internal, _nothing_cut_off):
                    try:
                        check(page, view)
                    except AssertionError as exc:
                        problems.append(str(exc))
                page.set_viewport_size({"width": WIDTH, "height": 1000})
        finally:
            browser.close()
    assert not problems, problems
