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


def test_folds_are_balanced_and_stratified(labels: pd.DataFrame) -> None:
    folds = make_folds(labels, n_splits=4)
    sizes = folds["fold"].value_counts()
    assert sizes.max() < 1.6 * sizes.min()
    merged = labels.merge(folds, on="Filename")
    dominant = merged[list(TARGETS)].to_numpy().argmax(1)
    share = pd.crosstab(merged["fold"], dominant, normalize="index")
    assert (share.max() - share.min()).max() < 0.25


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
