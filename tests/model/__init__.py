"""Tests of model/: MedM2T features, network, training, calibration, explanation and streaming inference."""
