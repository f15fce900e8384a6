"""The challenge metric: per-target Pearson, then the mean of the six."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr

from taemi.metrics import (
    ConstantColumnWarning,
    fold_scores,
    mean_pearson,
    paired_gap,
    pearson_per_target,
    score_table,
)


def test_equals_scipy_column_by_column() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((200, 6))
    p = y + rng.normal(0, [0.1, 0.3, 1, 2, 0.05, 5], size=(200, 6))
    expected = [pearsonr(y[:, k], p[:, k]).statistic for k in range(6)]
    np.testing.assert_allclose(pearson_per_target(y, p), expected, rtol=1e-12)
    assert mean_pearson(y, p) == pytest.approx(np.mean(expected))


def test_is_not_a_pearson_over_the_flattened_matrix() -> None:
    rng = np.random.default_rng(1)
    y = rng.random((100, 6)) + np.arange(6)  # column means differ
    p = rng.random((100, 6)) + np.arange(6)  # no per-column signal
    flattened = pearsonr(y.ravel(), p.ravel()).statistic
    assert flattened > 0.9
    assert abs(mean_pearson(y, p)) < 0.2


def test_constant_column_scores_zero_and_warns() -> None:
    rng = np.random.default_rng(2)
    y = rng.random((50, 6))
    p = y.copy()
    p[:, 3] = 0.5
    with pytest.warns(ConstantColumnWarning, match="Empathic Pain"):
        r = pearson_per_target(y, p)
    assert r[3] == 0 and np.allclose(np.delete(r, 3), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not np.isnan(mean_pearson(y, np.full_like(y, 0.2)))


def test_score_table_names_targets() -> None:
    rng = np.random.default_rng(3)
    y = rng.random((30, 6))
    table = score_table(y, y)
    assert table["mean"] == pytest.approx(1) and table["Joy"] == pytest.approx(1)
    with pytest.raises(ValueError, match="one shape"):
        mean_pearson(y, y[:, :5])


def test_non_finite_input_is_refused_clearly() -> None:
    from taemi.data import DataError

    y = np.random.default_rng(0).random((20, 6))
    pred = y.copy()
    pred[7, 5] = np.nan
    with pytest.raises(DataError, match=r"predictions hold 1 non-finite values \(first in "
                                        r"row 7, 'Joy'\)"):
        mean_pearson(y, pred)


def test_fold_scores_score_each_fold_alone() -> None:
    rng = np.random.default_rng(3)
    y = rng.random((60, 6))
    pred = y + rng.normal(0, 0.3, y.shape)
    fold = np.repeat([2, 0, 1], 20)
    pred[fold == 1] = rng.random((20, 6))  # one fold of noise: its score alone falls
    scores = fold_scores(y, pred, fold)
    assert list(scores) == ["0", "1", "2"]
    for f in (0, 1, 2):
        assert scores[str(f)] == pytest.approx(mean_pearson(y[fold == f], pred[fold == f]))
    assert scores["1"] < 0.5 < min(scores["0"], scores["2"])


def test_paired_gap_is_the_mean_fold_difference_with_its_standard_error() -> None:
    ahead = {"0": 0.80, "1": 0.70, "2": 0.90}
    behind = {"0": 0.78, "1": 0.71, "2": 0.84}
    gap = paired_gap(ahead, behind)
    diffs = np.array([0.02, -0.01, 0.06])
    assert gap["mean"] == pytest.approx(diffs.mean())
    assert gap["se"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert paired_gap(ahead, ahead) == {"mean": 0.0, "se": 0.0}
    assert paired_gap({"0": 0.5}, {"0": 0.4})["se"] == 0.0  # one fold: no spread to measure
