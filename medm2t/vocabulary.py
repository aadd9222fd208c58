"""The product's words, each defined once: alert levels, the model's tasks, CVD classes and scorer names.

Every other module imports them from here. What a clinician reads for them (colours, sentences) lives with
the dashboard; this module holds the identifiers and their order.
"""
from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """How loudly an alert calls, quietest first: the order is the rank. A member equals its string, so
    levels read from JSON or Redis compare and hash as members."""

    INFO = "info"
    URGENT = "urgent"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        """1 for info up to 3 for emergency (0 is no alert at all, `rank_of(None)`)."""
        return _RANKS[self]

    @property
    def demands_response(self) -> bool:
        """Urgent and emergency alerts ask for a clinician: they escalate when nobody acknowledges them, and
        they flag a stay as deteriorating in the alert-quality figures. Info alerts are shown only."""
        return self is not Level.INFO

    @staticmethod
    def rank_of(level: str | None) -> int:
        """A level's rank from its name, a member or None (a dict lookup: it runs per rule and score)."""
        return _RANKS[level]


_RANKS: dict[str | None, int] = {None: 0, **{level: i + 1 for i, level in enumerate(Level)}}
LEVEL_NAMES: tuple[str, ...] = tuple(level.value for level in Level)  # for Literal[...] fields in schemas

# The model's tasks, in its heads' order, and the classes of its 90-day cardiovascular-disease head.
MORTALITY, LOS_REMAINING, CVD_90D = "mortality", "los_remaining", "cvd_90d"
TASKS: tuple[str, ...] = (MORTALITY, LOS_REMAINING, CVD_90D)
CVD_NAMES: dict[str, str] = {"none": "no CVD event", "chd": "coronary heart disease", "stroke": "stroke",
                             "hf": "heart failure"}  # in the head's class order, with what a clinician reads
CVD_CLASSES: tuple[str, ...] = tuple(CVD_NAMES)

# The scorers the worker can run.
NEWS2, MEDM2T = "news2", "medm2t"
SCORERS: tuple[str, ...] = (NEWS2, MEDM2T)
