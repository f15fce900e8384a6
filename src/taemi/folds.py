"""Fold assignments shared by every model (`taemi folds` -> folds/<name>/folds.csv).

A fold must hold out what the challenge's test holds out, or the CV lies:
* participants: the organisers' splits are subject-independent, so a fold model must not
  have seen the faces and voices of the people it is scored on (groups from
  `taemi.participants`: inferred from face and voice, or a file of true ids);
* seed videos, where the test shows seed videos no labelled clip mimics: clips of one seed
  share a label vector and a near-identical transcript (groups from both; the all-zero
  vector is never one group, since unrelated clips share it).
`group_by` picks participant, seed, both or none; `auto` follows the evidence
(`taemi.evidence`). Folds are stratified on the dominant emotion and its binned
intensity, and folds.csv records each clip's group so that model selection can split a
fold's training rows the same way. With `scheme: train` the official validation split is
kept out of the folds as a holdout (fold -1).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from taemi.artifacts import stable_hash, write_csv
from taemi.data import ID_COLUMN, TARGETS, ChallengeData, DataError, check_ids
from taemi.identity import table_digest

HOLDOUT = -1
SCHEMES = ("train+valid", "train")
GROUP_BY = ("auto", "participant", "seed", "both", "none")


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
    counts[~uniq.any(axis=1)] = 0  # the all-zero vector: shared by unrelated clips
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
    out = parent[groups]
    zero = ~keys.any(axis=1)
    out[zero] = len(uniq) + np.arange(zero.sum())  # each all-zero clip stands alone
    return out


def linked_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One group per connected component of `n` nodes joined by the links a[i] - b[i]."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def union_groups(*groupings: np.ndarray) -> np.ndarray:
    """Rows that share a group in any of `groupings` end in one group."""
    n = len(groupings[0])
    a, b, offset = [], [], n  # nodes: the rows, then every grouping's groups
    for g in groupings:
        _, inverse = np.unique(g, return_inverse=True)
        a.append(np.arange(n))
        b.append(offset + inverse.ravel())
        offset += int(inverse.max()) + 1 if n else 0
    return linked_groups(offset, np.concatenate(a), np.concatenate(b))[:n]


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


def normalise_text(text: str) -> str:
    """Lower case, words only: the form in which two transcripts of one script match."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


def near_duplicates(queries: list[str], references: list[str], same: bool = False,
                    min_similarity: float = 0.8, chunk: int = 2048) -> list[np.ndarray]:
    """For each query text, the references whose word sets are near-identical (cosine of
    binary bags of words >= `min_similarity`); empty texts match nothing. `same`: the two
    lists are one, and a text does not match itself."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    queries = [normalise_text(t) for t in queries]
    references = [normalise_text(t) for t in references]
    out = [np.zeros(0, np.int64) for _ in queries]
    if not any(references) or not any(queries):
        return out
    vocab = CountVectorizer(binary=True, token_pattern=r"\S+").fit([*queries, *references])
    q = normalize(vocab.transform(queries).astype(np.float32))
    r = normalize(vocab.transform(references).astype(np.float32)).T.tocsr()
    for start in range(0, len(queries), chunk):
        sims = (q[start:start + chunk] @ r).toarray()
        if same:
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = 0
        for i, row in enumerate(sims):
            out[start + i] = np.flatnonzero(row >= min_similarity)
    return out


def transcript_groups(texts: list[str], min_similarity: float = 0.8) -> np.ndarray:
    """Clips whose transcripts are near-identical (the same script) share a group; a clip
    without speech stands alone."""
    matches = near_duplicates(texts, texts, same=True, min_similarity=min_similarity)
    rows = np.concatenate([np.full(len(m), i) for i, m in enumerate(matches)] or [[]])
    return linked_groups(len(texts), rows, np.concatenate(matches or [[]]))


def seed_groups(labels: np.ndarray, texts: list[str] | None = None) -> np.ndarray:
    """The stand-in for the seed video: the same label vector (`label_groups`) or a
    near-identical transcript."""
    groups = label_groups(labels)
    if texts is None or not any(texts):
        return groups
    return union_groups(groups, transcript_groups(texts))


def make_folds(
    labels: pd.DataFrame,
    n_splits: int = 5,
    scheme: str = "train+valid",
    seed: int = 42,
    n_bins: int = 3,
    groups: np.ndarray | None = None,
    purge: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assign each labelled clip a fold and record its group.

    `labels` has Filename, the targets and `split`; `groups` (one per row of `labels`)
    are kept whole inside one fold: seed groups (`label_groups`) when not given. `purge`
    (one per row, optional) is a second grouping that folds cannot keep whole: it is
    recorded, and a fold's training rows leave out every row that shares a purge group
    with the fold (`training_rows`).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"folds scheme must be one of {SCHEMES}, got {scheme!r}")
    in_pool = np.ones(len(labels), bool) if scheme == "train+valid" else (
        labels["split"] == "train").to_numpy()
    pool = labels[in_pool]
    y = pool[list(TARGETS)].to_numpy()
    groups = label_groups(y) if groups is None else np.asarray(groups)[in_pool]
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} groups of clips: cannot make {n_splits} grouped "
                        "folds")
    largest = int(np.bincount(np.unique(groups, return_inverse=True)[1].ravel()).max())
    if largest > len(pool) / n_splits:
        raise DataError(f"the largest group holds {largest:,} of {len(pool):,} clips, more "
                        f"than one fold of {n_splits}: these groups cannot make grouped folds "
                        "(choose a coarser folds.group_by, or fewer folds)")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.full(len(pool), HOLDOUT, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for k, (_, held) in enumerate(splitter.split(y, label_strata(y, n_bins), groups)):
            fold[held] = k
    out = pd.DataFrame({ID_COLUMN: pool[ID_COLUMN].to_numpy(), "fold": fold,
                        "group": np.unique(groups, return_inverse=True)[1].ravel()})
    columns = ["group"]
    if purge is not None:
        out["purge"] = np.unique(np.asarray(purge)[in_pool], return_inverse=True)[1].ravel()
        columns.append("purge")
    if scheme == "train":
        holdout = labels.loc[~in_pool, ID_COLUMN].to_numpy()
        out = pd.concat([out, pd.DataFrame({ID_COLUMN: holdout, "fold": HOLDOUT,
                                            **{c: -1 for c in columns}})])
    out = out.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    cv = out["fold"] != HOLDOUT  # groups numbered by first appearance: a stable file
    for column in columns:
        out.loc[cv, column] = pd.factorize(out.loc[cv, column])[0]
    return out


def purged(folds: pd.DataFrame) -> list[tuple[int, float]]:
    """Per fold, the share of its other-fold rows that purging leaves out."""
    out = []
    for k in sorted(int(f) for f in folds["fold"].unique() if f != HOLDOUT):
        others = ((folds["fold"] != HOLDOUT) & (folds["fold"] != k)).sum()
        out.append((k, 1 - len(training_rows(folds, k)) / max(int(others), 1)))
    return out


def training_rows(folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The rows fold `fold`'s model may learn from: every other CV fold, less any row that
    shares a `purge` group (when the folds file has one) with a row of the fold."""
    cv = folds["fold"] != HOLDOUT
    train = folds[cv & (folds["fold"] != fold)]
    if "purge" in folds.columns:
        held = folds.loc[folds["fold"] == fold, "purge"].unique()
        train = train[~train["purge"].isin(held)]
    return train


def training_share(folds: pd.DataFrame, fold_numbers: list[int]) -> float:
    """The mean share of the CV rows a fold model learns from (`training_rows`): 1 - 1/k
    for k plain folds, far less where purge groups (seed videos) take rows out."""
    cv_rows = int((folds["fold"] != HOLDOUT).sum())
    return float(np.mean([len(training_rows(folds, f)) for f in fold_numbers]) / cv_rows)


def selection_split(folds: pd.DataFrame, fold: int, fraction: float = 0.15,
                    seed: int = 0) -> tuple[list[str], list[str]]:
    """Split fold `fold`'s training rows into (fit, select): model selection (epoch,
    early stopping, tuning) judges on `select` and never sees the scored fold.

    `select` is about `fraction` of the training rows, whole groups of the folds file's
    `group` column (the same grouping as the folds); a folds file without groups (one a
    team made by hand) selects on the next fold instead.
    """
    train = training_rows(folds, fold)
    if "group" not in folds.columns:
        cv = sorted(int(f) for f in folds["fold"].unique() if f != HOLDOUT)
        nxt = cv[(cv.index(fold) + 1) % len(cv)]
        chosen = (train["fold"] == nxt).to_numpy()
    else:
        groups = train["group"].to_numpy()
        uniq = np.unique(groups)
        order = np.random.default_rng([seed, fold]).permutation(uniq)
        sizes = pd.Series(groups).value_counts()
        taken = np.cumsum(sizes.loc[order].to_numpy()) <= fraction * len(train)
        taken[0] = True  # at least one group
        chosen = np.isin(groups, order[taken])
    ids = train[ID_COLUMN].to_numpy()
    return ids[~chosen].tolist(), ids[chosen].tolist()


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write folds.csv atomically; an identical file already there is left untouched."""
    path = Path(path)
    if path.is_file() and read_folds(path).equals(folds):
        return path
    write_csv(path, folds)
    return path


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a folds file: 5-digit ids once each, integer folds, and optionally
    each clip's `group` (selection inside a fold then keeps groups whole)."""
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
    out = pd.DataFrame({ID_COLUMN: ids, "fold": folds.astype(np.int64).to_numpy()})
    for column in ("group", "purge"):  # optional: the groupings the folds respect
        if column not in frame.columns:
            continue
        group = pd.to_numeric(frame[column], errors="coerce")
        exact = group.notna().all() and (group == group.round()).all()
        out[column] = group.astype(np.int64).to_numpy() if exact else pd.factorize(
            frame[column].astype(str))[0]
    return out


SELECTION_VERSION = 1  # the rule of `selection_split`: a change re-keys every job


def check_given_folds(folds: pd.DataFrame, path: str | os.PathLike,
                      data: ChallengeData) -> pd.DataFrame:
    """A folds file a team made (`folds.given: true`) must hold every labelled clip exactly
    once (`read_folds` checks once), only labelled clips, and at least two CV folds; a
    held-out fold (-1) is allowed. Anything else is a DataError naming the file and the
    first offending id."""
    labelled = set(data.labels[ID_COLUMN])
    test = set(data.test_ids)
    for clip in folds[ID_COLUMN]:
        if clip not in labelled:
            what = "a test clip, which has no label" if clip in test else "not a known clip"
            raise DataError(f"{path}: id {clip} is {what}; a folds file holds labelled "
                            "clips only")
    listed = set(folds[ID_COLUMN])
    absent = sorted(labelled - listed)
    if absent:
        raise DataError(f"{path}: labelled clip {absent[0]} is in no fold ({len(absent)} "
                        "labelled clips missing in all); every labelled clip must have a "
                        f"fold (or {HOLDOUT} to hold it out)")
    cv = sorted(int(f) for f in folds["fold"].unique() if f != HOLDOUT)
    if len(cv) < 2:
        raise DataError(f"{path}: {len(cv)} cross-validation fold(s) ({cv}); a folds file "
                        "needs at least two")
    return folds


def folds_digest(folds: pd.DataFrame) -> str:
    """A fingerprint of the whole assignment: folds, and the `group` and `purge` columns
    that decide each fold's training rows and its inner selection split (two groupings with
    the same fold numbers train different models)."""
    columns = [c for c in (ID_COLUMN, "fold", "group", "purge") if c in folds.columns]
    rows = folds[columns].astype({c: np.int64 for c in columns if c != ID_COLUMN})
    return stable_hash({"rows": table_digest(rows), "selection": SELECTION_VERSION}, 16)
