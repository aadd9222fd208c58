"""The reader contract: every source (MIMIC-IV, MEDS, PhysioNet 2012, synthetic) yields canonical
events grouped per ICU stay, each stay's events in time order.

A stay's list starts with its StayOpened event, then Measurement/Ecg events ordered by
(available_time, time, event_id), then StayClosed, then (evaluation only) its Outcome.
"""
from __future__ import annotations

from typing import Iterator, Protocol

from medm2t.events import _Event


class Reader(Protocol):
    name: str                 # e.g. "mimic-iv"
    # Vitals charted often enough (minutes apart) for the model's dense-vitals grid encoder to see more
    # than the vitals tokens already show; False where they are about hourly (PhysioNet 2012).
    dense_vitals: bool
    warnings: list[str]       # human-readable, each names the file (and row where it applies)

    def stays(self) -> Iterator[list[_Event]]:
        """Yield one list of events per ICU stay, in the order described above."""
        ...

    def stay_ids(self) -> list[int]:
        """All stay ids of the cohort, cheaply (without reading measurements)."""
        ...
