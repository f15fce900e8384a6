"""The challenge's data, exactly as the organisers lay it out.

    <root>/train_split.csv        Filename,Admiration,...,Joy   (ids 00000-08071)
    <root>/valid_split.csv        same header                   (ids 08072-12659)
    <root>/test_data/raw|audio/   test media; their file names are the test ids
    <root>/<feature>/{id}.pkl     one pickled (T, D) array per clip: vit, wav2vec2, text, ...
    <root>/transcripts.csv        Filename,text (ours: Whisper is run by every team)

Filename is a 5-digit string everywhere. Real feature files are messy (NaNs, 1-D arrays,
empty arrays, missing files, 20-minute clips): `load_feature` takes all of it and says what
it did, and bad tables raise `DataError` with the file, the id or the column and what was
expected. Feature files come from third parties: a `.pkl` is read by an unpickler that
builds numpy arrays and nothing else, so no data file can run code.
"""

from __future__ import annotations

import difflib
import io
import os
import pickle
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the config sits above the data layer: a type, never an import
    from taemi.config import Config

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
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: packs are float16


class DataError(ValueError):
    """Input data that is not what the challenge's layout promises; the message says where."""


class DataWarning(UserWarning):
    """Input data the kit can go on with, but probably not what the user meant."""


def warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


# ----------------------------------------------------------------------------- tables


def _read_csv(path: Path, what: str, text: bool = False) -> pd.DataFrame:
    """Read a table with string ids; `text=True` keeps every cell as written ("NA", "null"
    and "None" are words, an empty cell is an empty string)."""
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        if text:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_csv(path, dtype={ID_COLUMN: str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split())  # one line, whatever the parser said
        raise DataError(f"{path}: not a readable CSV ({reason})") from err


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
    if frame.empty:
        warn(f"{path}: no rows, only a header: this split has no clips")
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
    """Read `Filename,text`; an empty cell is an empty transcript (no speech), and text such
    as "NA", "null" or "None" is what was said, not a missing value."""
    path = Path(path)
    frame = _read_csv(path, "transcripts", text=True)
    _require_columns(frame, path, (ID_COLUMN, "text"))
    ids = check_ids(frame[ID_COLUMN], path)
    return {i: str(t).strip() for i, t in zip(ids, frame["text"], strict=True)}


# ----------------------------------------------------------------------------- features


# What a numpy array's pickle needs, under numpy 2 (numpy._core) and numpy 1 (numpy.core)
# names; protocol 2 pickles bytes through _codecs.encode. Nothing else may be loaded.
_NUMPY_GLOBALS = frozenset({"_reconstruct", "scalar", "_frombuffer", "ndarray", "dtype"})
_SAFE_GLOBALS: dict[str, frozenset[str]] = {
    **{module: _NUMPY_GLOBALS for module in (
        "numpy", "numpy._core.multiarray", "numpy.core.multiarray",
        "numpy._core.numeric", "numpy.core.numeric")},
    "builtins": frozenset({"list", "tuple", "dict", "set", "frozenset", "bytearray"}),
    "_codecs": frozenset({"encode"}),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    def __init__(self, handle: io.BufferedReader, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if name in _SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise DataError(
            f"{self.path}: refused to unpickle {module}.{name}: expected a pickled numpy "
            "array (feature files are third-party files, so they may hold numpy arrays only)"
        )


def load_pickled_array(path: str | os.PathLike) -> object:
    """Unpickle a feature file with `_ArrayUnpickler`: numpy arrays load, code never runs."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _ArrayUnpickler(handle, path).load()


@dataclass
class LoadedFeature:
    """One clip's feature array (T, D) float32 and what loading had to repair.

    Every value of `array` is finite and within float16's range. A row with no usable
    value (all NaN, infinite or beyond the range) is all zeros and False in `rows_ok`: the
    pack marks its step invalid. A bad value in an otherwise good row is zeroed and counted.
    An empty array has T = 0; `all_nan` says that no row is usable (no face found): either
    way the modality is missing for this clip.
    """

    array: np.ndarray
    nan_values: int = 0  # NaN values, zeroed (in good rows) or in invalid rows
    range_values: int = 0  # infinite values or |x| > max_abs, handled like NaN
    bad_rows: int = 0  # rows with no usable value
    rows_ok: np.ndarray | None = None  # (T,) bool; None when every row is usable
    was_1d: bool = False
    all_nan: bool = False

    @property
    def empty(self) -> bool:
        return self.array.shape[0] == 0


def load_feature(path: str | os.PathLike, max_abs: float = FLOAT16_MAX) -> LoadedFeature:
    """Load a per-clip feature file: a 1-D array is one step, an empty one has no steps;
    NaN, infinite and out-of-range (|x| > max_abs) values are zeroed and counted, and rows
    made only of them are flagged in `rows_ok`."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            raw = load_pickled_array(path)
    except DataError:
        raise
    except Exception as err:  # a corrupt file must name itself, whatever broke
        raise DataError(f"{path}: cannot read feature file ({type(err).__name__}: {err})") from err
    try:
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf: handled below
            array = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        dtype = f" of dtype {raw.dtype}" if hasattr(raw, "dtype") else ""
        raise DataError(f"{path}: expected a numeric (T, D) array, got "
                        f"{type(raw).__name__}{dtype}") from err
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.size == 0 and array.ndim <= 2:  # no steps: the modality is missing
        width = array.shape[1] if array.ndim == 2 else 0
        return LoadedFeature(array=np.zeros((0, width), np.float32))
    was_1d = array.ndim == 1
    if was_1d:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise DataError(f"{path}: expected a (T, D) array, got shape {array.shape}")
    with np.errstate(invalid="ignore"):
        good = np.abs(array) <= max_abs  # False for NaN and inf too
    if good.all():
        return LoadedFeature(array=array, was_1d=was_1d)
    nan = np.isnan(array)
    nan_values = int(np.count_nonzero(nan))
    range_values = int(array.size - np.count_nonzero(good)) - nan_values
    rows_ok = good.any(axis=1)
    array = np.where(good, array, np.float32(0))
    return LoadedFeature(
        array=array, nan_values=nan_values, range_values=range_values,
        bad_rows=int(rows_ok.size - np.count_nonzero(rows_ok)), rows_ok=rows_ok,
        was_1d=was_1d, all_nan=not rows_ok.any())


@dataclass
class FeatureReport:
    """What one pass over a feature folder found: the kit's one summary of the mess."""

    name: str
    width: int = 0
    clips: int = 0
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    all_nan: list[str] = field(default_factory=list)  # no usable value: modality missing
    nan_files: list[str] = field(default_factory=list)
    nan_values: int = 0
    range_files: list[str] = field(default_factory=list)
    range_values: int = 0
    invalid_steps: int = 0  # rows with no usable value, marked invalid (not in all_nan)
    one_d: list[str] = field(default_factory=list)
    long_clips: dict[str, int] = field(default_factory=dict)
    max_steps: int = 0
    mean_steps: float = 0.0

    def line(self) -> str:
        present = self.clips - len(self.missing) - len(self.empty) - len(self.all_nan)
        parts = [f"{self.name}: {present:,}/{self.clips:,} clips, width {self.width}"]
        parts.append(f"steps mean {self.mean_steps:.0f}, max {self.max_steps:,}")
        if self.missing:
            parts.append(f"{len(self.missing):,} missing files (modality missing), e.g. "
                         f"{self.missing[0]}")
        if self.empty:
            parts.append(f"{len(self.empty):,} empty arrays (modality missing), e.g. "
                         f"{self.empty[0]}")
        if self.all_nan:
            parts.append(f"{len(self.all_nan):,} arrays without a finite value (all NaN: no "
                         f"face found?; modality missing), e.g. {self.all_nan[0]}")
        if self.nan_files:
            parts.append(f"{len(self.nan_files):,} arrays with NaNs ({self.nan_values:,} "
                         f"values), e.g. {self.nan_files[0]}")
        if self.range_files:
            parts.append(f"{len(self.range_files):,} arrays with {self.range_values:,} values "
                         f"infinite or beyond float16's range (|x| > {FLOAT16_MAX:.0f}), "
                         f"treated as NaN, first {self.range_files[0]}")
        if self.nan_files or self.range_files:
            parts.append(f"such values zeroed, {self.invalid_steps:,} steps made only of them "
                         "marked invalid")
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
    waves: list = field(default_factory=list)  # `taemi.waves.WaveReport`s (end to end)

    def format(self) -> str:
        lines = ["data report:"] + [f"  {f.line()}" for f in self.features]
        if self.transcripts is not None:
            lines.append(f"  {self.transcripts.line()}")
        lines += [f"  {w.line()}" for w in self.waves]
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
        """Transcript per id; clips without a row get an empty transcript. A transcripts
        file that does not exist is warned about (once) and read as no transcripts."""
        if not self.transcripts_csv:
            return {}
        path = self._path(self.transcripts_csv)
        if not path.is_file():
            warn(f"transcripts file not found: {path}; going on without transcripts (every "
                 "clip's text is empty)")
            return {}
        return read_transcripts(path)

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
            here: dict[str, Path] = {}
            with os.scandir(folder) as entries:
                for entry in entries:
                    stem, suffix = os.path.splitext(entry.name)
                    if suffix not in FEATURE_SUFFIXES or stem not in wanted:
                        continue
                    if stem in here:
                        first, second = sorted([here[stem], Path(entry.path)])
                        raise DataError(
                            f"{first} and {second}: two feature files for id {stem}, expected "
                            "one (remove or rename one of them)")
                    here[stem] = Path(entry.path)
            for stem, path in here.items():
                found.setdefault(stem, path)
        return found


def labels_matrix(frame: pd.DataFrame, ids: Iterable[str]) -> np.ndarray:
    """The (N, 6) label matrix of `ids`, in that order; an unknown id is an error."""
    indexed = frame.set_index(ID_COLUMN)
    ids = list(ids)
    unknown = [i for i in ids if i not in indexed.index]
    if unknown:
        raise DataError(f"no labels for ids {unknown[:5]} ({len(unknown)} in all)")
    return indexed.loc[ids, list(TARGETS)].to_numpy(dtype=np.float64)


def open_data(cfg: Config) -> ChallengeData:
    """The dataset a run config's `data` section names (nothing is read yet)."""
    d = cfg.data
    return ChallengeData(d.root, d.train_csv, d.valid_csv, d.test_list, d.transcripts,
                         d.test_labels, d.feature_dirs)
