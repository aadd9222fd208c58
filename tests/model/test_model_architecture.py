"""MedM2T network and featurizer on small hand-made canonical stays (real model code, no mocks)."""
from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
import torch

from medm2t.events import Ecg, Measurement
from tests.helpers.stays import T0, _ev, make_ecg, make_stay

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def fitted():
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.network import MedM2T

    rng = np.random.default_rng(0)
    stays = [make_stay(i, rng, ecgs=i % 3) for i in range(16)]
    cfg = ModelConfig.from_preset("small")
    feat = fit_featurizer(stays, cfg)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec()).eval()
    return stays, cfg, feat, model


def _run(model, feat, cfg, stays_at):
    from model.inputs import collate

    with torch.no_grad():
        return model(collate([feat.encode(s, at) for s, at in stays_at], cfg))


def test_presets_round_trip_and_reject_unknown():
    from model.config import ModelConfig

    for name in ModelConfig.preset_names():
        cfg = ModelConfig.from_preset(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_preset("paper").d_labs > ModelConfig.from_preset("small").d_labs
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.from_preset("huge")


def test_forward_shapes_ranges_and_every_modality(fitted):
    stays, cfg, feat, model = fitted
    out = _run(model, feat, cfg, [(s, T0 + timedelta(hours=30)) for s in stays])
    b = len(stays)
    assert out["mortality"].shape == (b,) and out["los_remaining"].shape == (b,) and out["cvd_90d"].shape == (b, 4)
    assert (out["los_remaining"] >= 0).all()
    assert all(torch.isfinite(v).all() for v in out.values())
    from model.inputs import collate

    batch = collate([feat.encode(s, T0 + timedelta(hours=30)) for s in stays], cfg)
    assert set(model.modalities) == {"static", "labs", "vitals_tok", "vitals", "ecg"}
    assert batch.present["ecg"].tolist() == [bool(i % 3) and any(isinstance(e, Ecg) and e.available_time <= T0 + timedelta(hours=30)
                                                                 for e in s) for i, s in enumerate(stays)]
    for name in model.modalities:
        h = model.encoder_forward(name, batch)
        assert h.shape[0] == b and torch.isfinite(h).all()
        assert set(model.pretrain_heads[name](h)) == {"mortality", "los_remaining", "cvd_90d"}


def test_batch_invariance(fitted):
    """A stay's outputs are the same alone and inside batches of different size and composition."""
    stays, cfg, feat, model = fitted
    at = [T0 + timedelta(hours=h) for h in (2, 9, 17, 30, 47, 60)]
    items = [(s, at[i % len(at)]) for i, s in enumerate(stays)]
    full = _run(model, feat, cfg, items)
    for idx in (0, 4, 11):
        alone = _run(model, feat, cfg, [items[idx]])
        mixed = _run(model, feat, cfg, [items[(idx + 5) % len(items)], items[idx], items[(idx + 1) % len(items)]])
        for k in full:
            assert torch.allclose(alone[k][0], full[k][idx], atol=1e-5), k
            assert torch.allclose(mixed[k][1], full[k][idx], atol=1e-5), k


def test_prefix_uses_only_available_data(fitted):
    """Events with available_time after the prediction time never change the output."""
    stays, cfg, feat, model = fitted
    s = stays[2]
    at = T0 + timedelta(hours=12)
    cut = [e for e in s if not isinstance(e, (Measurement, Ecg)) or e.available_time <= at]
    a, b = _run(model, feat, cfg, [(s, at)]), _run(model, feat, cfg, [(cut, at)])
    later = _run(model, feat, cfg, [(s, T0 + timedelta(hours=40))])
    assert torch.allclose(a["mortality"], b["mortality"], atol=1e-6)
    assert not torch.allclose(a["mortality"], later["mortality"], atol=1e-4)


def test_unknown_item_is_counted_and_ignored(fitted):
    stays, cfg, feat, model = fitted
    s = stays[1]
    odd = _ev(Measurement, 1, "odd", T0 + timedelta(hours=1), item="never-seen-9999", category="lab", value=3.0)
    at = T0 + timedelta(hours=20)
    before = feat.unknown_items["never-seen-9999"]
    x = feat.encode([*s[:-2], odd, *s[-2:]], at)
    assert x.n_unknown == 1 and feat.unknown_items["never-seen-9999"] == before + 1
    a, b = _run(model, feat, cfg, [(s, at)]), _run(model, feat, cfg, [([*s[:-2], odd, *s[-2:]], at)])
    assert torch.allclose(a["mortality"], b["mortality"], atol=1e-6)


def test_stay_with_no_data_yet_and_without_stay_opened(fitted):
    stays, cfg, feat, model = fitted
    opened = stays[0][0]
    for events in ([opened], [], [stays[0][3]]):
        out = _run(model, feat, cfg, [(events, T0)])
        assert all(torch.isfinite(v).all() for v in out.values())
    x = feat.encode([opened], T0)
    assert x.present == {"static": True, "labs": False, "vitals_tok": False, "vitals": False, "ecg": False}


def test_ecg_with_missing_leads_and_nan_samples(fitted):
    from model.ecg_signal import preprocess_ecg

    stays, cfg, feat, model = fitted
    rng = np.random.default_rng(3)
    sig = rng.normal(0, 0.2, (12, 5000))
    sig[1, 100:400] = np.nan
    sig[4] = np.nan
    out, problems = preprocess_ecg(sig, 500.0, [l.upper() for l in ("I", "II", "III", "aVR", "aVL", "aVF")] +
                                   ["V1", "V2", "V3", "V4", "V5", "V6"])
    assert out.shape == (12, 640) and np.isfinite(out).all()
    assert any("NaN samples interpolated" in p for p in problems) and any("aVL has no finite" in p for p in problems)
    six, problems = preprocess_ecg(sig[:6], 500.0, ["I", "II", "III", "aVR", "aVL", "aVF"])
    assert np.all(six[6:] == 0) and sum("missing" in p for p in problems) == 6
    # NaN samples inside a Waveform are stored as 0; six-lead record (missing precordial leads) through the model
    odd = make_ecg(5, "six", T0 + timedelta(hours=2), rng, signal=sig[:6], leads=("I", "II", "III", "aVR", "aVL", "aVF"))
    res = _run(model, feat, cfg, [([stays[5][0], odd], T0 + timedelta(hours=3))])
    assert all(torch.isfinite(v).all() for v in res.values())


def test_value_bins_and_windows_fitted_on_training_only(fitted):
    stays, cfg, feat, _ = fitted
    cuts = feat.items["50912"].cuts
    assert 5 <= len(cuts) <= cfg.value_bins - 1 and cuts == sorted(cuts)
    train_vals = [e.value for s in stays for e in s if isinstance(e, Measurement) and e.item == "50912"]
    assert min(train_vals) <= cuts[0] and cuts[-1] <= max(train_vals)
    assert len(feat.edges["labs"]) == cfg.labs_windows - 1
    assert feat.items["51487"].categories is not None


def test_featurizer_round_trip_is_exact(fitted):
    import json

    from model.features import Featurizer

    stays, cfg, feat, _ = fitted
    again = Featurizer.from_dict(json.loads(json.dumps(feat.to_dict())))
    a, b = feat.encode(stays[3], T0 + timedelta(hours=25)), again.encode(stays[3], T0 + timedelta(hours=25))
    for g in a.sparse:
        assert np.array_equal(a.sparse[g].val, b.sparse[g].val) and np.array_equal(a.sparse[g].last, b.sparse[g].last)
    assert np.array_equal(a.static, b.static) and np.array_equal(a.ecg_meas, b.ecg_meas)


def test_checkpoint_round_trip_and_version_check(fitted, tmp_path):
    import json

    from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    stays, cfg, feat, model = fitted
    save_checkpoint(tmp_path / "ck", model, feat, cfg, {"mortality": {"auroc": 0.5}}, {"data": "hand-made test stays"})
    assert (tmp_path / "ck" / "model_card.md").read_text().count("Intended use") == 1
    model2, feat2, cfg2, meta = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg and meta["model_version"].startswith("medm2t-arch-")
    items = [(s, T0 + timedelta(hours=20)) for s in stays[:5]]
    a, b = _run(model, feat, cfg, items), _run(model2, feat2, cfg2, items)
    for k in a:
        assert torch.equal(a[k], b[k])
    size = sum(p.stat().st_size for p in (tmp_path / "ck").iterdir())
    assert size <= 8 * 2**20
    meta["architecture"] = "medm2t-arch-0"
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="made by model version 'medm2t-arch-0'"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


def test_loss_falls_on_tiny_set(fitted):
    """End-to-end training signal: a few Adam steps reduce the multitask loss on a tiny set."""
    from model.inputs import collate
    from model.network import MedM2T

    stays, cfg, feat, _ = fitted
    torch.manual_seed(1)
    model = MedM2T(cfg, feat.spec()).train()
    batch = collate([feat.encode(s, T0 + timedelta(hours=24)) for s in stays], cfg)
    y = torch.tensor([float(s[-1].hospital_death) for s in stays])
    los = torch.tensor([s[-1].los_days - 1.0 for s in stays])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["mortality"], y) + \
            torch.nn.functional.l1_loss(out["los_remaining"], los)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and losses[-1] < 0.7 * losses[0]


def test_masked_softmax_equals_torch_softmax_and_empty_rows_attend_to_nothing():
    from model.blocks import masked_softmax

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 4, 7, 12, generator=g) * 8
    valid = torch.rand(16, 1, 1, 12, generator=g) > 0.4
    valid[3] = False  # a sample without any valid key
    want = torch.softmax(scores.masked_fill(~valid, float("-inf")), -1).nan_to_num(0.0)
    got = masked_softmax(scores, valid)
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-6)
    assert torch.all(got[3] == 0) and torch.all(got[~valid.expand_as(got)] == 0)
    x = scores.clone().requires_grad_()
    (masked_softmax(x, valid) * torch.randn(scores.shape, generator=g)).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_resnet1d_in_channels_last_layout_computes_the_plain_conv1d_network(norm):
    """ResNet1d runs its convolutions as channels-last 2-D convolutions (speed); the parameters are
    nn.Conv1d's, and the output equals the same network written with torch.nn.functional.conv1d."""
    from torch.nn import functional as F

    from model.blocks import ResNet1d

    torch.manual_seed(0)
    net = ResNet1d(8, 24, ((16, 24), (32, 12)), 3, 0.0, norm).eval()
    with torch.no_grad():
        for m in net.modules():  # non-trivial running statistics for the batch-norm case
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 8, 24)

    def norm_ref(mod, y):
        if isinstance(mod, torch.nn.GroupNorm):
            return F.group_norm(y, 1, mod.weight, mod.bias, mod.eps)
        if isinstance(mod, torch.nn.BatchNorm2d):
            return F.batch_norm(y, mod.running_mean, mod.running_var, mod.weight, mod.bias, False, 0.0, mod.eps)
        return y

    def conv_ref(c, y):
        return F.conv1d(y, c.weight, c.bias, c.stride, c.padding)

    with torch.no_grad():
        conv, bn, _ = net.stem
        y = torch.relu(norm_ref(bn, conv_ref(conv, x)))
        for u in net.units:
            skip = y
            for m in u.skip:
                skip = F.max_pool1d(skip, m.kernel_size[1]) if isinstance(m, torch.nn.MaxPool2d) else conv_ref(m, skip)
            h = conv_ref(u.conv2, torch.relu(norm_ref(u.bn1, conv_ref(u.conv1, y))))
            y = torch.relu(norm_ref(u.bn2, h + skip))
        torch.testing.assert_close(net(x), y.flatten(1), atol=1e-5, rtol=1e-5)
    assert set(net.state_dict()) >= {"stem.0.weight", "units.0.conv1.weight", "units.0.skip.1.weight"}
    assert net.state_dict()["units.0.conv1.weight"].shape == (32, 16, 3)  # Conv1d's shape: old checkpoints load
