"""Does the CV score predict the held-out test score? Grouped folds vs. plain KFold.

Clips that mimic one seed video share a label vector and a near-identical transcript. Under
plain KFold a model meets near-copies of its validation rows in training, and its CV score
overstates what it will score on unseen seed videos. On generated data the test labels are
known, so both CV estimates can be set beside the real held-out score.

    python benchmarks/bench_folds.py --root data/full
    python benchmarks/bench_folds.py --root data/full-shared \
        --out benchmarks/results/folds-shared.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from taemi.cache import build_packed
from taemi.data import ID_COLUMN, ChallengeData, labels_matrix
from taemi.folds import make_folds
from taemi.metrics import mean_pearson

FEATURES = (("text", 16), ("vit", 32), ("wav2vec2", 32))


def pooled_features(data: ChallengeData, ids: list[str], cache: str) -> np.ndarray:
    """Mean over valid steps of text, vit and wav2vec2 (in that order), plus missing flags."""
    parts = []
    for name, steps in FEATURES:
        pack = build_packed(data, name, steps, cache)
        rows = pack.rows(ids)
        x = pack.x[rows].astype(np.float32)
        valid = pack.valid[rows][..., None]
        parts += [(x * valid).sum(1) / np.maximum(valid.sum(1), 1), pack.missing[rows, None]]
    return np.hstack(parts)


TEXT = slice(0, 385)  # the transcript's mean embedding and its missing flag
# ridge: a linear model on every pooled feature; knn_text: finds the clips whose words
# match, i.e. recognises the seed video, the memoriser that plain KFold rewards.
MODELS = {
    "ridge": (slice(None), lambda: make_pipeline(StandardScaler(), Ridge(alpha=100.0))),
    "knn_text": (TEXT, lambda: make_pipeline(StandardScaler(), PCA(32, random_state=0),
                                              KNeighborsRegressor(5))),
}


def fit_predict(model_name: str, x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    columns, build = MODELS[model_name]
    return build().fit(x[:, columns], y).predict(x_new[:, columns])


def cv_score(model_name: str, x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> float:
    oof = np.zeros_like(y)
    for k in np.unique(fold):
        held = fold == k
        oof[held] = fit_predict(model_name, x[~held], y[~held], x[held])
    return mean_pearson(y, oof)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/full")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/folds.json")
    args = parser.parse_args()

    data = ChallengeData(args.root, test_list="test_split.csv",
                         test_labels="heldout/test_labels.csv")
    labelled = data.labels[ID_COLUMN].tolist()
    x = pooled_features(data, labelled, args.cache)
    y = labels_matrix(data.labels, labelled)
    x_test = pooled_features(data, data.test_ids, args.cache)
    y_test = labels_matrix(data.test_labels, data.test_ids)

    results = {}
    for model_name in MODELS:
        test = mean_pearson(y_test, fit_predict(model_name, x, y, x_test))
        grouped, plain = [], []
        for repeat in range(args.repeats):
            folds = make_folds(data.labels, 5, seed=repeat).set_index(ID_COLUMN)
            grouped.append(cv_score(model_name, x, y, folds.loc[labelled, "fold"].to_numpy()))
            kfold = np.zeros(len(y), int)
            for k, (_, held) in enumerate(KFold(5, shuffle=True, random_state=repeat).split(x)):
                kfold[held] = k
            plain.append(cv_score(model_name, x, y, kfold))
        results[model_name] = {
            "test": round(test, 4),
            "grouped_cv": round(float(np.mean(grouped)), 4),
            "grouped_cv_sd": round(float(np.std(grouped)), 4),
            "kfold_cv": round(float(np.mean(plain)), 4),
            "kfold_cv_sd": round(float(np.std(plain)), 4),
            "grouped_gap": round(float(np.mean(grouped)) - test, 4),
            "kfold_gap": round(float(np.mean(plain)) - test, 4),
        }
        print(model_name, results[model_name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"root": args.root, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
