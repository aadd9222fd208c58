"""Tests of the core package medm2t/: events, items, schemas, FHIR, settings and connections."""
