"""What every extractor shares: finding clips, skipping done ones, recording failures,
writing one feature file atomically, and locating models (local first, the Hub only when
allowed).

Media in the organisers' layout:

    <root>/raw/{id}.mp4            videos (any common video extension)
    <root>/audio/{id}.mp3          audio (any common audio extension)
    <root>/test_data/raw/, <root>/test_data/audio/   the same for test clips

Features go to `<root>/<feature>/{id}.pkl` (test clips too: the data layer looks there
first), each a pickled float32 array of shape (T, D). A clip that cannot be read gets no
file (its modality is missing) and a row in `<root>/<feature>/_failures.csv`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pandas as pd

from taemi.artifacts import atomic_path, write_csv
from taemi.data import ID_COLUMN, ID_PATTERN, DataError, check_ids, read_id_list

T = TypeVar("T")

VIDEO_DIRS = ("raw", "test_data/raw")
AUDIO_DIRS = ("audio", "test_data/audio")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv")
AUDIO_SUFFIXES = (".mp3", ".wav", ".m4a", ".aac", ".flac", ".ogg", ".opus")
FAILURES_FILE = "_failures.csv"


class ExtractError(DataError):
    """Arguments or inputs that an extraction run cannot use; the message says which."""


class ModelUnavailable(FileNotFoundError):
    """A model that is neither a local path nor obtainable from the Hub; says what to do."""


# ----------------------------------------------------------------------------- clips


def find_media(root: str | os.PathLike, kind: Literal["video", "audio"]) -> dict[str, Path]:
    """Map clip id -> media file. Audio falls back to a video's own audio track.

    Files whose stem is not a 5-digit id are ignored; when an id has several files the
    train folder wins over test_data/ and the suffix order above breaks ties.
    """
    root = Path(root)
    if not root.is_dir():
        raise ExtractError(f"data root {root} does not exist")
    dirs, suffixes = (VIDEO_DIRS, VIDEO_SUFFIXES) if kind == "video" else (AUDIO_DIRS,
                                                                          AUDIO_SUFFIXES)
    found = _scan(root, dirs, suffixes)
    if kind == "audio":
        for clip, path in _scan(root, VIDEO_DIRS, VIDEO_SUFFIXES).items():
            found.setdefault(clip, path)
    if not found:
        looked = dirs + (VIDEO_DIRS if kind == "audio" else ())
        raise ExtractError(
            f"no {kind} clips under {root}: looked for {{id}}{suffixes[0]} (5-digit ids) in "
            + ", ".join(f"{d}/" for d in looked))
    return dict(sorted(found.items()))


def _scan(root: Path, dirs: Iterable[str], suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(suffixes)}
    for sub in dirs:
        folder = root / sub
        if not folder.is_dir():
            continue
        here: dict[str, Path] = {}
        for path in folder.iterdir():
            suffix = path.suffix.lower()
            if suffix in rank and ID_PATTERN.match(path.stem) and path.is_file():
                best = here.get(path.stem)
                if best is None or rank[suffix] < rank[best.suffix.lower()]:
                    here[path.stem] = path
        for clip, path in here.items():
            found.setdefault(clip, path)
    return found


def parse_ids(value: str | None) -> list[str] | None:
    """`--ids`: a file (CSV with Filename, or one id per line) or comma-separated ids."""
    if not value:
        return None
    if Path(value).is_file():
        return read_id_list(value)
    return check_ids(pd.Series([v.strip() for v in value.split(",") if v.strip()],
                               dtype=object), "--ids")


def select(available: dict[str, T], wanted: list[str] | None, what: str) -> dict[str, T]:
    """Restrict to `wanted` ids; asking for an id that has no input is an error."""
    if wanted is None:
        return available
    absent = [i for i in wanted if i not in available]
    if absent:
        raise ExtractError(f"--ids asks for {len(absent)} clips with no {what}, e.g. "
                           f"{', '.join(absent[:5])}")
    return {i: available[i] for i in sorted(set(wanted))}


def feature_path(folder: Path, clip: str) -> Path:
    return folder / f"{clip}.pkl"


def pending(ids: Iterable[str], folders: Iterable[Path], force: bool) -> list[str]:
    """Ids still to do: those without a feature file in every output folder (all with force)."""
    folders = list(folders)
    if force:
        return list(ids)
    return [i for i in ids if not all(feature_path(f, i).is_file() for f in folders)]


def write_feature(folder: Path, clip: str, array: np.ndarray) -> Path:
    """Write one clip's (T, D) float32 array as `<folder>/{id}.pkl`, atomically."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{clip}: expected a (T, D) feature array with T > 0, "
                         f"got shape {array.shape}")
    path = feature_path(folder, clip)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(array, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


class FailureLog:
    """`_failures.csv` (Filename,reason) of one output: clips that could not be read.

    Rows from earlier runs are kept until that clip succeeds, so a run over a subset of
    ids does not forget the others; `save` writes atomically and drops an empty log.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, str] = {}
        if path.is_file():
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            if list(frame.columns[:2]) == [ID_COLUMN, "reason"]:
                self.rows = dict(zip(frame[ID_COLUMN], frame["reason"], strict=True))

    def record(self, clip: str, reason: str) -> None:
        self.rows[clip] = " ".join(str(reason).split())  # one line per clip

    def clear(self, clip: str) -> None:
        self.rows.pop(clip, None)

    def save(self) -> None:
        if self.rows:
            write_csv(self.path, pd.DataFrame(
                {ID_COLUMN: list(self.rows), "reason": list(self.rows.values())}
            ).sort_values(ID_COLUMN))
        elif self.path.is_file():
            self.path.unlink()


@dataclass
class Summary:
    """What one extraction run did; `rate` is clips per second of processing."""

    what: str
    output: Path
    clips: int = 0
    skipped: int = 0
    written: int = 0
    failed: int = 0
    empty: int = 0
    load_seconds: float = 0.0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    def fail(self, clip: str, reason: str, log: FailureLog) -> None:
        """Count a clip that could not be read, and record why in the folder's log."""
        log.record(clip, reason)
        self.failures[clip] = reason
        self.failed += 1

    @property
    def rate(self) -> float:
        done = self.written + self.failed + self.empty
        return done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        parts = [f"{self.what} -> {self.output}: {self.written:,} written",
                 f"{self.skipped:,} already done"]
        if self.empty:
            parts.append(f"{self.empty:,} without speech")
        if self.failed:
            first = next(iter(self.failures.items()), None)
            parts.append(f"{self.failed:,} failed (recorded in {FAILURES_FILE}"
                         + (f"; e.g. {first[0]}: {first[1]}" if first else "") + ")")
        parts.append(f"{self.rate:.2f} clips/s")
        return "; ".join(parts)


class Checkpoint:
    """Calls `save` every `every` clips or `seconds`, so a crash loses little."""

    def __init__(self, save: Callable[[], None], every: int = 50, seconds: float = 60.0):
        self.save, self.every, self.seconds = save, max(1, every), seconds
        self.count, self.last = 0, time.monotonic()

    def tick(self) -> None:
        self.count += 1
        if self.count % self.every == 0 or time.monotonic() - self.last > self.seconds:
            self.save()
            self.last = time.monotonic()


def default_feature_name(model: str) -> str:
    """A folder name for a model: a local path's last part, or the model name made safe."""
    path = Path(model).expanduser()
    if path.exists():
        name = path.stem if path.is_file() else path.name
    else:
        name = model.rsplit("/", 1)[-1].removeprefix("hf-hub:")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "feature"


# ----------------------------------------------------------------------------- models

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now rather than at import time."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: an existing local path, or a name to look up on the Hub."""

    spec: str
    location: str
    local: bool

    @property
    def local_files_only(self) -> bool:
        return self.local or hub_offline()


def resolve_model(spec: str, what: str) -> ModelRef:
    """A local file/folder if `spec` exists, else a Hub name; a missing path is an error."""
    path = Path(spec).expanduser()
    if path.exists():
        return ModelRef(spec, str(path.resolve()), True)
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        raise ModelUnavailable(f"{what} {spec!r}: no such file or folder")
    return ModelRef(spec, spec, False)


@contextlib.contextmanager
def hub_offline_mode(offline: bool) -> Iterator[None]:
    """Make huggingface_hub honour HF_HUB_OFFLINE set after it was imported.

    huggingface_hub reads the variable once, at import; libraries with no
    `local_files_only` argument (timm) are kept off the network this way.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_model(ref: ModelRef, what: str, loader: Callable[[], T]) -> T:
    """Run `loader`; any failure becomes a `ModelUnavailable` that says what to do."""
    try:
        with hub_offline_mode(ref.local_files_only and not ref.local):
            return loader()
    except ModelUnavailable:
        raise
    except Exception as err:  # every loader fails differently; the cause stays chained
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        if ref.local:
            message = f"{ref.location}: cannot load it as a {what} ({reason})"
        elif hub_offline():
            from huggingface_hub import constants

            how = (f"`hf download {ref.spec}`" if "/" in ref.spec
                   else "run this once with HF_HUB_OFFLINE unset")
            message = (f"{what} {ref.spec!r} is not a local path and is not in the "
                       f"Hugging Face cache ({constants.HF_HUB_CACHE}); HF_HUB_OFFLINE=1 "
                       f"forbids downloading it. Fetch it where there is a network ({how}) "
                       f"or pass a local path ({reason})")
        else:
            message = (f"{what} {ref.spec!r} is not a local path and could not be "
                       f"loaded from the Hugging Face Hub ({reason}); check the name and the "
                       "network, or pass a local path")
        raise ModelUnavailable(message) from err


def resolve_device(name: str = "auto") -> str:
    """`auto` is CUDA when there is one; asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractError(f"--device {name}: no CUDA device is available here")
    return name


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 (fp16 where bf16 is unsupported) on a GPU; full precision on the CPU."""
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def quiet_model_loading() -> None:
    """transformers 5 draws a bar per checkpoint load; the kit's --quiet silences it too."""
    from taemi.progress import is_quiet

    if is_quiet():
        import transformers

        transformers.utils.logging.disable_progress_bar()


# ----------------------------------------------------------------------------- prefetch

_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, up to `depth` items ahead.

    Decoding (PyAV releases the GIL) then overlaps with the model. An exception in the
    producer is raised here; leaving the loop early stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put((_END, err))
            return
        put((_END, None))

    thread = threading.Thread(target=work, name="taemi-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = buffer.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
