"""LightGBM stack variants on a trained config's level-1 predictions: trees alone against
trees boosted from the ridge stack, with and without the meta features.

    python benchmarks/bench_stack.py configs/demo.yaml      (after `taemi run` / `taemi train`)
"""

from __future__ import annotations

import argparse

import numpy as np

from taemi.config import load_config
from taemi.data import labels_matrix
from taemi.folds import label_groups
from taemi.metrics import score_table
from taemi.pipeline import ensure_cache, ensure_folds, open_data
from taemi.progress import set_quiet
from taemi.stacking import LGBMStacker, RidgeStacker, load_level1, meta_features, nested_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    args = parser.parse_args()
    set_quiet(True)
    cfg = load_config(args.config)
    if cfg.stack is None:
        raise SystemExit(f"{args.config} has no `stack` section")
    data = open_data(cfg)
    level1 = load_level1(cfg, cfg.stack, ensure_folds(cfg, data), data.test_ids)
    packs = {name: pack for (name, _), pack in ensure_cache(cfg, data, report=False).items()}
    y = labels_matrix(data.labels, level1.ids)
    y_test = labels_matrix(data.test_labels, level1.test_ids) \
        if data.test_labels is not None else None
    X, X_test = level1.features()
    names = cfg.stack.meta_features or ["missing", "transcript_length"]
    with_meta = (np.hstack([X, meta_features(data, packs, level1.ids, names)]),
                 np.hstack([X_test, meta_features(data, packs, level1.test_ids, names)]))
    n = X.shape[1]
    variants = {
        "ridge stack": (lambda: RidgeStacker(), (X, X_test)),
        "trees alone": (lambda: LGBMStacker(linear_base=False), (X, X_test)),
        "trees alone + meta": (lambda: LGBMStacker(linear_base=False), with_meta),
        "ridge base + trees": (lambda: LGBMStacker(linear_columns=n), (X, X_test)),
        "ridge base + trees + meta": (lambda: LGBMStacker(linear_columns=n), with_meta),
    }
    groups = label_groups(y)
    print(f"| variant ({args.config}) | CV | held-out test |\n| --- | ---: | ---: |")
    for name, (make, (features, features_test)) in variants.items():
        oof, test = nested_predictions(make, features, y, level1.fold, features_test, groups)
        test_score = f"{score_table(y_test, test)['mean']:.4f}" if y_test is not None else ""
        print(f"| {name} | {score_table(y, oof)['mean']:.4f} | {test_score} |")


if __name__ == "__main__":
    main()
