"""Tests of stream/: scorers, alert engine and policy, services, and the pipeline end to end on a real broker and Redis."""
