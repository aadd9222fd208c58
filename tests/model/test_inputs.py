"""model/inputs.py: the dense vitals grid, vectorised over channels and stays, against its definition channel by
channel and stay by stay."""
from __future__ import annotations

import numpy as np

from model.config import ModelConfig
from model.inputs import StayInputs, collate, vitals_grid


def _grid_by_definition(cfg: ModelConfig, s: StayInputs) -> np.ndarray:
    """Per channel: the latest value observed by the end of each 6-minute step (carried forward, ties to the
    later arrival), and whether an in-grid observation fell inside the step."""
    n_c, step = len(cfg.vital_concepts), cfg.vitals_step_min / 60.0
    n_t = int(round(cfg.vitals_hours / step))
    grid = np.zeros((2 * n_c, n_t), dtype=np.float32)
    ends = (np.arange(n_t) + 1) * step - cfg.vitals_hours
    t = -s.vit_age.astype(np.float64)
    for c in np.unique(s.vit_c):
        m = s.vit_c == c
        order = np.argsort(t[m], kind="stable")
        tc, zc, ing = t[m][order], s.vit_z[m][order], s.vit_in_grid[m][order]
        for k, end in enumerate(ends):
            upto = np.flatnonzero(tc <= end + 1e-9)
            grid[c, k] = zc[upto[-1]] if len(upto) else 0.0
            grid[n_c + c, k] = bool(np.any(ing & (tc <= end + 1e-9) & ~(tc <= end - step + 1e-9)))
    return grid


def _random_stay(cfg: ModelConfig, rng, n: int) -> StayInputs:
    # ages on a coarse grid (many ties, many exactly on step edges), some before the grid (carry only); a few
    # in-grid ones flagged as carry-only too, so that the flag is read, not inferred from the age
    age = (rng.integers(0, 2 * int(cfg.vitals_hours) * 10, n) / 10.0).astype(np.float32)
    c = rng.integers(0, len(cfg.vital_concepts), n).astype(np.int8)
    return StayInputs(0.0, np.zeros(1, np.float32), False, {}, age, c, rng.normal(size=n).astype(np.float32),
                      (age < cfg.vitals_hours) & (rng.random(n) < 0.9), np.zeros(0), np.zeros(0), [], np.zeros(0))


def test_vitals_grid_equals_its_definition_on_random_observations_with_ties():
    cfg = ModelConfig()
    rng = np.random.default_rng(2)
    for n in (0, 1, 5, 40, 300):
        s = _random_stay(cfg, rng, n)
        got, want = vitals_grid(cfg, s), _grid_by_definition(cfg, s)
        assert got.shape == want.shape and (got == want).all(), n


def test_a_batch_of_grids_is_each_stays_own_grid():
    """collate builds all its stays' grids in one vectorised call (model/inputs.py vitals_grids): each equals
    the stay's grid built alone, whatever its neighbours (empty stays included)."""
    cfg = ModelConfig()
    rng = np.random.default_rng(3)
    stays = [_random_stay(cfg, rng, n) for n in (0, 7, 300, 0, 1, 40)]
    batch = collate(stays, cfg).vitals.numpy()
    assert batch.shape[0] == len(stays)
    for i, s in enumerate(stays):
        assert (batch[i] == _grid_by_definition(cfg, s)).all(), i
