"""Tests of replay/: the readers, the synthetic cohort and the replay engine."""
