"""Why a MedM2T mortality score is what it is: its top drivers.

The mortality logit is the sum of two terms (model/blocks.py, TaskHeads): a linear "wide" term over the
static vector and the per-item summaries, and the deep network's term. For the wide term the split is exact:
an input contributes w · (x − r) / T over its columns of the wide vector, where x is the stay's wide
vector, w the wide head's mortality weights, T the checkpoint's mortality temperature (so contributions are
in calibrated log-odds) and r a reference patient:

* a lab or vital item's values (mean, lowest, highest and current value rank, centred on the training
  median): r = the median value, so a normal value contributes about nothing;
* how often items were measured (every item's log count, pooled into one input): r = never measured;
* a numeric static field (age, height, weight): r = the training mean, known;
* a categorical static field (sex, admission type and location, care unit): r = the average over its
  categories.

The contributions add up, with the reference term (w · r + b) / T, to the wide term. The deep term is
reported as one number, the deep network's correction: its encoders mix all items in learned embeddings, so
no exact per-input split of it exists, and gradient or SHAP attributions would be approximations at many
times the scoring cost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.features import STATIC_CATEGORICAL, STATIC_NUMERIC
from model.sparse import N_SUMMARY


@dataclass(frozen=True)
class Attribution:
    inputs: list[str]          # "item:CODE", "static:FIELD" or FREQUENCY, one per column of `log_odds`
    log_odds: np.ndarray       # (B, inputs): each input's contribution to the calibrated mortality log-odds
    wide: np.ndarray           # (B,): the whole wide term, reference included
    deep: np.ndarray           # (B,): the deep network's correction


FREQUENCY = "frequency"  # the pooled measurement counts


def _static_inputs(featurizer) -> list[tuple[str, list[int], list[float]]]:
    """(input, columns, reference) per static field, in model.features.Featurizer._static_vector's layout."""
    out = [("static:gender", [0, 1, 2], [1 / 3] * 3)]
    pos = 3
    for k in STATIC_NUMERIC:
        out.append((f"static:{k}", [pos, pos + 1], [0.0, 0.0]))  # z-score 0, not missing
        pos += 2
    for k in STATIC_CATEGORICAL:
        n = len(featurizer.static_spec["vocab"][k]) + 1
        out.append((f"static:{k}", list(range(pos, pos + n)), [1 / n] * n))
        pos += n
    return out


def _item_inputs(model, featurizer) -> list[tuple[str, list[int], list[float]]]:
    """(input, columns, reference 0) per item's values in SparseEncoder.wide_features (N_SUMMARY summary
    features, then the current rank and the two squares, each block item-major, the sparse groups one after
    another), and one pooled input of every item's count column."""
    out, counts, pos, spec = [], [], featurizer.n_static, featurizer.spec()
    for g in model.sparse_groups:
        n = spec["n_items"][g]
        block = N_SUMMARY * n
        for code, it in featurizer.items.items():
            if it.group == g:
                i = it.index
                counts.append(pos + N_SUMMARY * i)
                cols = [pos + N_SUMMARY * i + k for k in range(1, N_SUMMARY)] + [pos + block + i + k * n for k in range(3)]
                out.append((f"item:{code}", cols, [0.0] * len(cols)))
        pos += model.encoders[g].d_wide
    return [*out, (FREQUENCY, counts, [0.0] * len(counts))]


class Explainer:
    """Exact wide-term attributions of the mortality logit (`for_model` gives None without a wide head)."""

    def __init__(self, model, featurizer, temperature: float = 1.0):
        head = model.fusion.heads.wide
        inputs = _static_inputs(featurizer) + _item_inputs(model, featurizer)
        self.inputs = [name for name, _, _ in inputs]
        d = head.weight.shape[1]
        device = head.weight.device
        membership, reference = torch.zeros(len(inputs), d, device=device), torch.zeros(d, device=device)
        for k, (_, cols, ref) in enumerate(inputs):
            membership[k, cols] = 1.0
            reference[cols] = torch.tensor(ref, device=device)
        self._membership, self._reference = membership, reference
        self._weight = head.weight[0].detach().float() / temperature
        self._bias = float(head.bias[0].detach()) / temperature
        self._temperature = temperature

    @classmethod
    def for_model(cls, model, featurizer, temperature: float = 1.0) -> Explainer | None:
        return cls(model, featurizer, temperature) if model.fusion.heads.wide is not None else None

    @torch.no_grad()
    def attribute(self, wide: torch.Tensor, mortality_logit: torch.Tensor) -> Attribution:
        """`wide` (B, D) the wide head's inputs and `mortality_logit` (B,) the model's uncalibrated logit."""
        wide = wide.float()
        log_odds = ((wide - self._reference) * self._weight) @ self._membership.T
        wide_term = wide @ self._weight + self._bias
        deep = mortality_logit.float() / self._temperature - wide_term
        return Attribution(self.inputs, log_odds.cpu().numpy(), wide_term.cpu().numpy(), deep.cpu().numpy())

    def reference_term(self) -> float:
        """(w · r + b) / T: the wide term of the reference patient."""
        return float(self._reference @ self._weight) + self._bias
