"""The committed demo checkpoint (model/checkpoints/demo) loads with the current code and scores a stay.

It fails when the architecture changes without retraining the demo checkpoint (see docs/benchmarks.md for
the command that reproduces it)."""
from __future__ import annotations

import math
from datetime import timedelta

import torch

from medm2t.settings import DEMO_CHECKPOINT
from stream.scoring import StayView



def test_the_demo_checkpoint_is_committed():
    """`make demo` and these tests need it: its absence is a failure, not a reason to skip."""
    assert (DEMO_CHECKPOINT / "weights.pt").exists(), f"{DEMO_CHECKPOINT} is missing"


def test_demo_checkpoint_is_small_and_documented():
    size = sum(p.stat().st_size for p in DEMO_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 8 * 1024 * 1024, f"demo checkpoint is {size / 2**20:.1f} MB, over the 8 MB budget"
    card = (DEMO_CHECKPOINT / "model_card.md").read_text()
    assert "small" in card and "synth" in card


def test_demo_checkpoint_loads_and_scores_a_stay():
    from model.network import ARCH_VERSION
    from stream.scorers.medm2t import MedM2TScorer
    from tests.helpers.stays import make_stay
    import numpy as np

    torch.set_num_threads(1)
    scorer = MedM2TScorer.load(DEMO_CHECKPOINT, device="cpu")
    assert ARCH_VERSION in scorer.version
    stay = make_stay(1, np.random.default_rng(0), hours=12, ecgs=1)
    opened, body = stay[0], [e for e in stay[1:] if e.kind in ("measurement", "ecg")]
    view = StayView(stay_id=1, subject_id=1, now=opened.time + timedelta(hours=12), opened=opened,
                    measurements=[e for e in body if e.kind == "measurement"], ecgs=[e for e in body if e.kind == "ecg"])
    (score,) = scorer.score_batch([view])
    mortality = score.tasks["mortality"]
    assert 0.0 <= mortality.value <= 1.0 and math.isfinite(mortality.value)
    assert mortality.calibration
    assert math.isclose(sum(score.tasks["cvd_90d"].probabilities.values()), 1.0, rel_tol=1e-4)
