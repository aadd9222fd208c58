"""Model cards: what each scorer says about itself, published by the worker at models:SCORER.

The dashboard renders from these cards, not from scorer names: each card declares its tasks (the keys of
`RiskScore.tasks`), how each is read (kind), whether the alert policy has a rule on it and whether it is a
ward-board column. A new scorer whose card says so appears on the board and the patient page with no
dashboard edit. Anything else a card holds (training data, metrics, intended use) is kept as it is and shown
on the System page.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Key of the task in RiskScore.tasks, e.g. 'mortality'.")
    display: str = Field(description="What the number is, in words, e.g. 'in-hospital mortality risk'.")
    kind: Literal["points", "probability", "days", "class_probabilities"]
    alerts: bool = Field(False, description="The alert policy has a rule on this task (its trajectory is drawn).")
    board: bool = Field(False, description="A ward-board column (and a sort key of the board, in card order).")
    scale: tuple[float, float] | None = Field(None, description="Axis range of a points task (probabilities: 0-1).")
    bands: tuple[str, ...] = Field((), description="The task's bands, lowest first, where it has bands (NEWS2).")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")  # the rest of the card (training data, metrics ...) as published

    name: str = Field(description="Display name, e.g. 'MedM2T'.")
    version: str
    order: int = Field(50, description="Where its columns and charts go among the scorers, lowest first.")
    tasks: tuple[TaskCard, ...] = ()

    def task(self, name: str) -> TaskCard | None:
        return next((t for t in self.tasks if t.name == name), None)
