"""Challenge submission files (`taemi submit`, `taemi validate`).

One CSV per submission, header `Filename,Admiration,...,Joy`, one row per test clip: its
5-digit id and six floats in [0, 1]. A file is checked before it is written (every test id
exactly once and no other, 5-digit ids, the exact header and column order, six finite
floats) and is never overwritten silently. Teams have five submissions; the kit warns past
that many in the submissions folder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import atomic_path
from taemi.data import ID_COLUMN, ID_PATTERN, LABEL_COLUMNS, TARGETS, DataError

HEADER = ",".join(LABEL_COLUMNS)
MAX_SUBMISSIONS = 5


class SubmissionError(DataError):
    """A submission that would be rejected or scored wrongly; lists every problem found."""


def submission_problems(path: str | os.PathLike, test_ids: list[str] | None = None
                        ) -> list[str]:
    """Every reason the CSV at `path` is not a valid submission (empty list: valid)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: file not found"]
    lines = path.read_text().splitlines()
    if not lines:
        return [f"{path}: empty file"]
    problems = []
    if lines[0].strip().lstrip("\ufeff") != HEADER:
        problems.append(f"{path}: header is {lines[0]!r}, expected {HEADER!r} (exact names "
                        "and order)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        return [*problems, f"{path}: not a readable CSV ({err})"]
    if ID_COLUMN not in frame.columns:
        return [*problems, f"{path}: no {ID_COLUMN!r} column"]
    ids = frame[ID_COLUMN].tolist()
    bad_ids = [i for i in ids if not ID_PATTERN.match(i)]
    if bad_ids:
        problems.append(f"{path}: {len(bad_ids)} ids are not 5-digit strings, e.g. "
                        f"{bad_ids[:3]} (leading zeros lost?)")
    duplicated = sorted(set(pd.Series(ids)[pd.Series(ids).duplicated()]))
    if duplicated:
        problems.append(f"{path}: ids listed more than once: {duplicated[:5]}")
    if test_ids is not None:
        missing = sorted(set(test_ids) - set(ids))
        extra = sorted(set(ids) - set(test_ids))
        if missing:
            problems.append(f"{path}: {len(missing)} test ids missing, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{path}: {len(extra)} ids that are not test ids, e.g. {extra[:5]}")
    for target in TARGETS:
        if target not in frame.columns:
            continue
        values = pd.to_numeric(frame[target], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            problems.append(f"{path}: column {target!r} has {int(bad.sum())} values that are "
                            f"not finite numbers, e.g. id {ids[row]}: {frame[target][row]!r}")
        outside = (values < 0) | (values > 1)
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            problems.append(f"{path}: column {target!r} has {int(outside.sum())} values "
                            f"outside [0, 1], e.g. id {ids[row]}: {values[row]}")
    return problems


def validate(path: str | os.PathLike, test_ids: list[str] | None = None) -> None:
    problems = submission_problems(path, test_ids)
    if problems:
        raise SubmissionError("invalid submission:\n  " + "\n  ".join(problems))


def into_range(values: np.ndarray) -> np.ndarray:
    """Each column moved into [0, 1] by an increasing affine map, only where it leaves the
    range: a shift when its spread fits, else a rescale of [min, max] onto [0, 1].
    Clipping would change Pearson; an increasing affine map leaves it (and every
    ranking) exactly as it was."""
    out = values.astype(np.float64).copy()
    for k in range(out.shape[1]):
        low, high = out[:, k].min(), out[:, k].max()
        if low >= 0 and high <= 1:
            continue
        if high - low <= 1:
            out[:, k] -= low if low < 0 else high - 1
        else:
            out[:, k] = (out[:, k] - low) / (high - low)
    return np.clip(out, 0, 1)  # rounding only: the map already lands in [0, 1]


def make_submission(predictions: pd.DataFrame, test_ids: list[str]) -> pd.DataFrame:
    """Order predictions by the test ids, keep the six targets, move each into [0, 1]
    without changing its Pearson (`into_range`)."""
    indexed = predictions.set_index(ID_COLUMN)
    missing = [i for i in test_ids if i not in indexed.index]
    if missing:
        raise SubmissionError(f"predictions lack {len(missing)} test ids, e.g. {missing[:5]}")
    values = indexed.loc[test_ids, list(TARGETS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise SubmissionError(f"predictions hold {int(bad.sum())} NaN or infinite values, "
                              f"first for id {test_ids[row]}, {TARGETS[col]!r}")
    frame = pd.DataFrame(into_range(values), columns=list(TARGETS))
    frame.insert(0, ID_COLUMN, list(test_ids))
    return frame


def submission_text(frame: pd.DataFrame) -> str:
    """The CSV text a submission file holds."""
    return frame.to_csv(index=False, float_format="%.8f", lineterminator="\n")


def write_submission(frame: pd.DataFrame, path: str | os.PathLike, test_ids: list[str],
                     overwrite: bool = False) -> Path:
    """Validate and write atomically. An identical file already there is kept; a different
    one is an error unless `overwrite`."""
    path = Path(path)
    text = submission_text(frame)
    if path.is_file():
        if path.read_text() == text:
            return path
        if not overwrite:
            raise FileExistsError(f"{path} exists with other predictions; choose another "
                                  "name (submit.name, or `taemi submit --name`), or replace "
                                  "it with `taemi submit --force`")
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text(text)
        problems = [p.replace(str(tmp), str(path)) for p in submission_problems(tmp, test_ids)]
        if problems:
            raise SubmissionError("invalid submission, not written:\n  " + "\n  ".join(problems))
    others = [p for p in path.parent.glob("*.csv")]
    if len(others) > MAX_SUBMISSIONS:
        warnings.warn(f"{path.parent} holds {len(others)} submissions; a team may submit "
                      f"at most {MAX_SUBMISSIONS}", stacklevel=2)
    return path
