"""Tests of the `medm2t` command (medm2t/cli/) as a user runs it."""
