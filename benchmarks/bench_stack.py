"""Stack variants on a trained config's level-1 predictions, CV and held-out test:

* the ridge stack, free or with non-negative weights, its outputs clipped to [0, 1] or not;
* the LightGBM stack (trees boosted from the ridge stack, the kit's stacker) fed at test
  time the fold models' mean or each fold model's predictions (what its OOF rows were made
  of), clipped or not, with and without the meta features;
* trees alone, the best single member and the mean blend, for scale.

    python benchmarks/bench_stack.py configs/levers.yaml  (after its members are trained)
    python benchmarks/bench_stack.py configs/demo.yaml    (after `make demo`)

Prints a markdown table and writes it to benchmarks/results/stack-<stack name>.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from taemi.config import load_config
from taemi.data import ID_COLUMN, labels_matrix
from taemi.metrics import score_table
from taemi.pipeline import ensure_cache, ensure_folds, open_data
from taemi.progress import set_quiet
from taemi.stacking import LGBMStacker, RidgeStacker, load_level1, meta_features, nested_predictions


class Clipped(BaseEstimator):
    """A stacker whose outputs are clipped to [0, 1] (the kit's stackers before this round)."""

    def __init__(self, inner: BaseEstimator) -> None:
        self.inner = inner

    def fit(self, X, y, groups=None):
        self.inner.fit(X, y, groups=groups)
        return self

    def predict(self, X):
        return np.clip(self.inner.predict(X), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    args = parser.parse_args()
    set_quiet(True)
    cfg = load_config(args.config)
    if cfg.stack is None:
        raise SystemExit(f"{args.config} has no `stack` section")
    stack = cfg.stack.model_copy(update={"test_inputs": "fold_models"})
    data = open_data(cfg)
    folds = ensure_folds(cfg, data)
    level1 = load_level1(cfg, stack, folds, data.test_ids)
    packs = {name: pack for (name, _), pack in ensure_cache(cfg, data, report=False).items()}
    y = labels_matrix(data.labels, level1.ids)
    y_test = labels_matrix(data.test_labels, level1.test_ids)
    X, X_mean = level1.features()
    per_fold = level1.fold_features()
    names = cfg.stack.meta_features or ["missing", "transcript_length"]
    meta, meta_test = (meta_features(data, packs, level1.ids, names),
                       meta_features(data, packs, level1.test_ids, names))
    with_meta = (np.hstack([X, meta]), [np.hstack([t, meta_test]) for t in per_fold])
    n, alpha = X.shape[1], cfg.stack.ridge_alpha
    groups = folds.set_index(ID_COLUMN).loc[level1.ids, "group"].to_numpy()

    def lgbm(**kw):
        return lambda: LGBMStacker(linear_columns=n, linear_alpha=alpha, **kw)

    variants = {
        "ridge, clipped (before)": (lambda: Clipped(RidgeStacker(alpha)), X, [X_mean]),
        "ridge": (lambda: RidgeStacker(alpha), X, [X_mean]),
        "ridge, non-negative": (lambda: RidgeStacker(alpha, positive=True), X, [X_mean]),
        "lightgbm, fold mean, clipped (before)": (
            lambda: Clipped(LGBMStacker(linear_columns=n, linear_alpha=alpha)), X, [X_mean]),
        "lightgbm, fold mean": (lgbm(), X, [X_mean]),
        "lightgbm, fold models": (lgbm(), X, per_fold),
        "lightgbm, fold models, non-negative base": (lgbm(linear_positive=True), X, per_fold),
        "lightgbm, fold models, meta features": (lgbm(), *with_meta),
        "trees alone, fold models": (lambda: LGBMStacker(linear_base=False), X, per_fold),
    }
    member = {name: score_table(y, level1.oof[:, i])["mean"]
              for i, name in enumerate(level1.names)}
    best = max(member, key=member.get)
    i_best = level1.names.index(best)
    rows = [(f"best single ({best})", member[best],
             score_table(y_test, level1.test[:, i_best])["mean"], 0.0),
            ("mean blend", score_table(y, level1.oof.mean(axis=1))["mean"],
             score_table(y_test, level1.test.mean(axis=1))["mean"], 0.0)]
    for name, (make, features, features_test) in variants.items():
        started = time.perf_counter()
        oof, test = nested_predictions(make, features, y, level1.fold, features_test, groups)
        rows.append((name, score_table(y, oof)["mean"], score_table(y_test, test)["mean"],
                     time.perf_counter() - started))
    lines = [f"Members ({len(level1.names)}): {', '.join(level1.names)}", "",
             "| stack | CV | held-out test | seconds |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {cv:.4f} | {test:.4f} | {sec:.1f} |" for name, cv, test, sec in rows]
    text = "\n".join(lines)
    print(text)
    out = Path("benchmarks/results") / f"stack-{cfg.stack.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"    python benchmarks/bench_stack.py {args.config}\n\n{text}\n")


if __name__ == "__main__":
    main()
