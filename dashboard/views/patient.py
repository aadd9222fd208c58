"""Patient page: one stay's scores, trajectories, vitals, labs and latest 12-lead ECG beside the previous one."""
from __future__ import annotations

import html

import streamlit as st

from dashboard import charts, export, vitals
from dashboard import ecg as ecg_view
from dashboard import format as fmt
from dashboard.data import STAY_ALERTS_READ, TRAJECTORY_POINTS, Reader, StayRow
from medm2t.vocabulary import CVD_NAMES

NO_STAYS = "No data yet: no active stays to show. Start the worker and a replay (`medm2t demo` does both)."


def choose_stay(active: list[int], wanted: int | None) -> int | None:
    """The stay picker (outside the live fragment, so choosing reruns the page). Keeps a deep-linked stay
    selectable even after it has left the ward."""
    options = sorted(set(active) | ({wanted} if wanted is not None else set()))
    if not options:
        st.info(NO_STAYS)
        return None
    index = options.index(wanted) if wanted in options else 0
    return st.selectbox("Stay", options, index=index, key="patient_stay", help="ICU stay id (active stays, plus the one linked)")


def render(reader: Reader, stay_id: int) -> None:
    row = reader.stay(stay_id)
    if row is None:
        st.warning(f"Stay {stay_id}: no data in Redis (never seen, or its state has expired).")
        return
    _header(row)
    _scores(reader, row)
    measurements = reader.measurements(stay_id)
    span = _clinical_span(row, measurements)
    _trajectories(reader, row, span)
    st.subheader("Vitals", anchor=False)
    chart = vitals.vitals_chart(measurements, span)
    if chart is None:
        st.caption("No vitals recorded yet.")
    else:
        st.altair_chart(chart, width="content")
        st.caption("In clinical order, with units. Shaded: reference range (NEWS2's 0-point range; mean arterial "
                   "pressure >= 65 mmHg); red dots: values outside it. GCS total where eye, verbal and motor were "
                   "charted together.")
    st.subheader("Labs (latest value of each)", anchor=False)
    labs = charts.labs_table(measurements, row.opened.static.gender if row.opened else None)
    if labs.empty:
        st.caption("No lab results yet.")
    else:
        st.dataframe(labs, hide_index=True, width="stretch", column_config={
            "lab": st.column_config.TextColumn("lab"),
            "latest": st.column_config.TextColumn("latest result", help="the newest result of this lab, in its unit"),
            "unit": st.column_config.TextColumn("unit"),
            "range": st.column_config.TextColumn(
                "reference range (adult)", help="adult reference range with its unit: the most common range MIMIC-IV's "
                "own lab records (demo v2.2, hosp/labevents) give for this lab; where it differs between women and "
                "men, the one for the patient's sex (named), or both and no flag where the sex is unknown. Empty "
                "where those records give none"),
            "flag": st.column_config.TextColumn(
                "low / high", help="the latest result against the adult reference range from MIMIC-IV's lab records: "
                "low (below it) or high (above it); empty within it, bounds included, or without a range"),
            "change": st.column_config.TextColumn("change", help="against the previous result of this lab"),
            "trend": st.column_config.LineChartColumn("trend", help="every numeric result of this stay, oldest first"),
            "at": st.column_config.DatetimeColumn("result time (clinical)"),
            "age_h": st.column_config.NumberColumn("age (h)", format="%.1f",
                                                   help="hours before the stay's newest data"),
            "old": st.column_config.CheckboxColumn(f"old (> {charts.LAB_OLD_AFTER_H:g} h)"),
            "results": st.column_config.NumberColumn("results", help="results kept for this stay")})
    _ecg(reader, stay_id)
    _audit(row)
    _export(row, measurements)


def _audit(row: StayRow) -> None:
    st.subheader("Alert audit trail", anchor=False)
    if not row.alerts:
        st.caption("No alert records for this stay.")
        return
    headers = [("Clinical time", "The stay's clock when it happened"), ("Wall clock (UTC)", "When it was recorded"),
               ("Record", "What happened: " + ", ".join(fmt.ALERT_STATES.values())),
               ("Level", "info, urgent or emergency"), ("Alert", "Scorer and rule"), ("By", "system or the user"),
               ("Reason", "Why")]
    rows = [[html.escape(fmt.clock(a.at)), html.escape(f"{a.wall_at:%d %b %H:%M:%S}" if a.wall_at else "–"),
             html.escape(fmt.alert_state(a.state)), fmt.tier_badge(a.level), html.escape(fmt.alert_name(a)),
             html.escape(a.by), html.escape(a.reason)] for a in row.alerts]
    st.markdown(fmt.html_table(headers, rows, "audit-table"), unsafe_allow_html=True)
    st.caption(f"Newest first; the newest {len(row.alerts)} records read (every record is also on the alert "
               "topic, for other systems).")


def _header(row: StayRow) -> None:
    st.subheader(f"Stay {row.stay_id}", anchor=False)
    static = row.opened.static if row.opened else None
    facts = [f"subject {row.subject_id}", f"admitted {fmt.clock(row.opened.time) if row.opened else '–'}",
             f"{fmt.hours(row.hours_since_admission)} since admission", f"newest data {fmt.clock(row.last_time)}"]
    if static:
        facts += [x for x in (static.gender and f"sex {static.gender}", static.age and f"age {static.age:.0f}",
                              static.first_careunit, static.admission_type,
                              static.weight_kg and f"{static.weight_kg:.0f} kg",
                              static.height_cm and f"{static.height_cm:.0f} cm") if x]
    st.caption(" · ".join(facts))


def _scores(reader: Reader, row: StayRow) -> None:
    """The newest value of every task of every scorer's card, each saying what it is."""
    cards = reader.cards()
    tasks = [(scorer, card, task) for scorer, card in cards.items() for task in card.tasks]
    for i in range(0, len(tasks), 4):
        for col, (scorer, card, task) in zip(st.columns(4), tasks[i:i + 4]):
            _metric(col, row, scorer, card, task)
    for scorer, card in cards.items():
        model = row.scores.get(scorer)
        if model is None:
            continue
        for task in card.tasks:
            score = model.tasks.get(task.name)
            if score and score.detail.get("drivers"):
                st.caption(_drivers_caption(f"{card.name} {task.display}", score.detail))
            elif score and task.kind == "points" and score.detail:
                st.caption(f"{card.name} sub-scores: {fmt.news2_detail(score.detail)}")
        if model.missing:
            st.caption(f"{card.name} had no " + ", ".join(model.missing) + f" for this score (scored at "
                       f"{model.scored_at:%d %b %H:%M}).")
    if row.open_alerts:
        st.markdown("<br>".join(row.chips(long=True, policy=reader.alert_policy())), unsafe_allow_html=True)


def _metric(col, row: StayRow, scorer: str, card, task) -> None:
    label = f"{card.name} ({task.display})" if task.kind == "points" else f"{card.name} {task.display}"
    score = row.task(scorer, task.name)
    if score is None:
        col.metric(label, "not scored", help=f"No {card.name} score for this stay yet.")
        return
    rounding = {"probability": "Rounded to whole percent.", "days": "Rounded to half a day."}.get(task.kind)
    if task.kind == "class_probabilities" and score.probabilities:
        rounding = "Probability of each class, rounded: " + ", ".join(
            f"{CVD_NAMES.get(k, k)} {fmt.probability(v)}" for k, v in sorted(score.probabilities.items(),
                                                                                 key=lambda kv: -kv[1]))
    col.metric(label, fmt.score_text(task.kind, score), help=rounding or score.calibration)
    if score.band:
        col.markdown(fmt.tier_badge(score.band, f"band {score.band}"), unsafe_allow_html=True)
    if task.kind != "points":
        col.caption(f"model {row.scores[scorer].model_version}, {score.calibration}")


def _drivers_caption(what: str, detail: dict) -> str:
    """A score's top drivers (model/explain.py) and what the figures mean."""
    deep = detail.get("deep_log_odds")
    deep_words = f"; the deep network adds {deep:+.2f}, not attributed to inputs" if isinstance(deep, float) else ""
    return (f"Top drivers of this {what}: {detail['drivers']}. In brackets: each input's share of the "
            "log-odds against a typical patient (median values, average age and categories), exact for the "
            f"model's linear part{deep_words}. Drivers are associations the model learned, not causes.")


def _clinical_span(row: StayRow, measurements) -> tuple | None:
    """First to last clinical time of the stay's scores and measurements: the x axis every chart here shares."""
    times = [m.time for m in measurements] + [s.scored_at for h in row.history.values() for s in h]
    return (min(times), max(times)) if times else None


def _trajectories(reader: Reader, row: StayRow, span) -> None:
    """One chart per task that the alert policy watches (its card says `alerts`), two per row."""
    st.subheader("Score trajectory", anchor=False)
    policy = reader.alert_policy()
    watched = [(scorer, card, task) for scorer, card in reader.cards().items() for task in card.tasks if task.alerts]
    for i in range(0, len(watched), 2):
        for col, (scorer, card, task) in zip(st.columns(2), watched[i:i + 2]):
            with col:
                _trajectory(row, policy, scorer, card, task, span)


def _trajectory(row: StayRow, policy, scorer: str, card, task, span) -> None:
    history = row.history.get(scorer, [])
    if not any(task.name in s.tasks for s in history):
        st.caption(f"No {card.name} history yet.")
        return
    ruled = task.kind == "probability" or f"{scorer}/{task.name}" in policy.rules
    levels = policy.thresholds(scorer, task.name) if ruled else None
    where = ""
    if levels:
        shown = "{:.0%}" if task.kind == "probability" else "{:g}"
        where = f" Dashed lines: the alert policy's levels ({_levels(levels, shown)}; policy {html.escape(policy.name)})."
    if task.kind == "points":
        st.altair_chart(charts.points_trajectory(history, scorer, task.name, f"{card.name} (points)", row.alerts,
                                                 levels, span), width="stretch")
        st.caption(f"{card.name}, {html.escape(history[-1].tasks[task.name].calibration)}.{where} Triangles: alert "
                   "transitions, at their points. Diamonds along the bottom: its other alert rules (single "
                   "parameter, stale data), when they happened (their values are not on this axis).")
    else:
        st.altair_chart(charts.probability_trajectory(history, scorer, task.name, task.display, row.alerts, levels,
                                                      span), width="stretch")
        latest = history[-1]
        st.caption(f"{card.name} {task.display}, model {html.escape(latest.model_version)}; "
                   f"{html.escape(latest.tasks[task.name].calibration if task.name in latest.tasks else 'no output')}."
                   f"{where}")


def _levels(thresholds: dict[str, float], fmt: str) -> str:
    return ", ".join(f"{level} at {fmt.format(x)}" for level, x in thresholds.items())


def _ecg(reader: Reader, stay_id: int) -> None:
    st.subheader("12-lead ECG", anchor=False)
    recent = reader.recent_ecgs(stay_id, 2)
    if not recent:
        st.caption("No ECG for this stay yet.")
        return
    latest, previous = recent[0], (recent[1] if len(recent) > 1 else None)
    shown = [("Latest", latest)] + ([("Previous", previous)] if previous else [])
    for tab, (name, ecg) in zip(st.tabs([f"{name}, {fmt.clock(e.time)}" for name, e in shown]), shown):
        with tab:
            st.caption(f"{name} ECG: study {ecg.study_id}, recorded {fmt.clock(ecg.time)}, {ecg.waveform.fs:g} Hz, "
                       f"{ecg.waveform.n_samples / ecg.waveform.fs:g} s; drawn to scale at 25 mm/s and 10 mm/mV "
                       "from a min/max envelope of the samples, clipped at ±1.5 mV per row.")
            st.altair_chart(ecg_view.ecg_paper(ecg), width="content")
            if ecg.statements:
                st.caption("Machine statements: " + "; ".join(ecg.statements))
            if ecg.quality:
                st.warning("ECG quality: " + "; ".join(ecg.quality))
    st.markdown("**Machine intervals**" + (f" (latest against the previous ECG of {fmt.clock(previous.time)})"
                                           if previous else ""))
    st.dataframe(ecg_view.intervals_table(latest, previous), hide_index=True, column_config={
        "change": st.column_config.TextColumn("change", help="latest minus previous, in the measure's unit")})
    if previous is not None:
        said, was = set(latest.statements), set(previous.statements)
        if said != was:
            st.caption("Statements new since the previous ECG: " + ("; ".join(sorted(said - was)) or "none")
                       + ". No longer stated: " + ("; ".join(sorted(was - said)) or "none") + ".")


def _export(row: StayRow, measurements) -> None:
    st.download_button(
        "Download this stay as CSV", export.stay_csv(row, measurements), file_name=f"stay-{row.stay_id}.csv",
        mime="text/csv", key="export_stay", on_click="ignore",
        help=f"One row per score (with its model version, task and calibration; the newest "
             f"{TRAJECTORY_POINTS:,} per scorer), per alert record (the newest {STAY_ALERTS_READ}) and per input "
             "measurement, on the stay's clinical clock.")
