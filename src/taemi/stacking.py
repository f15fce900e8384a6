"""Stacking level-1 models with a LightGBM meta-regressor (`taemi stack`).

    ensembles/<name>/oof.csv test.csv cv.json config.json

The stacker's features are the out-of-fold predictions of the chosen experiments (plus
optional per-clip meta features). It is trained *nested* on the same folds: for each fold
a stacker is fitted on the other folds' rows and predicts this fold's rows, so its own
out-of-fold score is honest. A member's OOF row comes from one fold model, so by default
(`stack.test_inputs: fold_models`) every fold stacker also predicts the test from each fold
model's test predictions in turn, and the test prediction is the mean of all those: trees
see the kind of inputs they learnt from, not the smoother fold-model mean. Every
experiment in a stack must have been trained on the same folds file: a mismatch, or a
missing OOF row, is an error. Best single model, mean blend, selected blend (greedy member
selection), ridge stack and LightGBM stack are reported side by side. Stack outputs are
not clipped: clipping changes Pearson, and the submission maps each target into [0, 1] by
an increasing affine map instead.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupShuffleSplit

from taemi.artifacts import read_json, stable_hash, write_csv, write_json
from taemi.config import Config, ConfigError, StackConfig
from taemi.data import ID_COLUMN, TARGETS, ChallengeData, DataError, labels_matrix
from taemi.experiment import labels_digest, open_packs, prediction_frame, stale_reason
from taemi.folds import HOLDOUT, folds_digest, label_groups, training_rows
from taemi.identity import file_digest, source_files_digest
from taemi.metrics import (
    ConstantColumnWarning,
    fold_scores,
    mean_pearson,
    paired_gap,
    score_table,
)
from taemi.participants import clip_means
from taemi.progress import progress

# what `taemi stack` compares, in the order it prints them; `stack.method` picks one, or
# ("cv") the nested CV does
METHODS = {"best": "best single", "mean": "mean blend", "select": "selected blend",
           "ridge": "ridge stack", "lightgbm": "lightgbm stack"}


class LGBMStacker(BaseEstimator, RegressorMixin):
    """One LightGBM booster per target; early stopping on an inner split of the rows.

    With `linear_base` (the default) the boosters start from a ridge fit of the first
    `linear_columns` columns (the members' predictions; None = all) and learn only what
    that linear stack misses: with a few thousand rows, trees alone fit the members'
    predictions in coarse steps and score below the ridge stack (measured in
    benchmarks/RESULTS.md), while early stopping lets the trees add nothing when there is
    nothing to add. The inner split keeps label groups whole (no near-copy of a validation
    row in the inner training set); the boosters are then refitted on all rows with the
    number of rounds early stopping chose. Deterministic for a given `random_state`.
    """

    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.03,
                 num_leaves: int = 7, min_child_samples: int = 40, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, reg_lambda: float = 1.0,
                 early_stopping_rounds: int = 50, inner_fraction: float = 0.2,
                 linear_base: bool = True, linear_alpha: float = 1.0,
                 linear_positive: bool = False, linear_columns: int | None = None,
                 random_state: int = 0,
                 n_jobs: int = 1) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.inner_fraction = inner_fraction
        self.linear_base = linear_base
        self.linear_alpha = linear_alpha
        self.linear_positive = linear_positive
        self.linear_columns = linear_columns
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _booster(self, n_estimators: int) -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(
            n_estimators=n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
            subsample=self.subsample, subsample_freq=1, colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda, random_state=self.random_state, n_jobs=self.n_jobs,
            deterministic=True, force_row_wise=True, verbose=-1)

    def _fit_base(self, X: np.ndarray, y: np.ndarray) -> Ridge | DummyRegressor:
        """The boosters' starting point: the ridge stack, or the target means."""
        base = Ridge(alpha=self.linear_alpha, positive=self.linear_positive) \
            if self.linear_base else DummyRegressor()
        return base.fit(X[:, :self.linear_columns], y)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
            ) -> LGBMStacker:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        split = GroupShuffleSplit(1, test_size=self.inner_fraction,
                                  random_state=self.random_state)
        inner_train, inner_valid = next(split.split(X, y, groups))
        columns = slice(None, self.linear_columns)
        probe_base = self._fit_base(X[inner_train], y[inner_train])
        self.base_ = self._fit_base(X, y)
        # one contiguous row per target: LightGBM copies strided init scores with a warning
        base_train = probe_base.predict(X[inner_train, columns]).T.copy()
        base_valid = probe_base.predict(X[inner_valid, columns]).T.copy()
        base = self.base_.predict(X[:, columns]).T.copy()
        self.best_iterations_: list[int] = []
        self.boosters_: list[lgb.LGBMRegressor] = []
        for k in range(y.shape[1]):
            probe = self._booster(self.n_estimators).fit(
                X[inner_train], y[inner_train, k], init_score=base_train[k],
                eval_X=(X[inner_valid],), eval_y=(y[inner_valid, k],),
                eval_init_score=[base_valid[k]],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            best = max(1, int(probe.best_iteration_ or self.n_estimators))
            self.best_iterations_.append(best)
            self.boosters_.append(self._booster(best).fit(X, y[:, k], init_score=base[k]))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        base = self.base_.predict(X[:, :self.linear_columns])
        trees = np.column_stack([b.predict(X) for b in self.boosters_])
        return base + trees


class RidgeStacker(BaseEstimator, RegressorMixin):
    """A ridge regression on the level-1 predictions; `positive`: no negative weight."""

    def __init__(self, alpha: float = 1.0, positive: bool = False) -> None:
        self.alpha = alpha
        self.positive = positive

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
            ) -> RidgeStacker:
        self.ridge_ = Ridge(alpha=self.alpha, positive=self.positive).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.ridge_.predict(X)


class SelectedBlend(BaseEstimator, RegressorMixin):
    """A weighted mean of the members chosen by greedy forward selection with replacement
    (Caruana et al., 2004): each step adds the member that most raises the blend's mean
    Pearson on the rows it is fitted on, and it stops when none does.

    Why: the mean blend is the best stack where the OOF rows describe the submitted
    models poorly (refit members), but one weak member (a log-mel backbone) drags it down;
    a learnt weight per member and target overfits the same rows. Selection keeps the
    weights few and non-negative. X holds `n_members` blocks of the six targets.
    """

    def __init__(self, n_members: int, max_steps: int = 25) -> None:
        self.n_members = n_members
        self.max_steps = max_steps

    def _blocks(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X[:, :self.n_members * len(TARGETS)].reshape(len(X), self.n_members, -1)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
            ) -> SelectedBlend:
        members = self._blocks(X)
        counts = np.zeros(self.n_members)
        total = np.zeros_like(members[:, 0])
        score = -np.inf
        for step in range(1, self.max_steps + 1):
            with warnings.catch_warnings():  # a constant member scores 0, as the metric says
                warnings.simplefilter("ignore", ConstantColumnWarning)
                gains = [mean_pearson(y, (total + members[:, j]) / step)
                         for j in range(self.n_members)]
            j = int(np.argmax(gains))
            if gains[j] <= score + 1e-6:
                break
            counts[j] += 1
            total += members[:, j]
            score = gains[j]
        self.weights_ = counts / counts.sum()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.einsum("nmt,m->nt", self._blocks(X), self.weights_)


# ----------------------------------------------------------------------------- inputs


@dataclass
class Level1:
    """The stack's inputs: OOF and test predictions of every member, aligned by id."""

    names: list[str]  # one per member (experiment or experiment/backbone)
    ids: list[str]  # CV rows, in folds-file order
    fold: np.ndarray
    oof: np.ndarray  # (N, members, 6)
    test_ids: list[str]
    test: np.ndarray  # (T, members, 6): the fold models' mean, or the refit models'
    test_by_fold: np.ndarray  # (folds, T, members, 6): each fold model's own
    refit: bool = False  # every member's test comes from models refit on every CV row

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        return self.oof.reshape(len(self.ids), -1), self.test.reshape(len(self.test_ids), -1)

    def fold_features(self) -> list[np.ndarray]:
        """The test features as each fold's models alone give them."""
        return [t.reshape(len(self.test_ids), -1) for t in self.test_by_fold]


def _members(cfg: Config, stack: StackConfig) -> dict[str, tuple[Path, list[Path]]]:
    """Each member's folder (its oof.csv and test.csv) and the seed folders it averages."""
    members = {}
    for experiment in stack.experiments:
        exp_dir = cfg.paths.models / experiment
        if not (exp_dir / "config.json").is_file():
            raise DataError(f"experiment {experiment!r} has no results in {exp_dir}; "
                            "run `taemi train` first")
        saved = read_json(exp_dir / "config.json")
        trained = saved["experiments"][experiment]
        backbones = trained["backbones"] or list(saved["backbones"])
        seed_dirs = {b: [exp_dir / b / f"seed{s}" for s in trained["seeds"]] for b in backbones}
        if stack.level == "experiment":
            members[experiment] = (exp_dir, [d for b in backbones for d in seed_dirs[b]])
        else:
            for backbone in backbones:
                members[f"{experiment}/{backbone}"] = (exp_dir / backbone, seed_dirs[backbone])
    return members


def _fold_test(name: str, seed_dirs: list[Path], fold: int, test_ids: list[str]
               ) -> np.ndarray:
    """A member's test predictions from its fold-`fold` models alone (mean over seeds)."""
    parts = []
    for seed_dir in seed_dirs:
        path = seed_dir / f"fold{fold}" / "test.csv"
        if not path.is_file():
            raise DataError(f"member {name!r} has no test predictions of its fold {fold} "
                            f"model ({path}); retrain it, or set stack.test_inputs: fold_mean")
        frame = pd.read_csv(path, dtype={ID_COLUMN: str}).set_index(ID_COLUMN)
        parts.append(frame.loc[test_ids, list(TARGETS)].to_numpy())
    return np.mean(parts, axis=0)


def load_level1(cfg: Config, stack: StackConfig, folds: pd.DataFrame,
                test_ids: list[str]) -> Level1:
    """Read and check the members' predictions against the folds file."""
    digest = folds_digest(folds)
    cv_rows = folds[folds["fold"] != HOLDOUT].reset_index(drop=True)
    ids = cv_rows[ID_COLUMN].tolist()
    fold_numbers = sorted(cv_rows["fold"].unique())
    oof, test, by_fold, refits = [], [], [], []
    members = _members(cfg, stack)
    for name, (folder, seed_dirs) in members.items():
        experiment = name.split("/")[0]
        cv_path = cfg.paths.models / experiment / "cv.json"
        if not cv_path.is_file():
            raise DataError(f"experiment {experiment!r} has no cv.json in "
                            f"{cv_path.parent}; run `taemi train` first")
        cv = read_json(cv_path)
        if cv["folds_digest"] != digest:
            raise DataError(
                f"experiment {experiment!r} was trained on other folds ({cv['folds_file']}, "
                f"digest {cv['folds_digest']}) than this stack uses ({cfg.folds.path}, "
                f"digest {digest}); retrain it on the same folds file")
        frame = pd.read_csv(folder / "oof.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN)
        missing = [i for i in ids if i not in frame.index]
        if missing:
            raise DataError(f"{folder / 'oof.csv'} lacks OOF rows for {len(missing)} of "
                            f"{len(ids)} CV clips, e.g. {missing[:3]} (was it trained on "
                            "a subset of folds?)")
        oof.append(frame.loc[ids, list(TARGETS)].to_numpy())
        test_frame = pd.read_csv(folder / "test.csv", dtype={ID_COLUMN: str}).set_index(
            ID_COLUMN)
        absent = [i for i in test_ids if i not in test_frame.index]
        if absent:
            raise DataError(f"{folder / 'test.csv'} lacks test ids, e.g. {absent[:3]}")
        test.append(test_frame.loc[test_ids, list(TARGETS)].to_numpy())
        refits.append(bool((cv.get("refit") or {}).get("used")))
        if stack.test_inputs == "fold_models":  # a refit member: its refit models for all
            by_fold.append([test[-1] if refits[-1] else
                            _fold_test(name, seed_dirs, f, list(test_ids))
                            for f in fold_numbers])
    refit = all(refits)
    test_by_fold = (np.stack(by_fold, axis=2) if by_fold and not refit
                    else np.stack(test, axis=1)[None])  # (folds, T, members, 6)
    return Level1(list(members), ids, cv_rows["fold"].to_numpy(), np.stack(oof, axis=1),
                  list(test_ids), np.stack(test, axis=1), test_by_fold, refit)


def meta_features(data: ChallengeData, packs: dict[str, object], ids: list[str],
                  names: list[str]) -> np.ndarray:
    """Per-clip context for the stacker: log valid lengths, missing flags, transcript words."""
    columns = []
    for feature, pack in packs.items():
        rows = pack.rows(ids)
        if "lengths" in names:
            columns.append(np.log1p(pack.length[rows].astype(np.float64)))
        if "missing" in names:
            columns.append(pack.missing[rows].astype(np.float64))
        del feature
    if "transcript_length" in names:
        texts = data.transcripts
        columns.append(np.array([len(texts.get(i, "").split()) for i in ids], np.float64))
    return np.column_stack(columns) if columns else np.zeros((len(ids), 0))


def retrieval_packs(cfg: Config, data: ChallengeData, stack: StackConfig) -> dict:
    """The packs `retrieval` compares clips by: the first member's first backbone's, role ->
    pack (participant-normalised where that backbone is)."""
    first = stack.experiments[0]
    return open_packs(cfg, data, cfg.backbones_for(first)[0])


def nearest_labels(query: np.ndarray, library: np.ndarray, labels: np.ndarray, k: int
                   ) -> np.ndarray:
    """For each query row (unit-length), the similarity-weighted mean label of its `k`
    most cosine-similar library rows, then the best similarity: (n, 6 + 1)."""
    out = np.zeros((len(query), labels.shape[1] + 1))
    k = min(k, len(library))
    for start in range(0, len(query), 1024):  # in chunks: the similarity matrix is big
        sims = query[start:start + 1024] @ library.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sims, top, axis=1)
        weights = np.maximum(near, 0) + 1e-6
        out[start:start + len(sims), :-1] = np.einsum(
            "nk,nkd->nd", weights / weights.sum(1, keepdims=True), labels[top])
        out[start:start + len(sims), -1] = near.max(1)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def retrieval_features(packs: dict, y: np.ndarray, ids: list[str], folds: pd.DataFrame,
                       test_ids: list[str], k: int, refit: bool = False
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
    """`retrieval` for the CV rows `ids` (labels `y`): each fold's rows against the rows
    its fold model learnt from (`training_rows`: the other folds, less the rows that share
    a purge group with the fold, such as its seed videos), and the test once against each
    fold's library (as each fold model's test predictions are made), or, where the
    members' test predictions come from refit models (`refit`), once against every CV row,
    as those models learnt from them."""
    fold = folds.set_index(ID_COLUMN).loc[ids, "fold"].to_numpy()
    folds_here = np.unique(fold)
    position = pd.Index(ids)
    libraries = [position.isin(training_rows(folds, f)[ID_COLUMN]) for f in folds_here]
    cv_parts, test_parts = [], [[] for _ in folds_here]
    for role in sorted(packs):
        means = clip_means(packs[role], ids)[0]
        centre = means.mean(0)  # centred on the labelled clips, then cosine
        cv_x, test_x = (_unit(m - centre) for m in (means, clip_means(packs[role], test_ids)[0]))
        column = np.zeros((len(ids), y.shape[1] + 1))
        for i, (k_fold, library) in enumerate(zip(folds_here, libraries, strict=True)):
            held = fold == k_fold
            column[held] = nearest_labels(cv_x[held], cv_x[library], y[library], k)
            if not refit:
                test_parts[i].append(nearest_labels(test_x, cv_x[library], y[library], k))
        if refit:
            test_parts[0].append(nearest_labels(test_x, cv_x, y, k))
        cv_parts.append(column)
    return np.hstack(cv_parts), [np.hstack(parts) for parts in test_parts if parts]


# ----------------------------------------------------------------------------- nesting


def nested_predictions(make: Callable[[], BaseEstimator], X: np.ndarray, y: np.ndarray,
                       fold: np.ndarray, X_test: list[np.ndarray], groups: np.ndarray,
                       desc: str = "stack", fitted: list | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """OOF predictions of stackers fitted on the other folds; test = the mean of every
    stacker's prediction from every test input in `X_test` (`Level1.fold_features`, or
    one array: the fold models' mean). `fitted`, if given, receives each fold's stacker."""
    oof = np.zeros_like(y, dtype=np.float64)
    test = np.zeros((len(X_test[0]), y.shape[1]))
    folds = np.unique(fold)
    for k in progress(folds, desc=desc, unit="fold", leave=False):
        train, held = fold != k, fold == k
        model = make().fit(X[train], y[train], groups=groups[train])
        if fitted is not None:
            fitted.append(model)
        oof[held] = model.predict(X[held])
        for inputs in X_test:
            test += model.predict(inputs) / (len(folds) * len(X_test))
    return oof, test


def check_stack(cfg: Config) -> None:
    """An unknown LGBMStacker parameter in `stack.lightgbm`, or a value LightGBM refuses,
    stops the run before any work."""
    if cfg.stack is None:
        return
    known = set(inspect.signature(LGBMStacker).parameters)
    for key in cfg.stack.lightgbm:
        if key not in known:
            raise ConfigError(f"config key 'stack.lightgbm.{key}': LGBMStacker has no "
                              f"parameter {key!r}; it takes {sorted(known)}")
    rng = np.random.default_rng(0)  # a fit on 64 random rows: LightGBM checks the values
    try:
        LGBMStacker(**{**cfg.stack.lightgbm, "n_jobs": 1}).fit(rng.random((64, 3)),
                                                               rng.random((64, 6)))
    except (ValueError, TypeError) as err:
        keys = ", ".join(f"stack.lightgbm.{k}" for k in cfg.stack.lightgbm) or "stack"
        raise ConfigError(f"config key(s) {keys}: LightGBM refuses them: "
                          f"{str(err).splitlines()[0]}") from None


def stack_fingerprint(cfg: Config, stack: StackConfig, data: ChallengeData,
                      folds: pd.DataFrame, packs: dict[str, object] | None = None) -> str:
    """What the stack's outputs depend on, by content: its config, the stacker's parameters
    (defaults included, so a changed default restacks) and code (this module, parsed),
    its members' predictions and the jobs they were gathered from, the folds, the labels,
    and the inputs of its meta features (the packs' keys, the transcripts)."""
    members = {}
    for name, (folder, _) in _members(cfg, stack).items():
        experiment = name.split("/")[0]
        cv_path = cfg.paths.models / experiment / "cv.json"
        jobs = read_json(cv_path).get("jobs") if cv_path.is_file() else None
        members[name] = {"files": [file_digest(f) if f.is_file() else None
                                   for f in (folder / "oof.csv", folder / "test.csv")],
                         "jobs": jobs}
    meta = {}
    if {"lengths", "missing"} & set(stack.meta_features):
        meta["packs"] = sorted(getattr(p, "key", str(p)) for p in (packs or {}).values())
    if "transcript_length" in stack.meta_features:
        meta["transcripts"] = stable_hash(sorted(data.transcripts.items()))
    if "retrieval" in stack.meta_features:
        meta["retrieval"] = {role: pack.key for role, pack in
                             sorted(retrieval_packs(cfg, data, stack).items())}
    lightgbm = LGBMStacker(**stack.lightgbm).get_params()
    # retrieval_k keys only stacks that retrieve: stacks from before it stay current
    unused = set() if "retrieval" in stack.meta_features else {"retrieval_k"}
    return stable_hash({"stack": stack.model_dump(mode="json", exclude=unused),
                        "lightgbm": lightgbm, "code": source_files_digest([__file__]),
                        "members": members, "folds": folds_digest(folds),
                        "labels": labels_digest(data.labels), "meta": meta})


def stale_members(cfg: Config, stack: StackConfig, data: ChallengeData,
                  folds: pd.DataFrame) -> str | None:
    """The first member the config would retrain, and why (None: all are current)."""
    for experiment in stack.experiments:
        reason = stale_reason(cfg, experiment, data, folds)
        if reason:
            return f"member {experiment!r}: {reason}"
    return None


def stack_stale_reason(cfg: Config, data: ChallengeData, folds: pd.DataFrame,
                       packs: dict[str, object] | None = None) -> str | None:
    """Why the config's stack on disk is not what it would stack now (None: current)."""
    stack = cfg.stack
    if stack is None:
        return "the config has no stack"
    record = cfg.paths.ensembles / stack.name / "cv.json"
    if not record.is_file():
        return "not stacked"
    reason = stale_members(cfg, stack, data, folds)
    if reason:
        return reason
    if packs is None and {"lengths", "missing"} & set(stack.meta_features):
        packs = meta_packs(cfg, data)
    if read_json(record).get("fingerprint") != stack_fingerprint(cfg, stack, data, folds,
                                                                  packs):
        return "its members, folds, labels or meta-feature inputs changed since it was stacked"
    return None


def meta_packs(cfg: Config, data: ChallengeData) -> dict[str, object]:
    """The raw packs the meta features read (lengths, missing flags), by feature name."""
    from taemi.cache import build_packed

    return {name: build_packed(data, name, steps, cfg.cache.dir, cfg.cache.workers)
            for name, steps in cfg.packed_features()}


def run_stack(cfg: Config, data: ChallengeData, folds: pd.DataFrame,
              packs: dict[str, object] | None = None) -> dict:
    """Nested stacking on the folds; writes ensembles/<name>/ and returns its cv.json."""
    stack = cfg.stack
    if stack is None:
        raise DataError("the config has no `stack` section")
    check_stack(cfg)
    out = cfg.paths.ensembles / stack.name
    fingerprint = stack_fingerprint(cfg, stack, data, folds, packs)
    if (out / "cv.json").is_file() and read_json(out / "cv.json").get("fingerprint") == \
            fingerprint:
        return read_json(out / "cv.json")

    level1 = load_level1(cfg, stack, folds, data.test_ids)
    y = labels_matrix(data.labels, level1.ids)
    X, X_mean = level1.features()
    X_test = level1.fold_features() if stack.test_inputs == "fold_models" else [X_mean]
    n_predictions = X.shape[1]  # meta features go after them, for the trees only
    if stack.meta_features:
        X = np.hstack([X, meta_features(data, packs or {}, level1.ids, stack.meta_features)])
        test_meta = meta_features(data, packs or {}, level1.test_ids, stack.meta_features)
        X_test = [np.hstack([inputs, test_meta]) for inputs in X_test]
    retrieved = None  # the inputs with the retrieval features too
    if "retrieval" in stack.meta_features:
        near, near_test = retrieval_features(
            retrieval_packs(cfg, data, stack), y, level1.ids, folds[folds["fold"] != HOLDOUT],
            level1.test_ids, stack.retrieval_k, level1.refit)
        if stack.test_inputs == "fold_models":  # fold k's inputs with fold k's library
            with_near = [np.hstack([inputs, t]) for inputs, t in zip(X_test, near_test,
                                                                     strict=True)]
        else:  # the fold models' mean: the libraries' mean
            with_near = [np.hstack([inputs, np.mean(near_test, axis=0)]) for inputs in X_test]
        retrieved = (np.hstack([X, near]), with_near)
    # the stackers' own early-stopping split keeps the folds' groups whole
    groups = (folds.set_index(ID_COLUMN).loc[level1.ids, "group"].to_numpy()
              if "group" in folds.columns else label_groups(y))
    candidates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    member_scores = {n: score_table(y, level1.oof[:, i]) for i, n in enumerate(level1.names)}
    best = max(member_scores, key=lambda n: member_scores[n]["mean"])
    i_best = level1.names.index(best)
    candidates["best single"] = (level1.oof[:, i_best], level1.test[:, i_best])
    candidates["mean blend"] = (level1.oof.mean(axis=1), level1.test.mean(axis=1))
    selectors: list[SelectedBlend] = []
    candidates["selected blend"] = nested_predictions(
        lambda: SelectedBlend(len(level1.names)), X[:, :n_predictions], y, level1.fold,
        [inputs[:, :n_predictions] for inputs in X_test], groups, "selection", selectors)
    # the test is linear in the weights: it is the mean fold selector's blend
    selected = dict(zip(level1.names, np.mean([s.weights_ for s in selectors], axis=0)
                        .round(4).tolist(), strict=True))
    candidates["ridge stack"] = nested_predictions(
        lambda: RidgeStacker(stack.ridge_alpha, stack.ridge_positive), X[:, :n_predictions],
        y, level1.fold, [inputs[:, :n_predictions] for inputs in X_test], groups, "ridge")
    # the LightGBM stack starts from the ridge stack and boosts what it misses
    lightgbm = {"linear_columns": n_predictions, "linear_alpha": stack.ridge_alpha,
                "linear_positive": stack.ridge_positive, **stack.lightgbm}
    candidates["lightgbm stack"] = nested_predictions(
        lambda: LGBMStacker(**lightgbm), X, y, level1.fold, X_test, groups, "lightgbm")
    retrieval = None
    if retrieved is not None:  # the nested CV decides whether the retrieval features enter
        plain = candidates["lightgbm stack"]
        near = nested_predictions(lambda: LGBMStacker(**lightgbm), retrieved[0], y,
                                  level1.fold, retrieved[1], groups, "lightgbm + retrieval")
        retrieval = {"cv_with": score_table(y, near[0])["mean"],
                     "cv_without": score_table(y, plain[0])["mean"]}
        retrieval["entered"] = retrieval["cv_with"] > retrieval["cv_without"]
        candidates["lightgbm stack, no retrieval"] = plain
        candidates["lightgbm stack, retrieval"] = near
        candidates["lightgbm stack"] = near if retrieval["entered"] else plain

    leaderboard = {}
    for method, (oof, test) in candidates.items():
        entry = {"cv": score_table(y, oof), "cv_folds": fold_scores(y, oof, level1.fold)}
        if data.test_labels is not None:
            entry["heldout_test"] = score_table(labels_matrix(data.test_labels, level1.test_ids),
                                                test)
        leaderboard[method] = entry
    chosen = METHODS.get(stack.method) or max(  # "cv": the nested CV chooses, not the test
        METHODS.values(), key=lambda m: leaderboard[m]["cv"]["mean"])
    for entry in leaderboard.values():  # is the pick's lead over each more than fold noise?
        entry["behind_pick"] = paired_gap(leaderboard[chosen]["cv_folds"], entry["cv_folds"])
    oof, test = candidates[chosen]
    write_csv(out / "oof.csv", prediction_frame(level1.ids, oof, level1.fold))
    write_csv(out / "test.csv", prediction_frame(level1.test_ids, test))
    cv = {"ensemble": stack.name, "method": chosen, "members": level1.names,
          "best_single": best, "folds_file": str(cfg.folds.path),
          "folds_digest": folds_digest(folds), "overall": leaderboard[chosen]["cv"],
          "leaderboard": leaderboard, "member_scores": member_scores, "retrieval": retrieval,
          "selected_weights": selected,
          "fingerprint": fingerprint}
    write_json(out / "config.json", cfg.public())
    write_json(out / "cv.json", cv)
    return cv


def leaderboard_entries(cv: dict) -> list[tuple[str, dict]]:
    """A stack's cv.json leaderboard in METHODS order, less the methods added since it
    was stacked."""
    return [(m, cv["leaderboard"][m]) for m in METHODS.values() if m in cv["leaderboard"]]


def leaderboard_table(cv: dict) -> pd.DataFrame:
    """The stack's methods side by side: CV (and held-out test) mean Pearson."""
    rows = []
    for method, entry in leaderboard_entries(cv):
        row = {"method": method, "cv_mean": entry["cv"]["mean"]}
        if "behind_pick" in entry:  # stacked before the kit kept per-fold scores: absent
            row["behind_pick"] = entry["behind_pick"]["mean"]
            row["behind_pick_se"] = entry["behind_pick"]["se"]
        if "heldout_test" in entry:
            row["test_mean"] = entry["heldout_test"]["mean"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
