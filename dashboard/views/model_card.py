"""A model card as a clinician reads it: what the model is, what it was trained and validated on, how far its
numbers can be trusted (calibration), and what it is for. The raw card stays one click away."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import format as fmt
from medm2t.vocabulary import LOS_REMAINING, MORTALITY

METRIC_COLUMNS = {"n": "stays", "positives": "deaths", "auroc": "AUROC", "average_precision": "AUPRC (AP)",
                  "brier": "Brier", "ece": "ECE"}


def render(name: str, card: dict) -> None:
    st.markdown(f"#### {card.get('name', name)} · version `{card.get('version', card.get('model_version', '?'))}`")
    facts = {k: card.get(k) for k in ("architecture", "preset", "n_parameters", "created", "device",
                                      "scoring_cadence_minutes", "lookback_hours", "reference") if card.get(k) is not None}
    if facts:
        st.markdown(" · ".join(f"**{k.replace('_', ' ')}**: {_fmt(v)}" for k, v in facts.items()))
    _calibration(card)
    _training_data(card.get("training_data"))
    _metrics(card.get("metrics") or {})
    if card.get("tasks_without_labels"):
        st.warning("Untrained heads (no labels in the training data): " + ", ".join(card["tasks_without_labels"]))
    if card.get("intended_use"):
        st.markdown(f"**Intended use.** {card['intended_use']}")
    with st.expander("Raw model card (JSON)"):
        st.json(card)


def _calibration(card: dict) -> None:
    labels = card.get("calibration")
    if isinstance(labels, dict):
        st.markdown("**Calibration, per task**\n\n" + "\n".join(f"- {task}: {text}" for task, text in labels.items()))
    elif labels:
        st.markdown(f"**Calibration.** {labels}")
    fit = (card.get("calibration_fit") or {}).get("tasks")
    if fit:
        st.dataframe(pd.DataFrame([{"task": t, "method": f["method"], "fitted temperature": f["fitted_temperature"],
                                    "p (vs 1)": f["p_value"], "applied": f["temperature"], "samples": f["n"],
                                    "ECE before": f["ece_before"], "ECE after": f["ece_after"], "fitted on": f["data"]}
                                   for t, f in fit.items()]), hide_index=True)


def _training_data(info) -> None:
    if not isinstance(info, dict) or not info:
        return
    rows = []
    for role in ("data", "validation"):
        d = info.get(role)
        if isinstance(d, dict):
            rows.append({"role": "training" if role == "data" else "validation", "data": d.get("spec"),
                         "stays": d.get("stays"), "deaths": d.get("in_hospital_deaths"), "with ECG": d.get("stays_with_ecg")})
        elif d:
            rows.append({"role": "training" if role == "data" else "validation", "data": str(d)})
    if rows:
        st.markdown("**Training data**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def _metrics(metrics: dict) -> None:
    for key, title in (("validation", "Validation"), ("calibration_holdout", "Held-out calibration stays")):
        m = metrics.get(key)
        if not isinstance(m, dict) or MORTALITY not in m:
            continue
        rows = [{"at": "end of data", **_mortality_row(m[MORTALITY])}]
        rows += [{"at": lm, **_mortality_row(v[MORTALITY])} for lm, v in (m.get("landmarks") or {}).items()]
        st.markdown(f"**{title}: in-hospital mortality**" + (f" ({m['note']})" if m.get("note") else ""))
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        los = m.get(LOS_REMAINING) or {}
        if los.get("mae") is not None:
            st.caption(f"Remaining ICU stay: MAE {fmt.days(los['mae'])} over {los['n']} stays.")


def _mortality_row(m: dict) -> dict:
    return {label: (round(m[k], 3) if isinstance(m.get(k), float) else m.get(k)) for k, label in METRIC_COLUMNS.items()}


def _fmt(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)
