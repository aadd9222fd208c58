"""One regression test per bug of the official MedM2T code (medm2t-reference.md §7, B1-B5)."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import torch

from medm2t.events import Measurement
from tests.helpers.stays import T0, _ev, make_stay


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def fitted():
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.network import MedM2T

    rng = np.random.default_rng(1)
    stays = [make_stay(i, rng, ecgs=i % 3, n=40) for i in range(10)]
    cfg = ModelConfig.from_preset("small")
    feat = fit_featurizer(stays, cfg)
    torch.manual_seed(0)
    return stays, cfg, feat, MedM2T(cfg, feat.spec()).eval()


def test_b1_cross_attention_stays_within_each_sample():
    """B1: the official cross-attention ran over the batch axis. Ours attends within a sample only, over
    that sample's own token sequence with padding masks, and is not degenerate (depends on the query)."""
    from model.blocks import CrossAttention

    torch.manual_seed(0)
    att = CrossAttention(16, 4, 0.0).eval()
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    full = att(q, kv, mask)
    alone = att(q[:1], kv[:1, :4], mask[:1, :4])  # no padding, no batch-mates
    assert torch.allclose(full[0], alone[0], atol=1e-6)
    kv2 = kv.clone()
    kv2[1:] = torch.randn(2, 7, 16) * 5  # change only the batch-mates
    assert torch.allclose(att(q, kv2, mask)[0], full[0], atol=1e-6)
    kv3 = kv.clone()
    kv3[0, 5] = 100.0  # change a padded key of sample 0: masked, so no effect
    assert torch.allclose(att(q, kv3, mask)[0], full[0], atol=1e-6)
    assert not torch.allclose(full[0, 0], full[0, 1], atol=1e-3)  # the query matters (not out_proj(v) only)


def test_b1_stay_score_does_not_depend_on_batch_mates(fitted):
    from model.inputs import collate

    stays, cfg, feat, model = fitted
    at = T0 + timedelta(hours=20)
    x = [feat.encode(s, at) for s in stays]
    with torch.no_grad():
        a = model(collate([x[0], x[1], x[2]], cfg))
        b = model(collate([x[0], x[7], x[5], x[9]], cfg))
    for k in a:
        assert torch.allclose(a[k][0], b[k][0], atol=1e-5)


def test_b2_both_attention_directions_are_fused_and_trained(fitted):
    """B2: the official 'add' fusion returned a_ij + a_ij, so the j->i block got no gradient."""
    from model.inputs import collate

    stays, cfg, feat, model = fitted
    model.train()
    try:
        out = model(collate([feat.encode(s, T0 + timedelta(hours=30)) for s in stays], cfg))
        (out["mortality"].sum() + out["los_remaining"].sum()).backward()
        for key, bma in model.fusion.bma.items():
            for direction in (bma.i_to_j, bma.j_to_i):
                g = sum(p.grad.abs().sum() for p in direction.parameters() if p.grad is not None)
                assert g > 0, f"{key}: a direction without gradient"
        assert len(model.fusion.bma) == len(model.modalities) * (len(model.modalities) - 1) // 2
    finally:
        model.zero_grad()
        model.eval()


def test_b3_each_fold_fits_on_its_own_training_split_only():
    """B3: the official code loaded encoder j from fold j for every fold, leaking test labels. Each of our
    folds fits its featurizer (and trains its encoders, model/train.py fit_one) on its own training split:
    an item seen only in one fold's test stays must be unknown to that fold and known to the others."""
    from model.config import ModelConfig
    from model.data import Cohort, fold_indices
    from model.feature_fit import fit_featurizer

    rng = np.random.default_rng(2)
    stays = [make_stay(i, rng, ecgs=0, n=10) for i in range(12)]
    cohort = Cohort.from_events("test:b3", stays, "b3")
    folds = fold_indices(cohort, 3, seed=0)
    tests = [set(te) for _, te in folds]
    assert set().union(*tests) == set(range(12)) and sum(map(len, tests)) == 12
    marker = {}
    for k, (_, te) in enumerate(folds):
        i = te[0]
        marker[k] = f"only-in-fold-{k}"
        stays[i].insert(1, _ev(Measurement, stays[i][0].stay_id, f"m{k}", T0 + timedelta(hours=1),
                               item=marker[k], category="lab", value=1.0))
    cohort = Cohort.from_events("test:b3", stays, "b3m")
    cfg = ModelConfig.from_preset("small")
    for k, (tr, te) in enumerate(fold_indices(cohort, 3, seed=0)):
        assert not set(tr) & set(te)
        feat = fit_featurizer(cohort.stays.subset(tr), cfg)
        assert marker[k] not in feat.items
        assert all(marker[j] in feat.items for j in marker if j != k)


def test_b4_each_ecg_stays_with_its_own_stay(fitted):
    """B4: the official T2/T3 ECG fusion indexed a one-ECG-per-stay array with all-ECG fold indices.
    Ours carries each ECG's stay index and slot: permuting stays permutes the ECG encoder output the same way,
    and a stay without an ECG is flagged missing whatever its batch-mates have."""
    from model.inputs import collate

    stays, cfg, feat, model = fitted
    at = T0 + timedelta(hours=48)
    x = [feat.encode(s, at) for s in stays[:6]]
    n_ecg = [len(i.ecg_win) for i in x]
    assert len(set(n_ecg)) > 1  # mixed counts in one batch: the case the official code got wrong
    perm = [3, 0, 5, 1, 4, 2]
    with torch.no_grad():
        b1, b2 = collate(x, cfg), collate([x[i] for i in perm], cfg)
        e1, e2 = model.encoder_forward("ecg", b1), model.encoder_forward("ecg", b2)
        t1, t2 = model.encode("ecg", b1)[2], model.encode("ecg", b2)[2]
    assert torch.allclose(e1[perm], e2, atol=1e-5)
    assert t1.sum(1).tolist() == n_ecg and t2.sum(1).tolist() == [n_ecg[i] for i in perm]
    assert b1.present["ecg"].tolist() == [n > 0 for n in n_ecg]


def test_b5_every_submodule_is_registered_trained_and_moved(fitted):
    """B5: the official vitals HF segment encoders sat in a Python list: never optimised, never switched
    between train/eval, never moved by .to(). Ours are registered: in parameters(), state_dict() and modes."""
    stays, cfg, feat, model = fitted
    params = {id(p) for p in model.parameters()}
    for module in model.modules():
        for name, value in vars(module).items():
            if isinstance(value, (list, tuple)):
                assert not any(isinstance(v, torch.nn.Module) for v in value), f"{type(module).__name__}.{name}"
        assert all(id(p) in params for p in module.parameters())
    vit = model.encoders["vitals"]
    keys = model.state_dict().keys()
    assert any(k.startswith("encoders.vitals.hf1.") for k in keys) and any(k.startswith("encoders.vitals.hf2.") for k in keys)
    model.train()
    assert vit.hf1.training and vit.hf2.training
    model.eval()
    assert not vit.hf1.training and not vit.hf2.training
    before = [p.detach().clone() for p in vit.hf1.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from model.inputs import collate

    model.train()
    try:
        out = model(collate([feat.encode(s, T0 + timedelta(hours=30)) for s in stays], cfg))
        out["mortality"].sum().backward()
        opt.step()
    finally:
        model.zero_grad()
        model.eval()
    assert any(not torch.equal(b, p) for b, p in zip(before, vit.hf1.parameters()))
    assert model.to(torch.float64).encoders["vitals"].hf1.inp.weight.dtype == torch.float64
    model.to(torch.float32)
