"""The challenge metric: Pearson r per target, then the mean over the six targets.

It is *not* a Pearson over the flattened (N, 6) matrix. A constant column (a model that
collapsed, or a target with one value in a small fold) has no correlation: it scores 0 and
warns, so a mean is never NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

from taemi.data import TARGETS, DataError


class ConstantColumnWarning(UserWarning):
    """A prediction or label column has zero variance; its Pearson r is taken as 0."""


def pearson_per_target(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column; equal to `scipy.stats.pearsonr` column by column."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"expected two (N, K) arrays of one shape, got {y_true.shape} and "
                         f"{y_pred.shape}")
    for what, values in (("labels", y_true), ("predictions", y_pred)):
        bad = ~np.isfinite(values)
        if bad.any():  # a NaN would make every score NaN without a word
            row, col = (int(i) for i in np.argwhere(bad)[0])
            name = TARGETS[col] if values.shape[1] == len(TARGETS) else str(col)
            raise DataError(f"cannot score: the {what} hold {int(bad.sum())} non-finite "
                            f"values (first in row {row}, {name!r}): a diverged model or an "
                            "out-of-range feature")
    true_c = y_true - y_true.mean(axis=0)
    pred_c = y_pred - y_pred.mean(axis=0)
    true_norm = np.sqrt((true_c**2).sum(axis=0))
    pred_norm = np.sqrt((pred_c**2).sum(axis=0))
    # a column is constant when its spread is at the rounding level of its values
    rounding = 1e-12 * np.sqrt(len(y_true))
    constant = (true_norm <= rounding * np.abs(y_true).max(axis=0)) | (
        pred_norm <= rounding * np.abs(y_pred).max(axis=0)
    )
    r = np.zeros(y_true.shape[1])
    ok = ~constant
    r[ok] = (true_c[:, ok] * pred_c[:, ok]).sum(axis=0) / (true_norm[ok] * pred_norm[ok])
    if constant.any():
        names = [TARGETS[k] if y_true.shape[1] == len(TARGETS) else str(k)
                 for k in np.flatnonzero(constant)]
        warnings.warn(f"constant column for {names}: Pearson r taken as 0",
                      ConstantColumnWarning, stacklevel=2)
    return np.clip(r, -1.0, 1.0)


def mean_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The challenge score: mean over targets of the per-target Pearson r."""
    return float(pearson_per_target(y_true, y_pred).mean())


def score_table(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Per-target and mean Pearson as a flat dict (what cv.json files hold)."""
    r = pearson_per_target(y_true, y_pred)
    return {"mean": float(r.mean()), **{t: float(v) for t, v in zip(TARGETS, r, strict=True)}}


def fold_scores(y_true: np.ndarray, y_pred: np.ndarray, fold: np.ndarray) -> dict[str, float]:
    """The challenge score within each fold of out-of-fold predictions, keyed by the fold
    number as text (as cv.json keeps it): how much a score moves from fold to fold, which
    one pooled CV score cannot say."""
    fold = np.asarray(fold)
    return {str(f): mean_pearson(y_true[fold == f], y_pred[fold == f])
            for f in np.unique(fold)}


def paired_gap(ahead: dict[str, float], behind: dict[str, float]) -> dict[str, float]:
    """How far `behind` trails `ahead`, fold by fold: the mean of the per-fold differences
    and its standard error (0 with one fold). A gap within about one standard error is
    fold-to-fold noise, not a lead."""
    diffs = np.array([ahead[f] - behind[f] for f in ahead])
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return {"mean": float(diffs.mean()), "se": se}
