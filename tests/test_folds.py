"""Folds: grouped by label vector, stratified, deterministic, with an optional holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taemi.data import TARGETS, ChallengeData, DataError
from taemi.folds import (
    HOLDOUT,
    folds_digest,
    label_groups,
    label_strata,
    make_folds,
    read_folds,
    write_folds,
)


@pytest.fixture(scope="module")
def labels(tiny_root: Path) -> pd.DataFrame:
    return ChallengeData(tiny_root, test_list="test_split.csv").labels


def test_groups_never_straddle_folds(labels: pd.DataFrame) -> None:
    folds = make_folds(labels, n_splits=4)
    assert sorted(folds["Filename"]) == sorted(labels["Filename"])
    assert set(folds["fold"]) == {0, 1, 2, 3}
    merged = labels.merge(folds, on="Filename")
    groups = label_groups(merged[list(TARGETS)].to_numpy())
    assert (pd.Series(merged["fold"].to_numpy()).groupby(groups).nunique() == 1).all()


def test_folds_are_balanced_and_stratified() -> None:
    rng = np.random.default_rng(0)
    vectors = np.round(rng.random((400, 6)) ** 2 * 6) / 6  # 400 label groups
    y = vectors[rng.integers(0, 400, size=3000)]
    labels = pd.DataFrame(y, columns=list(TARGETS))
    labels.insert(0, "Filename", [f"{i:05d}" for i in range(len(y))])
    labels["split"] = "train"
    folds = make_folds(labels, n_splits=5).merge(labels, on="Filename")
    sizes = folds["fold"].value_counts()
    assert sizes.max() < 1.2 * sizes.min()
    strata = label_strata(folds[list(TARGETS)].to_numpy())
    share = pd.crosstab(folds["fold"], strata, normalize="index")
    assert (share.max() - share.min()).max() < 0.06


def test_same_config_same_file(labels: pd.DataFrame, tmp_path: Path) -> None:
    path = write_folds(make_folds(labels, 5, seed=7), tmp_path / "folds.csv")
    first = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    write_folds(make_folds(labels, 5, seed=7), path)
    assert path.read_bytes() == first and path.stat().st_mtime_ns == stamp
    assert folds_digest(read_folds(path)) != folds_digest(make_folds(labels, 5, seed=8))


def test_train_scheme_keeps_validation_as_holdout(labels: pd.DataFrame) -> None:
    folds = make_folds(labels, 3, scheme="train").merge(labels, on="Filename")
    assert (folds.loc[folds["split"] == "valid", "fold"] == HOLDOUT).all()
    assert (folds.loc[folds["split"] == "train", "fold"] >= 0).all()


def test_strata_separate_silence_and_dominant_emotion() -> None:
    y = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    strata = label_strata(y, n_bins=2)
    assert len(set(strata)) == 3


def test_bad_folds_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="taemi folds"):
        read_folds(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Filename": ["00001"], "fold": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="column 'fold' must hold integers"):
        read_folds(bad)


def test_one_off_near_copies_join_their_group_without_chaining() -> None:
    s = 1 / 6
    y = np.array([
        [s, 0, 0, 0, 0, 0], [s, 0, 0, 0, 0, 0], [s, 0, 0, 0, 0, 0],  # a recurring vector
        [2 * s, 0, 0, 0, 0, 0],  # seen once, one sixth away: a near copy, joins it
        [3 * s, 0, 0, 0, 0, 0], [3 * s, 0, 0, 0, 0, 0],  # recurring, one sixth from the copy
        [0, 0, 0, 0, 0, 1.0],  # seen once, nothing near: a group alone
    ])
    groups = label_groups(y)
    assert groups[3] == groups[0] != groups[4]
    assert groups[4] == groups[5] and groups[6] not in groups[:6]
