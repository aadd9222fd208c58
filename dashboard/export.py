"""One stay as a CSV a clinician or researcher can take away: every score kept (each with its model version,
task and calibration), every alert record of the audit trail and every input measurement, one row each,
on the stay's clinical clock."""
from __future__ import annotations

import json

import pandas as pd

from dashboard.data import StayRow
from medm2t.events import Measurement

COLUMNS = ("record", "clinical_time", "source", "name", "value", "unit", "model_version", "calibration",
           "band_or_state", "detail")


def stay_frame(row: StayRow, measurements: list[Measurement]) -> pd.DataFrame:
    """Scores, alert records and inputs of one stay, oldest first."""
    rows = []
    for scorer, history in row.history.items():
        for score in history:
            for task, t in score.tasks.items():
                rows.append({"record": "score", "clinical_time": score.scored_at, "source": scorer, "name": task,
                             "value": t.value, "unit": t.kind, "model_version": score.model_version,
                             "calibration": t.calibration, "band_or_state": t.band or "",
                             "detail": json.dumps(t.detail, sort_keys=True) if t.detail else ""})
    for a in row.alerts:
        rows.append({"record": "alert", "clinical_time": a.at, "source": a.scorer, "name": a.task, "value": a.value,
                     "unit": "", "model_version": a.model_version, "calibration": "",
                     "band_or_state": f"{a.level} {a.state}", "detail": f"{a.reason} (by {a.by})"})
    for m in measurements:
        rows.append({"record": "input", "clinical_time": m.time, "source": m.category or "", "name": m.label or m.item,
                     "value": m.value if m.value is not None else m.text, "unit": m.unit or "", "model_version": "",
                     "calibration": "", "band_or_state": "", "detail": f"available {m.available_time.isoformat()}"})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.sort_values(["clinical_time", "record"], kind="stable", ignore_index=True)


def stay_csv(row: StayRow, measurements: list[Measurement]) -> bytes:
    return stay_frame(row, measurements).to_csv(index=False).encode()
