"""The dashboard pages, run by Streamlit's AppTest against a real Redis seeded through the canonical models."""
from __future__ import annotations

import html
import json
from pathlib import Path

from dashboard import format as fmt
from medm2t.events import Alert
from medm2t.settings import get_settings
from stream import keys
from stream.scorers.news2 import VERSION as NEWS2_VERSION
from tests.helpers.paths import DASHBOARD_APP
from tests.helpers.sample_ward import write_sample_ward

def run_app(view: str | None = None, stay: int | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(DASHBOARD_APP, default_timeout=60)
    if view:
        at.query_params["view"] = view
    if stay is not None:
        at.query_params["stay"] = str(stay)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [m.value for m in at.header]
    parts += [m.value for m in at.subheader] + [m.value for m in at.info] + [m.value for m in at.warning]
    parts += [m.value for m in at.error] + [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_ward_board_lists_every_seeded_stay_sorted_by_risk(dash_redis):
    stays = write_sample_ward(dash_redis)
    at = run_app()
    board = next(m.value for m in at.markdown if 'id="ward-table"' in m.value)
    positions = {s.stay_id: board.index(str(s.stay_id)) for s in stays}
    assert all(f"<b>{i + 1}</b></td>" in board for i in range(len(stays)))  # bed numbers from the StayOpened
    for s in stays:
        news2 = s.news2.tasks["news2"]
        assert f"{news2.value:.0f} · {news2.band}" in board
        if s.medm2t is not None:
            assert fmt.probability(s.medm2t.tasks["mortality"].value) in board
    # The header says what the number is in a short name; its tooltip gives the model version and calibration
    # as the score states them.
    import html as _html

    model = next(s.medm2t for s in stays if s.medm2t)
    tip = _html.escape(f"Model {model.model_version}; {model.tasks['mortality'].calibration}.")
    assert f'title="{tip}' in board and ">MedM2T in-hospital mortality risk</th>" in board
    assert "NEWS2 (rule score, points)" in board
    # Highest risk first: a stay whose worst open alert is worse comes before one whose is less bad.
    from dashboard.data import open_alerts
    from medm2t.vocabulary import Level

    worst = {s.stay_id: max((Level.rank_of(a.level) for a in open_alerts(s.alerts)), default=0) for s in stays}
    assert len(set(worst.values())) > 1, worst  # the sample ward has stays at more than one alert level
    assert all(positions[a] < positions[b] for a in worst for b in worst if worst[a] > worst[b]), (worst, positions)
    assert "stale" in board and "not scored" in board
    assert any(m.label == "Active stays" and str(m.value) == str(len(stays)) for m in at.metric)


def test_empty_redis_shows_friendly_no_data_message_on_every_page(dash_redis):
    for view in ("Ward board", "Patient", "Alerts", "Quality", "System"):
        text = page_text(run_app(view))
        assert "No data yet" in text or "No alerts yet" in text or "No metrics yet" in text or "No outcomes yet" in text, (view, text)


def test_patient_page_shows_scores_vitals_labs_and_ecg(dash_redis):
    stays = write_sample_ward(dash_redis)
    target = next(s for s in stays if s.medm2t and s.alerts)
    at = run_app("Patient", target.stay_id)
    assert at.selectbox(key="patient_stay").value == target.stay_id
    text = page_text(at)
    assert f"Stay {target.stay_id}" in text
    assert f"NEWS2 (rule score, points) {target.news2.tasks['news2'].value:.0f}" in text
    assert fmt.probability(target.medm2t.tasks["mortality"].value) in text
    assert target.alerts[0].reason in text
    assert f"Top drivers of this MedM2T in-hospital mortality risk: {target.medm2t.tasks['mortality'].detail['drivers']}." in text
    assert f"the deep network adds {target.medm2t.tasks['mortality'].detail['deep_log_odds']:+.2f}, not attributed to inputs" in text
    assert {"Score trajectory", "Vitals", "Labs (latest value of each)", "12-lead ECG"} <= {s.value for s in at.subheader}
    labs = at.dataframe[0].value
    assert set(labs["lab"]) == {"Creatinine", "Lactate", "White Blood Cells"}
    charts = at.get("vega_lite_chart")
    assert len(charts) == 5  # NEWS2 and MedM2T trajectories, vitals, the latest ECG and (second tab) the previous
    ecg = json.loads(charts[3].proto.spec)
    assert ecg["layer"][0]["layer"][0]["encoding"]["x"]["title"].startswith("seconds (25 mm/s")  # the ECG paper grid
    intervals = at.dataframe[1].value.set_index("measure")
    assert intervals.loc["QRS duration", "unit"] == "ms"
    assert intervals.loc["QRS duration", "change"] == "+10"  # against the previous ECG


def test_one_stay_exports_as_csv_with_its_scores_alerts_and_inputs(dash_redis):
    import io

    import pandas as pd

    from dashboard.data import Reader
    from dashboard.export import stay_csv

    stays = write_sample_ward(dash_redis)
    target = next(s for s in stays if s.medm2t and s.alerts)
    at = run_app("Patient", target.stay_id)
    assert [b.label for b in at.get("download_button")] == ["Download this stay as CSV"]
    reader = Reader(dash_redis)
    row = reader.stay(target.stay_id)
    df = pd.read_csv(io.StringIO(stay_csv(row, reader.measurements(target.stay_id)).decode()))
    assert set(df["record"]) == {"score", "alert", "input"}
    mortality = df[(df["record"] == "score") & (df["name"] == "mortality")]
    assert len(mortality) == len(row.history["medm2t"])
    assert (mortality["model_version"] == target.medm2t.model_version).all()
    assert (mortality["calibration"] == target.medm2t.tasks["mortality"].calibration).all()
    assert len(df[df["record"] == "alert"]) == len(row.alerts)
    assert len(df[df["record"] == "input"]) == len(reader.measurements(target.stay_id))
    assert pd.to_datetime(df["clinical_time"]).is_monotonic_increasing


def test_a_third_scorer_appears_from_its_model_card_alone(dash_redis):
    """No dashboard edit: a card that declares a board task with alerts gives a board column, a patient-page
    metric and a trajectory; the board sorts by it after the others, and says so."""
    from datetime import timedelta

    from medm2t.cards import ModelCard, TaskCard
    from medm2t.events import RiskScore, TaskScore

    stays = write_sample_ward(dash_redis)
    target = stays[0]
    card = ModelCard(name="SOFA", version="sofa-1996", order=30, tasks=(TaskCard(
        name="sofa", display="organ failure score, points", kind="points", alerts=True, board=True, scale=(0, 24)),))
    dash_redis.set(keys.model_card("sofa"), card.model_dump_json())
    start = target.news2.scored_at - timedelta(hours=3)
    for h, points in enumerate((2, 5, 9)):
        score = RiskScore(stay_id=target.stay_id, subject_id=target.subject_id, scorer="sofa", model_version="sofa-1996",
                          scored_at=start + timedelta(hours=h), tasks={"sofa": TaskScore(
                              value=points, kind="points", calibration="rule score (Vincent 1996), not a probability")})
        dash_redis.zadd(keys.score_history(target.stay_id, "sofa"), {score.model_dump_json(): score.scored_at.timestamp()})
    dash_redis.set(keys.latest_score(target.stay_id, "sofa"), score.model_dump_json())

    board = page_text(run_app("Ward board"))
    assert "SOFA (organ failure score, points)" in board
    assert "then SOFA organ failure score, points" in board  # the sort rule, in words
    at = run_app("Patient", target.stay_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["SOFA (organ failure score, points)"] == "9"
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert any("SOFA (points)" in json.dumps(c) for c in charts)


def test_patient_page_switches_stay_with_the_picker(dash_redis):
    stays = write_sample_ward(dash_redis)
    at = run_app("Patient", stays[0].stay_id)
    at.selectbox(key="patient_stay").select(stays[-1].stay_id).run()
    assert f"Stay {stays[-1].stay_id}" in page_text(at)
    assert "MedM2T in-hospital mortality risk not scored" in page_text(at)  # the last sample stay has no model score


def test_alert_feed_newest_first_with_levels(dash_redis):
    stays = write_sample_ward(dash_redis)
    seeded = [a for s in stays for a in s.alerts]
    assert seeded
    at = run_app("Alerts")
    feed = next(m.value for m in at.markdown if 'id="alert-table"' in m.value)
    newest_first = [Alert.model_validate_json(raw) for raw in dash_redis.lrange(keys.ALERT_FEED, 0, -1)]
    rows = feed.split("<tbody>", 1)[1].split("<tr>")[1:]
    assert len(rows) == len(newest_first) == len(seeded)
    for row, a in zip(rows, newest_first):  # one row per record, in the feed's order
        assert html.escape(a.reason) in row and f">{a.stay_id}</a>" in row and html.escape(fmt.clock(a.at)) in row
    for a in seeded:
        assert fmt.TIER_COLOURS[a.level][0] in feed and str(a.stay_id) in feed
    at.multiselect(key="feed_levels").set_value(["info"]).run()
    feed = next(m.value for m in at.markdown if 'id="alert-table"' in m.value)
    assert all(a.reason not in feed for a in seeded if a.level != "info")


def test_system_page_shows_counters_latency_and_model_cards(dash_redis):
    stays = write_sample_ward(dash_redis)
    at = run_app("System")
    counters = dash_redis.hgetall(keys.COUNTERS)
    metrics = {m.label: m.value for m in at.metric}
    for name, value in counters.items():
        assert metrics[name.replace("_", " ")] == f"{float(value):,.0f}"
    assert "p95 (ms)" in metrics
    text = page_text(at)
    model = next(s.medm2t for s in stays if s.medm2t)
    assert f"#### NEWS2 · version `{NEWS2_VERSION}`" in text and f"#### MedM2T · version `{model.model_version}`" in text
    assert [e.label for e in at.expander] == ["Raw model card (JSON)"] * 2


def test_system_page_reads_the_real_model_cards_as_tables(dash_redis):
    """The cards the worker publishes (real NEWS2 scorer, real demo checkpoint): version, calibration per task,
    training data and validation metrics as tables, and the raw JSON behind an expander."""
    import json

    from medm2t.settings import DEMO_CHECKPOINT
    from stream.scorers.medm2t import MedM2TScorer
    from stream.scorers.news2 import News2Scorer

    cards = {"news2": News2Scorer().card(), "medm2t": MedM2TScorer.load(DEMO_CHECKPOINT, device="cpu").card()}
    for name, card in cards.items():
        dash_redis.set(keys.model_card(name), json.dumps(card))
    at = run_app("System")
    text = page_text(at)
    medm2t = cards["medm2t"]
    assert f"#### MedM2T · version `{medm2t['version']}`" in text
    assert all(f"- {task}: {label}" in text for task, label in medm2t["calibration"].items())
    tables = [d.value for d in at.dataframe]
    training = next(t for t in tables if "role" in t)
    assert training["stays"].iloc[0] == medm2t["training_data"]["data"]["stays"]
    validation = next(t for t in tables if "AUROC" in t)
    assert validation["AUROC"].iloc[0] == round(medm2t["metrics"]["validation"]["mortality"]["auroc"], 3)
    assert list(validation["at"])[0] == "end of data" and len(validation) > 1  # and the landmarks
    calibration = next(t for t in tables if "fitted temperature" in t)
    assert set(calibration["task"]) == set(medm2t["calibration_fit"]["tasks"])


def test_malformed_entries_are_skipped_and_named(dash_redis):
    stays = write_sample_ward(dash_redis, n_stays=2)
    bad_key = keys.stay_alerts(stays[0].stay_id)
    dash_redis.lpush(bad_key, '{"alert_id": "x"}')
    text = page_text(run_app())
    assert bad_key in text and "malformed Alert" in text
    for s in stays:
        assert str(s.stay_id) in text  # the good data is still shown


def test_unreachable_redis_is_reported_on_the_page(monkeypatch):
    from stream.services import free_port

    monkeypatch.setenv("MEDM2T_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    try:
        at = run_app()
        assert any("Cannot reach Redis" in e.value and "Retrying" in e.value for e in at.error)
    finally:
        get_settings.cache_clear()


def test_reruns_do_not_grow_session_state(dash_redis):
    write_sample_ward(dash_redis)
    at = run_app("Patient")
    first = set(at.session_state)
    assert {"view", "patient_stay"} <= first
    for view in ("Ward board", "Alerts", "System", "Patient") * 2:
        at.sidebar.radio(key="view").set_value(view).run()
        assert not at.exception
    assert set(at.session_state) == first


def test_ecg_display_downsampling_keeps_every_peak():
    import numpy as np

    from dashboard.ecg import downsample_minmax
    from tests.helpers.sample_ward import synthetic_ecg_mv

    signal = synthetic_ecg_mv()
    t, shown = downsample_minmax(signal, 500.0)
    assert shown.shape[1] < signal.shape[1] / 1.5
    np.testing.assert_allclose(shown.max(axis=1), signal.max(axis=1))
    np.testing.assert_allclose(shown.min(axis=1), signal.min(axis=1))
    assert np.all(np.diff(t, axis=1) >= 0)  # time order kept within each lead


def test_numbers_are_not_shown_with_false_precision():
    assert fmt.probability(0.23456) == "23%"
    assert fmt.probability(0.004) == "<1%" and fmt.probability(0.996) == ">99%"
    assert fmt.days(3.27) == "≈3.5 d"
    # NEWS2 single-parameter alerts carry 0-3 points, never a probability ("<1%", ">99%")
    assert fmt.task_value("news2:single-parameter", 1.0) == "1 point"
    assert fmt.task_value("news2:single-parameter", 3.0) == "3 points"
    assert fmt.task_value("mortality", 1.0) == ">99%"


def test_cli_rejects_a_url_that_is_not_redis(capsys):
    from medm2t.cli import main

    assert main(["dashboard", "--redis", "http://127.0.0.1:6379"]) == 2
    assert "not a Redis URL" in capsys.readouterr().err


def test_password_is_masked_when_the_url_is_shown():
    from medm2t.settings import safe_url

    assert safe_url("rediss://:s3cret@cache.example:6380/0") == "rediss://:***@cache.example:6380/0"
    assert "s3cret" not in safe_url("redis://user:s3cret@h/1")


def test_cli_warns_clearly_when_redis_is_down_and_serves_anyway(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from stream.services import free_port, stop_process_group, wait_for_port

    port, dead = free_port(), free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "medm2t"), "dashboard", "--port", str(port),
                                 "--redis", f"redis://:pw@127.0.0.1:{dead}/0"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as resp:
            assert resp.status == 200
    finally:
        stop_process_group(proc, timeout=20)
    text = log.read_text()
    assert f"Redis at redis://:***@127.0.0.1:{dead}/0 is not reachable" in text and "keeps retrying" in text
    assert ":pw@" not in text


def test_ward_read_ranks_every_stay_but_reads_history_only_for_drawn_rows(dash_redis):
    from dashboard.data import Reader

    stays = write_sample_ward(dash_redis, n_stays=3)
    rows = Reader(dash_redis).ward(limit=1)
    assert sorted(r.stay_id for r in rows) == sorted(s.stay_id for s in stays)
    assert rows[0].history["news2"] and not any(r.history["news2"] for r in rows[1:])


def test_open_alerts_show_level_since_when_and_the_value_then_and_now(dash_redis):
    """Issue 9's display bugs: a chip gave the raise-time value beside a different current score, and
    single-parameter alerts were drawn at 0-3 on the aggregate's axis. The MedM2T axis is fixed at 0-100 %."""
    import re
    from datetime import timedelta

    stays = write_sample_ward(dash_redis)
    target = next(s for s in stays if s.medm2t)
    news2 = target.news2.tasks["news2"]
    common = dict(stay_id=target.stay_id, subject_id=target.news2.subject_id, scorer="news2",
                  model_version=target.news2.model_version)
    raised = Alert(alert_id="test-agg", task="news2", level="emergency", state="raised", value=news2.value + 4,
                   reason="NEWS2 aggregate high at raise", at=target.news2.scored_at - timedelta(hours=2), **common)
    single = Alert(alert_id="test-single", task="news2:single-parameter", level="info", state="raised", value=3.0,
                   reason="NEWS2 single parameter 3 points (SpO2)", at=target.news2.scored_at - timedelta(hours=1), **common)
    # A later record of the same alert, at another value: the badge's raise time and value stay the raise's.
    later = raised.model_copy(update={"alert_id": "test-agg-ack", "state": "acknowledged", "by": "nurse.kim",
                                      "acknowledged_by": "nurse.kim", "episode_id": "test-agg", "value": news2.value + 9,
                                      "at": raised.at + timedelta(minutes=30)})
    raised = raised.model_copy(update={"episode_id": "test-agg"})
    for a in (raised, single, later):
        dash_redis.lpush(keys.stay_alerts(target.stay_id), a.model_dump_json())
        dash_redis.lpush(keys.ALERT_FEED, a.model_dump_json())
    single_now = news2.detail.get("max_single")
    single_now = "now –" if single_now is None else f"now {fmt.task_value(single.task, float(single_now))}"
    ago = lambda a: fmt.age((target.news2.scored_at - a.at).total_seconds())  # noqa: E731 - the stay's clinical clock
    want = [f"emergency · NEWS2 · raised {raised.at:%d %b %H:%M} ({ago(raised)} clinical) at "
            f"{fmt.task_value('news2', raised.value)} · now {fmt.task_value('news2', news2.value)}",
            f"info · NEWS2 single parameter · raised {single.at:%d %b %H:%M} ({ago(single)} clinical) at 3 points · "
            f"{single_now}"]

    board = next(m.value for m in run_app().markdown if 'id="ward-table"' in m.value)
    assert all(w in board for w in want), board
    assert f'title="{later.reason}"' in board and "acknowledged by nurse.kim" in board

    at = run_app("Patient", target.stay_id)
    text = page_text(at)
    assert all(w in text for w in want) and later.reason in text
    news2_chart, medm2t_chart = (c.proto.spec for c in at.get("vega_lite_chart")[:2])
    assert '"diamond"' in news2_chart  # single-parameter alerts: along the bottom, not at 3 points
    assert re.search(r'"domain":\s*\[\s*0,\s*1\s*\]', medm2t_chart)



def test_quality_page_shows_the_reports_figures_and_their_history(dash_redis):
    import json
    import time
    from datetime import timedelta

    from medm2t.events import Outcome
    from stream import quality

    stays = write_sample_ward(dash_redis)
    alerted = next(s for s in stays if s.alerts)
    first = min(a.at for a in alerted.alerts)
    outcome = Outcome(event_id="o1", stay_id=alerted.stay_id, subject_id=alerted.alerts[0].subject_id, time=first,
                      available_time=first, source="test", hospital_death=True, deathtime=first + timedelta(hours=3),
                      icu_intime=first - timedelta(days=1), icu_outtime=first + timedelta(hours=3))
    dash_redis.hset(keys.QUALITY_OUTCOMES, str(alerted.stay_id), outcome.model_dump_json())
    assert quality.snapshot(dash_redis, 10.0) is not None
    report = quality.read(dash_redis)
    dash_redis.lpush(keys.QUALITY_HISTORY, json.dumps({**report, "outcomes": 0, "wall_s": time.time() - 10}))
    at = run_app("Quality")
    text = page_text(at)
    assert "Over 1 stays with an outcome" in text
    table = at.dataframe[0].value
    assert list(table.columns) == ["MedM2T", "NEWS2"] == [{"medm2t": "MedM2T", "news2": "NEWS2"}[s]
                                                         for s in report["scorers"]]  # the cards' names
    assert "alerts per patient-day" in table.index
    assert table.loc["deaths", "NEWS2"] == "1"
    from dashboard.views.quality import PLOTTED

    # one per figure, plus the trade-off curve of the demo checkpoint's tuned policy (the sample ward runs it)
    assert len(at.get("vega_lite_chart")) == len(PLOTTED) + 1 and "Alert policy trade-off" in text
    assert "bed-time with an urgent+ alert open" in table.index
