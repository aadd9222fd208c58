"""Self-supervised masked-item pre-training of the sparse encoders (model/selfsupervised.py), on hand-made
stays whose labs share a hidden severity: real featurizer, network and optimiser, nothing mocked."""
from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medm2t.events import Measurement, StayOpened, StaticFeatures, make_event_id  # noqa: E402

T0 = datetime(2150, 1, 1, 8, 0)
LABS = ("creatinine", "urea", "noise")  # the first two follow one hidden severity, the third is noise


def _stay(i: int, rng: np.random.Generator) -> list:
    start = T0 + timedelta(days=i)
    common = dict(stay_id=3000 + i, subject_id=3000 + i, source="test")
    events: list = [StayOpened(event_id=make_event_id("test", i, "open"), time=start, available_time=start,
                               static=StaticFeatures(gender="F", age=60.0), **common)]
    severity = rng.normal()
    for h in range(0, 24, 4):
        t = start + timedelta(hours=h)
        values = {"creatinine": severity + rng.normal(0, 0.2), "urea": 2 * severity + rng.normal(0, 0.4),
                  "noise": rng.normal()}
        events += [Measurement(event_id=make_event_id("test", i, item, h), time=t, available_time=t, item=item,
                               category="lab", value=float(v), **common) for item, v in values.items()]
    return events


@pytest.fixture(scope="module")
def setup():
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.inputs import collate
    from model.network import MedM2T

    rng = np.random.default_rng(3)
    stays = [_stay(i, rng) for i in range(96)]
    cfg = ModelConfig.from_preset("small")
    cfg.modalities = ("static", "labs")
    feat = fit_featurizer(stays, cfg, progress=False)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec())
    inputs = [feat.encode(s, T0 + timedelta(days=i, hours=23)) for i, s in enumerate(stays)]
    return model, feat, cfg, inputs, collate


def test_masking_removes_exactly_the_hidden_items(setup):
    from model.selfsupervised import draw_hidden, item_targets, mask_items

    model, _, cfg, inputs, collate = setup
    batch = collate(inputs[:8], cfg)
    enc, sp = model.encoders["labs"], batch.sparse["labs"]
    target, has = item_targets(enc, sp, batch.size)
    assert has.sum(1).tolist() == [len(LABS)] * 8  # every stay has every lab
    hide = draw_hidden(has, 0.25, torch.Generator().manual_seed(0))
    assert hide.any(1).all() and not (hide & ~has).any()  # at least one per sample, only items with data
    masked = mask_items(sp, hide, enc.n_windows)
    sample = masked["seg"] // enc.n_windows
    assert not hide[sample, masked["item"]].any()
    kept = ~hide[sp["seg"] // enc.n_windows, sp["item"]]
    assert len(masked["val"]) == int(kept.sum()) < len(sp["val"])
    assert (masked["last"][hide.unsqueeze(1).expand_as(masked["last"])] == 0).all()
    visible = ~hide.unsqueeze(1).expand_as(sp["last"])
    assert torch.equal(masked["last"][visible], sp["last"][visible])
    assert (target[has].abs() <= 0.5).all()  # centred ranks


def test_pretraining_learns_how_items_go_together_and_touches_only_the_encoders(setup):
    from model.selfsupervised import pretrain_sparse

    model, _, _, inputs, _ = setup
    samples = [SimpleNamespace(inputs=x, targets=None) for x in inputs]  # inputs only, no labels
    heads_before = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    labs_before = {k: v.clone() for k, v in model.encoders["labs"].state_dict().items()}
    info = pretrain_sparse(model, samples, epochs=12, lr=3e-3, weight_decay=0.0, batch_size=32, device="cpu",
                           seed=0, progress=False)
    rel = info["relative_error"]["labs"]
    assert len(rel) == 12 and rel[-1] < 0.8 * rel[0] and rel[-1] < 0.75, rel
    assert all(torch.equal(v, model.fusion.state_dict()[k]) for k, v in heads_before.items())
    assert any(not torch.equal(v, model.encoders["labs"].state_dict()[k]) for k, v in labs_before.items())
