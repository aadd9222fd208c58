"""Synthetic ICU cohort in MIMIC-IV 2.2 + MIMIC-IV-ECG 1.0 file layouts (the project's embedded default data)."""
from replay.synth.generate import Summary, generate

__all__ = ["Summary", "generate"]
