"""Fixtures of the stream tests that run MedM2T."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(synth_cohort, tmp_path_factory):
    """(folder, model_version) of a small-preset checkpoint fitted on the synthetic cohort."""
    from model.checkpoint import save_checkpoint
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.inputs import collate
    from model.network import MedM2T
    from replay.sources import parse_spec

    stays = list(parse_spec(f"synth:{synth_cohort}").stays())
    cfg = ModelConfig.from_preset("small")
    feat = fit_featurizer(stays, cfg)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec())
    model.train()  # move BatchNorm running stats off their init values so outputs differ between stays
    with torch.no_grad():
        model(collate([feat.encode(s, s[0].time + timedelta(hours=12)) for s in stays], cfg))
    out = save_checkpoint(tmp_path_factory.mktemp("ck") / "medm2t", model.eval(), feat, cfg, {},
                          {"data": "30-stay synthetic cohort", "note": "untrained weights (pipeline test)",
                           "tasks_without_labels": ["cvd_90d"]})
    return out, json.loads((out / "meta.json").read_text())["model_version"]
