"""Probe for issue 10 item 1: would more per-item inputs, or a non-linear learner on the same inputs, add to the
wide head? Trains on PhysioNet 2012 set-a, tests on set-b, at the end of each stay's data (mortality).

Inputs, per lab and vital item, from the project's own featurizer (value ranks = quantiles of set-a values):
- base: the wide head's inputs (static vector; log count, mean, lowest, highest and current value rank, the
  squares of the current and mean rank);
- first: the first value's rank; tslo: log hours since the item's last observation; trend: current minus
  first rank.

Learners: logistic regression (C chosen by 5-fold log loss on set-a), scikit-learn HistGradientBoosting,
their rank average, and a small MLP trained as a residual on top of the logistic regression's logit (early
stopping on 15 % of set-a), which is what the deep part of MedM2T is asked to be.

    python tools/probe_wide_inputs.py [--data-dir ../shared/data/challenge-2012]

About 5 minutes on 2 cores; prints one line per variant. Figures are in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import logging

import numpy as np


def item_features(featurizer, cohort):
    """{variant: (N, D)} and labels (N,) at the end of each stay's data."""
    from model.features import SPARSE_GROUPS

    spec = featurizer.spec()
    ranks = {g: np.asarray(spec["value_rank"][g]) for g in SPARSE_GROUPS}
    out = {k: [] for k in ("base", "first", "tslo", "trend")}
    labels = []
    for stay in cohort.compact:
        prep = featurizer.prepare(stay.events())
        at = max([pg.avail.max() for pg in prep.groups.values() if len(pg.avail)] + [0.0])
        parts = {"base": [prep.static], "first": [], "tslo": [], "trend": []}
        for g in SPARSE_GROUPS:
            pg, n = prep.groups[g], spec["n_items"][g]
            rank = ranks[g][pg.val] if len(pg.val) else np.zeros(0)
            count, total = np.zeros(n), np.zeros(n)
            lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
            first, current = np.zeros(n), np.zeros(n)
            first_t, last_t = np.full(n, np.inf), np.full(n, -np.inf)
            for k in np.argsort(pg.time, kind="stable"):
                if rank[k] < 0:  # not a numeric value
                    continue
                i, t, r = pg.item[k], pg.time[k], rank[k]
                count[i] += 1
                total[i] += r
                lo[i], hi[i] = min(lo[i], r), max(hi[i], r)
                if t < first_t[i]:
                    first_t[i], first[i] = t, r
                if t >= last_t[i]:
                    last_t[i], current[i] = t, r
            has = count > 0
            centred = lambda a: np.where(has, a - 0.5, 0.0)  # noqa: E731
            mean, cur = centred(total / np.maximum(count, 1)), centred(current)
            parts["base"] += [np.log1p(count) / 3, mean, centred(lo), centred(hi), cur, 4 * cur ** 2, 4 * mean ** 2]
            parts["first"].append(centred(first))
            parts["tslo"].append(np.where(has, np.log1p(np.maximum(at - last_t, 0.0)) / 3, 0.0))
            parts["trend"].append(np.where(has, current - first, 0.0))
        for k, v in parts.items():
            out[k].append(np.concatenate(v))
        labels.append(int(bool(stay.outcome and stay.outcome.hospital_death)))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}, np.asarray(labels)


def residual_mlp(x, y, offset, seed: int, hidden: int = 32, dropout: float = 0.3):
    """An MLP added to a fixed logit `offset`, its last layer starting at zero; early stopping on 15 %."""
    import torch
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    tr, va = train_test_split(np.arange(len(y)), test_size=0.15, random_state=seed, stratify=y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                              torch.nn.Linear(hidden, 1))
    torch.nn.init.zeros_(net[-1].weight)
    torch.nn.init.zeros_(net[-1].bias)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    X, Y, O = torch.tensor(x), torch.tensor(y, dtype=torch.float32), torch.tensor(offset, dtype=torch.float32)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def val_loss():
        net.eval()
        with torch.no_grad():
            return float(bce(O[va] + net(X[va]).squeeze(-1), Y[va]))

    best, state, bad = val_loss(), None, 0
    gen = torch.Generator().manual_seed(seed)
    for _ in range(100):
        net.train()
        for idx in torch.tensor(tr)[torch.randperm(len(tr), generator=gen)].split(128):
            loss = bce(O[idx] + net(X[idx]).squeeze(-1), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = val_loss()
        if v < best - 1e-5:
            best, state, bad = v, {k: t.clone() for k, t in net.state_dict().items()}, 0
        elif (bad := bad + 1) >= 8:
            break
    if state:
        net.load_state_dict(state)
    net.eval()
    return lambda z: net(torch.tensor(z)).squeeze(-1).detach().numpy()


def main() -> None:
    from scipy.stats import rankdata
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import GridSearchCV

    from model.config import ModelConfig
    from model.data import load_cohort
    from model.feature_fit import fit_featurizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/challenge-2012", help="folder with set-a/b and outcomes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    d = args.data_dir
    a = load_cohort(f"physionet2012:{d}/set-a.tar.gz:{d}/Outcomes-a.txt", progress=False)
    b = load_cohort(f"physionet2012:{d}/set-b.tar.gz:{d}/Outcomes-b.txt", progress=False)
    featurizer = fit_featurizer(a.stays, ModelConfig.from_preset("small"), progress=False)
    xa, ya = item_features(featurizer, a)
    xb, yb = item_features(featurizer, b)

    def show(name, score):
        print(f"{name:<55} AUROC {roc_auc_score(yb, score):.4f}  AP {average_precision_score(yb, score):.4f}", flush=True)

    def stack(x, keys):
        return np.hstack([x[k] for k in keys])

    logit = {}
    for keys in (["base"], ["base", "first"], ["base", "tslo"], ["base", "trend"], ["base", "first", "tslo", "trend"]):
        lr = GridSearchCV(LogisticRegression(max_iter=5000), {"C": [0.01, 0.03, 0.1, 0.3, 1.0]},
                          scoring="neg_log_loss", cv=5).fit(stack(xa, keys), ya)
        logit["+".join(keys)] = (lr.decision_function(stack(xa, keys)), lr.decision_function(stack(xb, keys)))
        show(f"logistic regression, {'+'.join(keys)} (C {lr.best_params_['C']})", logit["+".join(keys)][1])
    trees = {}
    for keys in (["base"], ["base", "first", "tslo"]):
        gb = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0,
                                            random_state=0).fit(stack(xa, keys), ya)
        trees["+".join(keys)] = gb.predict_proba(stack(xb, keys))[:, 1]
        show(f"gradient boosting, {'+'.join(keys)}", trees["+".join(keys)])
    show("rank average of logistic regression and boosting, base", rankdata(logit["base"][1]) + rankdata(trees["base"]))
    for seed in (0, 1):
        mlp = residual_mlp(xa["base"], ya, logit["base"][0], seed)
        show(f"logistic regression + residual MLP, base (seed {seed})", logit["base"][1] + mlp(xb["base"]))


if __name__ == "__main__":
    main()
