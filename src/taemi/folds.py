"""Fold assignments shared by every model (`taemi folds` -> folds/folds.csv).

Clips that mimic the same seed video carry the same label vector; if they straddle folds a
model is scored on near-copies of its training rows and the CV lies. The real data has no
seed column, so clips are grouped by identical label vector (a one-off vector one sixth
away from a recurring one joins it), and folds are stratified on the dominant emotion and
its binned intensity. With `scheme: train` the official
validation split is kept out of the folds as a holdout (fold -1).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from taemi.artifacts import stable_hash, write_csv
from taemi.data import ID_COLUMN, TARGETS, DataError, check_ids

HOLDOUT = -1
SCHEMES = ("train+valid", "train")


def label_groups(labels: np.ndarray, step: float = 1 / 6) -> np.ndarray:
    """One group per distinct label vector (the stand-in for the seed video).

    A vector seen only once that differs from a recurring vector in one target by one
    label `step` is a near copy ("nearly sharing" a seed's labels): it joins the most
    frequent such neighbour. Recurring vectors are never merged with each other, so
    groups cannot chain into one giant group.
    """
    keys = np.round(np.asarray(labels, dtype=np.float64), 6)
    uniq, groups = np.unique(keys, axis=0, return_inverse=True)
    groups = groups.ravel()
    counts = np.bincount(groups, minlength=len(uniq))
    where = {tuple(u): i for i, u in enumerate(np.round(uniq / step).astype(np.int64))}
    parent = np.arange(len(uniq))
    for i in np.flatnonzero(counts == 1):
        base = np.round(uniq[i] / step).astype(np.int64)
        best, best_count = i, 1
        for k in range(len(base)):
            for delta in (-1, 1):
                near = base.copy()
                near[k] += delta
                j = where.get(tuple(near))
                if j is not None and counts[j] > best_count:
                    best, best_count = j, counts[j]
        parent[i] = best
    return parent[groups]


def label_strata(labels: np.ndarray, n_bins: int = 3) -> np.ndarray:
    """Dominant emotion x quantile bin of its intensity; all-zero rows are a stratum alone."""
    labels = np.asarray(labels, dtype=np.float64)
    peak = labels.max(axis=1)
    dominant = labels.argmax(axis=1)
    nonzero = peak > 0
    edges = np.quantile(peak[nonzero], np.linspace(0, 1, n_bins + 1)[1:-1]) if nonzero.any() else []
    intensity = np.searchsorted(edges, peak, side="right")
    strata = dominant * n_bins + intensity
    strata[~nonzero] = labels.shape[1] * n_bins
    return strata


def make_folds(
    labels: pd.DataFrame,
    n_splits: int = 5,
    scheme: str = "train+valid",
    seed: int = 42,
    n_bins: int = 3,
) -> pd.DataFrame:
    """Assign each labelled clip a fold; `labels` has Filename, the targets and `split`."""
    if scheme not in SCHEMES:
        raise ValueError(f"folds scheme must be one of {SCHEMES}, got {scheme!r}")
    pool = labels if scheme == "train+valid" else labels[labels["split"] == "train"]
    y = pool[list(TARGETS)].to_numpy()
    groups = label_groups(y)
    if len(np.unique(groups)) < n_splits:
        raise DataError(f"only {len(np.unique(groups))} distinct label vectors: cannot make "
                        f"{n_splits} grouped folds")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(pool), HOLDOUT, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for k, (_, held) in enumerate(splitter.split(y, label_strata(y, n_bins), groups)):
            fold[held] = k
    out = pd.DataFrame({ID_COLUMN: pool[ID_COLUMN].to_numpy(), "fold": fold})
    if scheme == "train":
        holdout = labels.loc[labels["split"] != "train", ID_COLUMN].to_numpy()
        out = pd.concat([out, pd.DataFrame({ID_COLUMN: holdout, "fold": HOLDOUT})])
    return out.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write folds.csv atomically; an identical file already there is left untouched."""
    path = Path(path)
    if path.is_file() and read_folds(path).equals(folds):
        return path
    write_csv(path, folds)
    return path


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a folds file: 5-digit ids once each, integer folds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"folds file not found: {path} (make it with `taemi folds CONFIG`)")
    frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    for column in (ID_COLUMN, "fold"):
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r}; expected header Filename,fold")
    ids = check_ids(frame[ID_COLUMN], path)
    folds = pd.to_numeric(frame["fold"], errors="coerce")
    if folds.isna().any() or (folds != folds.round()).any() or (folds < HOLDOUT).any():
        raise DataError(f"{path}: column 'fold' must hold integers >= {HOLDOUT}")
    return pd.DataFrame({ID_COLUMN: ids, "fold": folds.astype(np.int64).to_numpy()})


def folds_digest(folds: pd.DataFrame) -> str:
    """A fingerprint of the assignment itself, to prove two models used the same folds."""
    return stable_hash(list(zip(folds[ID_COLUMN], folds["fold"].astype(int), strict=True)), 16)
