"""Stacking: nested on the folds, estimator API, fold-mismatch and missing-row errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone

from conftest import tiny_config
from taemi.artifacts import write_csv, write_json
from taemi.config import StackConfig
from taemi.data import TARGETS, DataError
from taemi.folds import folds_digest, read_folds
from taemi.metrics import score_table
from taemi.participants import clip_means
from taemi.pipeline import ensure_cache, ensure_folds, ensure_stack, open_data
from taemi.stacking import (
    METHODS,
    LGBMStacker,
    RidgeStacker,
    SelectedBlend,
    _unit,
    leaderboard_table,
    load_level1,
    nearest_labels,
    nested_predictions,
    retrieval_features,
    retrieval_packs,
    run_stack,
    stack_fingerprint,
)


class Spy(BaseEstimator):
    """Remembers which rows it was fitted on; predicts its row ids, to check nesting."""

    log: ClassVar[list] = []

    def fit(self, X, y, groups=None):
        self.seen_ = set(X[:, 0].astype(int))
        return self

    def predict(self, X):
        rows = set(X[:, 0].astype(int))
        Spy.log.append(rows & self.seen_)
        return np.zeros((len(X), 6))


def test_no_row_is_scored_by_a_stacker_that_saw_it() -> None:
    X = np.arange(60, dtype=float)[:, None]
    fold = np.arange(60) % 4
    Spy.log = []
    nested_predictions(Spy, X, np.zeros((60, 6)), fold, [-np.ones((5, 1))], np.arange(60))
    held_out = Spy.log[0::2]  # each fold: predict its held rows, then the test rows
    assert len(held_out) == 4 and all(not overlap for overlap in held_out)


def test_lightgbm_stacker_is_a_deterministic_estimator() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((300, 12))
    y = np.clip(X[:, :6] * 0.8 + 0.1 * rng.random((300, 6)), 0, 1)
    stacker = LGBMStacker(n_estimators=200, random_state=3)
    assert stacker.get_params()["random_state"] == 3 and not hasattr(stacker, "boosters_")
    assert stacker.fit(X, y) is stacker
    a = stacker.predict(X)
    b = clone(stacker).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (300, 6)
    assert len(stacker.best_iterations_) == 6
    assert np.corrcoef(a[:, 0], y[:, 0])[0, 1] > 0.8
    assert RidgeStacker(0.5).fit(X, y).predict(X).shape == (300, 6)


def test_linear_base_beats_trees_alone_on_a_linear_blend() -> None:
    """Members whose best blend is linear: trees alone fit it in steps, the base does not."""
    rng = np.random.default_rng(1)
    members = rng.random((800, 12))
    meta = rng.random((800, 3))  # context columns, for the trees only
    weights = rng.dirichlet(np.ones(12), size=6).T  # each target blends all 12 columns
    y = members @ weights + 0.02 * rng.standard_normal((800, 6))
    X = np.hstack([members, meta])
    train, held = slice(0, 600), slice(600, None)

    def held_error(stacker: LGBMStacker) -> float:
        return float(np.mean((stacker.fit(X[train], y[train]).predict(X[held]) - y[held]) ** 2))

    with_base = LGBMStacker(linear_columns=12)
    trees_only = LGBMStacker(linear_base=False)
    noise = 0.02 ** 2
    assert held_error(with_base) < 1.5 * noise < held_error(trees_only)
    assert with_base.base_.n_features_in_ == 12  # meta columns never enter the ridge


def fake_experiment(cfg, name: str, folds: pd.DataFrame, test_ids: list[str], seed: int,
                    digest: str | None = None, drop_rows: int = 0, refit: bool = False
                    ) -> None:
    """Write an experiment's artifacts as `taemi train` would, with noisy predictions
    (`refit`: its test.csv from a refit model, and no fold model's test file)."""
    rng = np.random.default_rng(seed)
    data = open_data(cfg)
    labels = data.labels.set_index("Filename").loc[folds["Filename"], list(TARGETS)]
    exp = cfg.paths.models / name
    oof = folds.copy()
    oof[list(TARGETS)] = np.clip(labels.to_numpy() + rng.normal(0, 0.3, labels.shape), 0, 1)
    truth = rng.random((len(test_ids), 6))
    by_fold = [truth + rng.normal(0, 0.2, truth.shape) for _ in folds_of(folds)]
    for fold, pred in zip(folds_of(folds), by_fold, strict=True):
        write_csv(exp / "vit-w2v" / "seed0" / f"fold{fold}" / "test.csv", frame(test_ids, pred))
    test = truth + rng.normal(0, 0.1, truth.shape) if refit else np.mean(by_fold, axis=0)
    if refit:
        shutil.rmtree(exp / "vit-w2v" / "seed0")
    for folder in (exp, exp / "vit-w2v"):
        write_csv(folder / "oof.csv", oof.iloc[drop_rows:])
        write_csv(folder / "test.csv", frame(test_ids, test))
    write_json(exp / "cv.json", {"folds_digest": digest or folds_digest(folds),
                                 "folds_file": "elsewhere.csv", "refit": {"used": refit}})
    write_json(exp / "config.json", {
        "experiments": {name: {"backbones": ["vit-w2v"], "seeds": [0]}},
        "backbones": {"vit-w2v": {}}})


def folds_of(folds: pd.DataFrame) -> list[int]:
    return sorted(f for f in folds["fold"].unique() if f >= 0)


def frame(ids: list[str], pred: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame(pred, columns=list(TARGETS))
    out.insert(0, "Filename", ids)
    return out


def stack_fakes(cfg) -> dict:
    """The stacker itself over `fake_experiment` members (they have no jobs for
    `ensure_stack` to find current)."""
    data = open_data(cfg)
    packs = {name: pack for (name, _), pack in ensure_cache(cfg, data, report=False).items()}
    return run_stack(cfg, data, read_folds(cfg.folds.path), packs)


@pytest.fixture
def stack_cfg(tiny_root: Path, tmp_path: Path):
    cfg = tiny_config(tiny_root, tmp_path,
                      experiments={"a": {}, "b": {}},
                      stack={"name": "s", "experiments": ["a", "b"],
                             "meta_features": ["missing", "transcript_length"],
                             "lightgbm": {"n_estimators": 100}},
                      paths={"models": str(tmp_path / "models"),
                             "ensembles": str(tmp_path / "ensembles")})
    folds = ensure_folds(cfg)
    test_ids = open_data(cfg).test_ids
    return cfg, folds, test_ids


def test_stack_writes_ensemble_and_leaderboard(stack_cfg) -> None:
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    cv = stack_fakes(cfg)
    out = cfg.paths.ensembles / "s"
    oof = pd.read_csv(out / "oof.csv", dtype={"Filename": str})
    assert sorted(oof["Filename"]) == sorted(folds["Filename"])
    assert pd.read_csv(out / "test.csv", dtype={"Filename": str})["Filename"].tolist() == test_ids
    table = leaderboard_table(cv)
    assert list(table.index) == ["best single", "mean blend", "selected blend", "ridge stack",
                                 "lightgbm stack"]
    assert "test_mean" in table.columns  # generated data: held-out test labels are known
    assert table.loc["mean blend", "cv_mean"] > table.loc["best single", "cv_mean"]
    # each candidate's per-fold scores, and how far it trails the pick fold by fold
    pick = cv["leaderboard"][cv["method"]]
    assert sorted(pick["cv_folds"]) == sorted(str(f) for f in folds["fold"].unique() if f >= 0)
    assert table.loc[cv["method"], "behind_pick"] == 0.0
    single = cv["leaderboard"]["best single"]
    assert single["behind_pick"]["mean"] == pytest.approx(
        np.mean([pick["cv_folds"][f] - single["cv_folds"][f] for f in pick["cv_folds"]]))
    assert single["behind_pick"]["se"] > 0
    assert cv["members"] == ["a/vit-w2v", "b/vit-w2v"]
    assert list(cv["selected_weights"]) == cv["members"]
    assert sum(cv["selected_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    stamp = (out / "cv.json").stat().st_mtime_ns
    assert stack_fakes(cfg) == cv and (out / "cv.json").stat().st_mtime_ns == stamp


def test_selected_blend_keeps_the_members_that_raise_the_blend() -> None:
    """Two noisy copies of the truth and one unrelated member: the selection weighs the
    two and leaves the third out, and so beats the plain mean; its weights sum to 1."""
    rng = np.random.default_rng(0)
    y = rng.random((400, 6))
    members = np.stack([y + rng.normal(0, 0.3, y.shape), y + rng.normal(0, 0.3, y.shape),
                        rng.random(y.shape)], axis=1)
    X = members.reshape(len(y), -1)
    blend = SelectedBlend(n_members=3).fit(X, y)
    assert blend.weights_[2] == 0 and blend.weights_[:2].min() > 0
    assert blend.weights_.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(blend.predict(X), members[:, 0] * blend.weights_[0]
                               + members[:, 1] * blend.weights_[1])
    assert score_table(y, blend.predict(X))["mean"] > score_table(y, members.mean(axis=1))["mean"]
    with_meta = np.hstack([X, rng.random((len(y), 4))])  # meta columns after the members
    np.testing.assert_array_equal(SelectedBlend(3).fit(with_meta, y).weights_, blend.weights_)


def test_a_changed_stacker_default_restacks(stack_cfg, monkeypatch) -> None:
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    data = open_data(cfg)
    before = stack_fingerprint(cfg, cfg.stack, data, folds)
    defaults = list(LGBMStacker.__init__.__defaults__)
    defaults[1] = 0.1  # learning_rate, as a new release of the kit might change it
    monkeypatch.setattr(LGBMStacker.__init__, "__defaults__", tuple(defaults))
    assert stack_fingerprint(cfg, cfg.stack, data, folds) != before


def test_fold_mismatch_and_missing_rows_are_errors(stack_cfg) -> None:
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2, digest="0123456789abcdef")
    with pytest.raises(DataError, match=r"experiment 'b' was trained on other folds"):
        stack_fakes(cfg)
    fake_experiment(cfg, "b", folds, test_ids, 2, drop_rows=3)
    with pytest.raises(DataError, match=r"lacks OOF rows for 3 of"):
        stack_fakes(cfg)


def test_stack_over_a_trained_grid(grid, tmp_path: Path) -> None:
    cfg, _ = grid
    stacked = cfg.model_copy(update={
        "stack": StackConfig(name="g", experiments=["t"], lightgbm={"n_estimators": 50}),
        "paths": cfg.paths.model_copy(update={"ensembles": tmp_path})})
    cv = ensure_stack(stacked)
    folds = read_folds(cfg.folds.path)
    assert cv["folds_digest"] == folds_digest(folds)
    assert (tmp_path / "g" / "oof.csv").is_file()


def test_test_inputs_match_what_the_stackers_learnt_from(stack_cfg) -> None:
    """`fold_models` feeds each fold model's test predictions through every stacker and
    averages: the same as the fold mean for the linear ridge stack, not for the trees. A
    member without its fold models' predictions is named."""
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    matched = stack_fakes(cfg)
    mean_cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(
        update={"test_inputs": "fold_mean", "name": "s-mean"})})
    averaged = stack_fakes(mean_cfg)
    board, mean_board = matched["leaderboard"], averaged["leaderboard"]
    assert board["ridge stack"]["heldout_test"]["mean"] == pytest.approx(
        mean_board["ridge stack"]["heldout_test"]["mean"], abs=1e-9)
    assert board["lightgbm stack"]["heldout_test"]["mean"] != pytest.approx(
        mean_board["lightgbm stack"]["heldout_test"]["mean"], abs=1e-9)
    first = folds_of(folds)[0]
    (cfg.paths.models / "b" / "vit-w2v" / "seed0" / f"fold{first}" / "test.csv").unlink()
    with pytest.raises(DataError, match=rf"'b/vit-w2v' has no test predictions of its fold "
                                        rf"{first} model"):
        stack_fakes(cfg.model_copy(update={"stack": cfg.stack.model_copy(
            update={"name": "s-again"})}))


def test_positive_ridge_never_subtracts_a_member() -> None:
    rng = np.random.default_rng(4)
    signal = rng.random((400, 6))
    noise = rng.normal(0, 0.3, (400, 6))
    # member 2 is member 1's noise: the best free blend subtracts it
    X = np.hstack([signal + noise, noise + 0.05 * rng.normal(size=(400, 6))])
    free = RidgeStacker(1.0).fit(X, signal)
    positive = RidgeStacker(1.0, positive=True).fit(X, signal)
    assert (free.ridge_.coef_ < -0.1).any()
    assert (positive.ridge_.coef_ >= 0).all()


def test_nearest_labels_recovers_a_recurring_label_vector() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))  # four seed videos, each with its own label vector
    vectors = rng.random((4, 6))
    video = np.repeat(np.arange(4), 10)
    x = centres[video] + 0.1 * rng.normal(size=(40, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    query, library = x[::5], np.delete(x, np.s_[::5], axis=0)
    near = nearest_labels(query, library, vectors[np.delete(video, np.s_[::5])], k=5)
    assert near.shape == (8, 7)
    np.testing.assert_allclose(near[:, :6], vectors[video[::5]], atol=1e-9)
    assert (near[:, 6] > 0.9).all()  # the nearest clip's similarity


def test_retrieval_reads_no_label_its_fold_model_could_not_read(stack_cfg) -> None:
    """A CV row's retrieval features come only from the labels its fold model learnt from:
    changing a fold's labels, or those of the rows purged from its training rows (a purge
    group: its seed videos), changes no feature of that fold's rows."""
    cfg, folds, test_ids = stack_cfg
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    stack = cfg.stack.model_copy(update={"meta_features": ["retrieval"]})
    packs = retrieval_packs(cfg, data, stack)
    cv_rows = folds[folds["fold"] >= 0].reset_index(drop=True)
    ids, fold = cv_rows["Filename"].tolist(), cv_rows["fold"].to_numpy()
    y = np.random.default_rng(1).random((len(ids), 6))
    cv, test = retrieval_features(packs, y, ids, cv_rows, test_ids, k=3)
    assert cv.shape == (len(ids), 7 * len(packs)) and len(test) == len(folds_of(cv_rows))
    first = fold == folds_of(cv_rows)[0]
    changed = y.copy()
    changed[first] = 1 - changed[first]
    cv2, test2 = retrieval_features(packs, changed, ids, cv_rows, test_ids, k=3)
    np.testing.assert_array_equal(cv2[first], cv[first])  # its own labels: never read
    assert not np.allclose(cv2[~first], cv[~first])  # the other folds' library changed
    np.testing.assert_array_equal(test2[0], test[0])  # fold 0's library lacks fold 0
    # a purge group joining each first-fold row with one row of another fold
    others = np.flatnonzero(~first)[:first.sum()]
    purge = np.arange(len(ids))
    purge[others] = purge[np.flatnonzero(first)[:len(others)]]
    purged = cv_rows.assign(purge=purge)
    base, _ = retrieval_features(packs, y, ids, purged, test_ids, k=3)
    mates = y.copy()
    mates[others] = 1 - mates[others]
    moved, _ = retrieval_features(packs, mates, ids, purged, test_ids, k=3)
    np.testing.assert_array_equal(moved[first], base[first])  # purged mates: never read
    assert not np.allclose(cv[first], base[first])  # the purge did shrink the library


def test_the_nested_cv_decides_whether_retrieval_enters_the_stack(stack_cfg) -> None:
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(
        update={"meta_features": ["missing", "retrieval"]})})
    cv = stack_fakes(cfg)
    board, decided = cv["leaderboard"], cv["retrieval"]
    assert decided["entered"] == (decided["cv_with"] > decided["cv_without"])
    assert board["lightgbm stack"] == board[
        "lightgbm stack, retrieval" if decided["entered"] else "lightgbm stack, no retrieval"]
    assert decided["cv_with"] == board["lightgbm stack, retrieval"]["cv"]["mean"]
    data = open_data(cfg)
    wider = cfg.stack.model_copy(update={"retrieval_k": 3})
    assert stack_fingerprint(cfg, wider, data, folds) != stack_fingerprint(
        cfg, cfg.stack, data, folds)


def test_refit_members_feed_the_stack_their_refit_test(stack_cfg) -> None:
    """A member refit on every CV row gives the stack its refit test predictions in every
    fold's place; when all members are refit, the test's retrieval library is every CV row
    (what those models learnt from), not each fold's."""
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1, refit=True)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    mixed = load_level1(cfg, cfg.stack, folds, test_ids)
    assert not mixed.refit and len(mixed.test_by_fold) == len(folds_of(folds))
    for by_fold in mixed.test_by_fold:
        np.testing.assert_array_equal(by_fold[:, 0], mixed.test[:, 0])
    assert not np.allclose(mixed.test_by_fold[0][:, 1], mixed.test_by_fold[1][:, 1])
    fake_experiment(cfg, "b", folds, test_ids, 2, refit=True)
    level1 = load_level1(cfg, cfg.stack, folds, test_ids)
    assert level1.refit and level1.test_by_fold.shape == (1, *level1.test.shape)
    np.testing.assert_array_equal(level1.test_by_fold[0], level1.test)

    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    packs = retrieval_packs(cfg, data, cfg.stack)
    cv_rows = folds[folds["fold"] >= 0].reset_index(drop=True)
    ids = cv_rows["Filename"].tolist()
    y = np.random.default_rng(1).random((len(ids), 6))
    per_fold, test = retrieval_features(packs, y, ids, cv_rows, test_ids, k=3)
    cv, (refit_test,) = retrieval_features(packs, y, ids, cv_rows, test_ids, k=3, refit=True)
    np.testing.assert_array_equal(cv, per_fold)  # the CV rows keep their folds' libraries
    role = sorted(packs)[0]
    means = clip_means(packs[role], ids)[0]
    centre = means.mean(0)
    every = nearest_labels(_unit(clip_means(packs[role], test_ids)[0] - centre),
                           _unit(means - centre), y, 3)
    np.testing.assert_allclose(refit_test[:, :7], every)
    assert not any(np.allclose(refit_test, t) for t in test)
    cv_json = stack_fakes(cfg.model_copy(update={"stack": cfg.stack.model_copy(
        update={"meta_features": ["retrieval"]})}))
    assert set(cv_json["retrieval"]) == {"cv_with", "cv_without", "entered"}
    written = pd.read_csv(cfg.paths.ensembles / "s" / "test.csv", dtype={"Filename": str})
    assert written["Filename"].tolist() == test_ids and written[list(TARGETS)].notna().all().all()


def test_method_cv_submits_the_candidate_with_the_highest_nested_cv(stack_cfg) -> None:
    """`stack.method: cv`: the best of the four by nested CV, never by the test; each
    member here is as good as the other, so a weight-free blend can beat a learnt one."""
    cfg, folds, test_ids = stack_cfg
    fake_experiment(cfg, "a", folds, test_ids, 1)
    fake_experiment(cfg, "b", folds, test_ids, 2)
    cfg = cfg.model_copy(update={"stack": cfg.stack.model_copy(update={"method": "cv"})})
    cv = stack_fakes(cfg)
    board = cv["leaderboard"]
    ranked = sorted(METHODS.values(), key=lambda m: board[m]["cv"]["mean"])
    assert cv["method"] == ranked[-1] and cv["overall"] == board[ranked[-1]]["cv"]
    oof = pd.read_csv(cfg.paths.ensembles / "s" / "oof.csv", dtype={"Filename": str})
    y = open_data(cfg).labels.set_index("Filename").loc[oof["Filename"], list(TARGETS)]
    assert score_table(y.to_numpy(), oof[list(TARGETS)].to_numpy()) == pytest.approx(
        board[ranked[-1]]["cv"])
