"""The challenge's data, exactly as the organisers lay it out.

    <root>/train_split.csv        Filename,Admiration,...,Joy   (ids 00000-08071)
    <root>/valid_split.csv        same header                   (ids 08072-12659)
    <root>/test_data/raw|audio/   test media; their file names are the test ids
    <root>/<feature>/{id}.pkl     one pickled (T, D) array per clip: vit, wav2vec2, text, ...
    <root>/transcripts.csv        Filename,text (ours: Whisper is run by every team)

Filename is a 5-digit string everywhere. Real feature files are messy (NaNs, 1-D arrays,
missing files, 20-minute clips): `load_feature` takes all of it and says what it did, and
bad tables raise `DataError` with the file, the id or the column and what was expected.
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

TARGETS: tuple[str, ...] = (
    "Admiration",
    "Amusement",
    "Determination",
    "Empathic Pain",
    "Excitement",
    "Joy",
)
ID_COLUMN = "Filename"
LABEL_COLUMNS: tuple[str, ...] = (ID_COLUMN, *TARGETS)
ID_PATTERN = re.compile(r"^\d{5}$")
LONG_CLIP_STEPS = 60_000
FEATURE_SUFFIXES = (".pkl", ".npy")
TEST_MEDIA_DIRS = ("raw", "audio")


class DataError(ValueError):
    """Input data that is not what the challenge's layout promises; the message says where."""


# ----------------------------------------------------------------------------- tables


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        return pd.read_csv(path, dtype={ID_COLUMN: str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err


def _require_columns(frame: pd.DataFrame, path: Path, required: Iterable[str]) -> None:
    present = [str(c) for c in frame.columns]
    for column in required:
        if column in present:
            continue
        close = difflib.get_close_matches(column, present, n=1, cutoff=0.6)
        hint = f" (found {close[0]!r}: misspelt?)" if close else ""
        raise DataError(
            f"{path}: missing column {column!r}{hint}; expected header {','.join(LABEL_COLUMNS)}"
            if column in TARGETS
            else f"{path}: missing column {column!r}{hint}; columns are {present}"
        )


def check_ids(ids: pd.Series, path: Path | str) -> list[str]:
    """Validate 5-digit string ids with no duplicates; return them as a list."""
    values = ids.astype(object).tolist()
    for row, value in enumerate(values):
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise DataError(
                f"{path}: row {row + 2} has Filename {value!r}, expected a 5-digit id such as "
                "'00042' (was the id column saved as an integer, dropping its leading zeros?)"
            )
    duplicated = pd.Series(values)[pd.Series(values).duplicated()].unique().tolist()
    if duplicated:
        shown = ", ".join(duplicated[:5]) + (" ..." if len(duplicated) > 5 else "")
        raise DataError(f"{path}: duplicate Filename ids: {shown} ({len(duplicated)} in all)")
    return values


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split file (`Filename` + the six targets), validated; one row per clip."""
    path = Path(path)
    frame = _read_csv(path, "label")
    _require_columns(frame, path, LABEL_COLUMNS)
    ids = check_ids(frame[ID_COLUMN], path)
    out = pd.DataFrame({ID_COLUMN: ids})
    for target in TARGETS:
        values = pd.to_numeric(frame[target], errors="coerce")
        bad_text = values.isna() & frame[target].notna()
        if bad_text.any():
            row = int(np.flatnonzero(bad_text.to_numpy())[0])
            raise DataError(
                f"{path}: column {target!r}, id {ids[row]}: {frame[target].iloc[row]!r} "
                "is not a number"
            )
        if values.isna().any():
            missing = [ids[i] for i in np.flatnonzero(values.isna().to_numpy())[:5]]
            raise DataError(f"{path}: column {target!r} has empty/NaN labels for ids {missing}")
        outside = (values < 0) | (values > 1)
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            raise DataError(
                f"{path}: column {target!r}, id {ids[row]}: label {values.iloc[row]} is "
                f"outside [0, 1] ({int(outside.sum())} such labels)"
            )
        out[target] = values.to_numpy(dtype=np.float64)
    return out


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read test ids from a CSV with a `Filename` column or a text file of one id per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"test id list not found: {path}")
    first = path.read_text().splitlines()[:1]
    if first and ID_COLUMN in first[0]:
        frame = _read_csv(path, "test id list")
        return check_ids(frame[ID_COLUMN], path)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return check_ids(pd.Series(lines, dtype=object), path)


def discover_test_ids(test_dir: str | os.PathLike) -> list[str]:
    """Test ids are the file names of the test media (`test_data/raw`, `test_data/audio`)."""
    test_dir = Path(test_dir)
    ids: set[str] = set()
    for sub in TEST_MEDIA_DIRS:
        folder = test_dir / sub
        if folder.is_dir():
            ids.update(p.stem for p in folder.iterdir() if ID_PATTERN.match(p.stem))
    if not ids:
        raise DataError(
            f"no test ids: {test_dir} has no media under {'/ or '.join(TEST_MEDIA_DIRS)}/ "
            "(give a test id list with data.test_list)"
        )
    return sorted(ids)


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """Read `Filename,text`; an empty cell is an empty transcript (no speech)."""
    path = Path(path)
    frame = _read_csv(path, "transcripts")
    _require_columns(frame, path, (ID_COLUMN, "text"))
    ids = check_ids(frame[ID_COLUMN], path)
    texts = frame["text"].astype(object).where(frame["text"].notna(), "")
    return {i: str(t).strip() for i, t in zip(ids, texts, strict=True)}


# ----------------------------------------------------------------------------- features


@dataclass
class LoadedFeature:
    """One clip's feature array (T, D) float32 and what loading had to repair."""

    array: np.ndarray
    nan_values: int = 0
    was_1d: bool = False


def load_feature(path: str | os.PathLike) -> LoadedFeature:
    """Load a per-clip feature file; NaNs are zeroed and counted, a 1-D array is one step."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            with open(path, "rb") as handle:
                raw = pickle.load(handle)
    except Exception as err:  # a corrupt file must name itself, whatever broke
        raise DataError(f"{path}: cannot read feature file ({type(err).__name__}: {err})") from err
    if hasattr(raw, "detach"):  # a pickled torch tensor
        raw = raw.detach().cpu().numpy()
    try:
        array = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{path}: expected a numeric (T, D) array, got {type(raw).__name__}") from err
    was_1d = array.ndim == 1
    if was_1d:
        array = array.reshape(1, -1)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a (T, D) array, got shape {array.shape}")
    finite = np.isfinite(array)
    nan_values = int(array.size - np.count_nonzero(finite))
    if nan_values:
        array = np.where(finite, array, np.float32(0))
    return LoadedFeature(array=array, nan_values=nan_values, was_1d=was_1d)


@dataclass
class FeatureReport:
    """What one pass over a feature folder found: the kit's one summary of the mess."""

    name: str
    width: int = 0
    clips: int = 0
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    nan_files: list[str] = field(default_factory=list)
    nan_values: int = 0
    one_d: list[str] = field(default_factory=list)
    long_clips: dict[str, int] = field(default_factory=dict)
    max_steps: int = 0
    mean_steps: float = 0.0

    def line(self) -> str:
        present = self.clips - len(self.missing) - len(self.empty)
        parts = [f"{self.name}: {present:,}/{self.clips:,} clips, width {self.width}"]
        parts.append(f"steps mean {self.mean_steps:.0f}, max {self.max_steps:,}")
        if self.missing:
            parts.append(f"{len(self.missing):,} missing files (modality missing), e.g. "
                         f"{self.missing[0]}")
        if self.empty:
            parts.append(f"{len(self.empty):,} empty arrays (modality missing)")
        if self.nan_files:
            parts.append(f"{len(self.nan_files):,} arrays with NaNs ({self.nan_values:,} values "
                         f"zeroed), e.g. {self.nan_files[0]}")
        if self.one_d:
            parts.append(f"{len(self.one_d):,} 1-D arrays read as one step, e.g. {self.one_d[0]}")
        if self.long_clips:
            longest = max(self.long_clips, key=self.long_clips.__getitem__)
            parts.append(f"{len(self.long_clips):,} clips of {LONG_CLIP_STEPS:,}+ steps "
                         f"(longest {longest}: {self.long_clips[longest]:,})")
        return "; ".join(parts)


@dataclass
class TranscriptReport:
    clips: int = 0
    missing: int = 0
    empty: int = 0

    def line(self) -> str:
        return (f"transcripts: {self.clips - self.missing - self.empty:,}/{self.clips:,} with "
                f"speech; {self.empty:,} empty, {self.missing:,} without a row")


@dataclass
class DataReport:
    """The one summary of a dataset's mess, printed when the cache is built."""

    features: list[FeatureReport]
    transcripts: TranscriptReport | None = None

    def format(self) -> str:
        lines = ["data report:"] + [f"  {f.line()}" for f in self.features]
        if self.transcripts is not None:
            lines.append(f"  {self.transcripts.line()}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the layout


class ChallengeData:
    """The organisers' layout under one root: labels, ids, transcripts and feature folders.

    Nothing is read in `__init__`; each table is read, validated and kept on first use.
    Feature folders are found at `<root>/<name>` (and `<root>/test_data/<name>` for test
    clips) unless `feature_dirs` maps a name to another folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train_csv: str = "train_split.csv",
        valid_csv: str = "valid_split.csv",
        test_list: str | None = None,
        transcripts: str | None = "transcripts.csv",
        test_labels: str | None = None,
        feature_dirs: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.train_csv = train_csv
        self.valid_csv = valid_csv
        self.test_list = test_list
        self.transcripts_csv = transcripts
        self.test_labels_csv = test_labels
        self.feature_dirs = dict(feature_dirs or {})

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise DataError(
                f"data root {self.root} does not exist (set data.root in the config, or "
                "generate data there with `taemi synth`)"
            )

    @cached_property
    def train(self) -> pd.DataFrame:
        self._check_root()
        return read_labels(self._path(self.train_csv))

    @cached_property
    def valid(self) -> pd.DataFrame:
        self._check_root()
        return read_labels(self._path(self.valid_csv))

    @cached_property
    def labels(self) -> pd.DataFrame:
        """Train and validation labels in one table with a `split` column."""
        train, valid = self.train.assign(split="train"), self.valid.assign(split="valid")
        both = set(train[ID_COLUMN]) & set(valid[ID_COLUMN])
        if both:
            raise DataError(
                f"ids in both {self.train_csv} and {self.valid_csv}: {sorted(both)[:5]}"
            )
        return pd.concat([train, valid], ignore_index=True)

    @cached_property
    def test_ids(self) -> list[str]:
        self._check_root()
        if self.test_list:
            ids = read_id_list(self._path(self.test_list))
        else:
            ids = discover_test_ids(self.root / "test_data")
        labelled = set(self.labels[ID_COLUMN]).intersection(ids)
        if labelled:
            raise DataError(f"test ids that also have labels: {sorted(labelled)[:5]}")
        return ids

    @cached_property
    def all_ids(self) -> list[str]:
        """Every clip the kit knows: labelled ones, then test ones, in id order."""
        return sorted([*self.labels[ID_COLUMN], *self.test_ids])

    @cached_property
    def transcripts(self) -> dict[str, str]:
        """Transcript per id; clips without a row get an empty transcript."""
        if not self.transcripts_csv or not self._path(self.transcripts_csv).is_file():
            return {}
        return read_transcripts(self._path(self.transcripts_csv))

    def transcript_report(self) -> TranscriptReport:
        texts = self.transcripts
        report = TranscriptReport(clips=len(self.all_ids))
        for clip in self.all_ids:
            if clip not in texts:
                report.missing += 1
            elif not texts[clip]:
                report.empty += 1
        return report

    @cached_property
    def test_labels(self) -> pd.DataFrame | None:
        """Held-out test labels, when the config names them (generated data has them)."""
        if not self.test_labels_csv:
            return None
        labels = read_labels(self._path(self.test_labels_csv))
        unknown = set(labels[ID_COLUMN]) - set(self.test_ids)
        if unknown:
            raise DataError(f"{self.test_labels_csv}: ids that are not test ids: "
                            f"{sorted(unknown)[:5]}")
        return labels

    def feature_folders(self, name: str) -> list[Path]:
        """Where a feature's files may lie: its folder, and its test_data/ twin."""
        if name in self.feature_dirs:
            return [self._path(self.feature_dirs[name])]
        return [self.root / name, self.root / "test_data" / name]

    def feature_files(self, name: str) -> dict[str, Path]:
        """Map id -> feature file for every known id that has one."""
        self._check_root()
        folders = [f for f in self.feature_folders(name) if f.is_dir()]
        if not folders:
            raise DataError(
                f"feature folder {name!r} not found: looked in "
                f"{', '.join(str(f) for f in self.feature_folders(name))}"
            )
        wanted = set(self.all_ids)
        found: dict[str, Path] = {}
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    stem, suffix = os.path.splitext(entry.name)
                    if suffix in FEATURE_SUFFIXES and stem in wanted and stem not in found:
                        found[stem] = Path(entry.path)
        return found


def labels_matrix(frame: pd.DataFrame, ids: Iterable[str]) -> np.ndarray:
    """The (N, 6) label matrix of `ids`, in that order; an unknown id is an error."""
    indexed = frame.set_index(ID_COLUMN)
    ids = list(ids)
    unknown = [i for i in ids if i not in indexed.index]
    if unknown:
        raise DataError(f"no labels for ids {unknown[:5]} ({len(unknown)} in all)")
    return indexed.loc[ids, list(TARGETS)].to_numpy(dtype=np.float64)
