"""The waveform cache: each clip's audio decoded once, for training encoders end to end.

Decoding every clip with PyAV in every training batch, a whole 20-minute file for the
12 s a crop reads, left a GPU waiting for the CPU. One pass here turns the audio files into

    <cache>/waves-<seconds>s-<key>/
        samples.npy    (S,) int16: each clip's first `max_samples` at 16 kHz mono, end to end
        offsets.npy    (N + 1,) int64: clip i is samples[offsets[i]:offsets[i + 1]]
        meta.json      ids (the pack's row order), sample rate, max samples, the key, counts
        _failures.csv  clips whose audio could not be read: Filename, reason

which training crops and prediction chunks read through a memory map. The decoder stops
at `max_samples` (`read_audio`), so a long clip costs what the model reads of it. A clip
without a file, without an audio track or whose file cannot be decoded has no samples:
its audio is missing (the fusion model's missing token), as `taemi extract audio` leaves
it, and the unreadable ones are named in `_failures.csv` and in the data report.

Built by the packed cache's rules: keyed by its clip ids and their audio files' content
(quick-checked by size and mtime, `taemi.identity`), the samples kept and
`WAVES_VERSION`; decoded in shards of `SHARD` clips, each written atomically into
`.waves-<key>.partial/`, so a killed build resumes at the shards it had not finished; the
folder appears whole (`atomic_dir`). Processes that find it missing at once take turns
(a file lock): one builds, the others find it built.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from taemi.artifacts import (
    atomic_dir,
    atomic_path,
    read_json,
    remove_stale_temporaries,
    stable_hash,
    write_json,
)
from taemi.data import ChallengeData
from taemi.extract.common import FAILURES_FILE, FailureLog, find_media
from taemi.extract.media import SAMPLE_RATE, MediaError, NoAudioTrack, read_audio
from taemi.identity import digest_files
from taemi.progress import progress

WAVES_VERSION = 1  # 1: int16, the first max_samples of the first audio track
SHARD = 256
SCALE = 32767.0  # float32 in [-1, 1] <-> int16
NO_FILE = "no audio or video file"


def samples_kept(max_seconds: float, max_chunks: int) -> int:
    """What end-to-end training and prediction read of a clip at most: its first
    `max_chunks` windows of `max_seconds`."""
    return int(max_chunks * max_seconds * SAMPLE_RATE)


def to_int16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(wave * SCALE), -SCALE, SCALE).astype(np.int16)


def to_float(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, np.float32) / np.float32(SCALE)


def decode_clip(path: Path | None, max_samples: int) -> tuple[np.ndarray, str | None, bool]:
    """A clip's first `max_samples` as int16, why it has none (None when it has), and
    whether that is a fault (an unreadable file, not a missing file or a silent video)."""
    empty = np.zeros(0, np.int16)
    if path is None:
        return empty, NO_FILE, False
    try:
        return to_int16(read_audio(path, max_samples=max_samples)), None, False
    except NoAudioTrack as err:
        return empty, str(err), False
    except MediaError as err:
        return empty, str(err), True


@dataclass
class WaveReport:
    """What the cache found, for the data report."""

    clips: int
    decoded: int
    no_audio: int  # no file, or a video without an audio track
    failures: dict[str, str]
    folder: Path

    def line(self) -> str:
        text = (f"audio waveforms: {self.decoded:,}/{self.clips:,} clips decoded; "
                f"{self.no_audio:,} without audio (modality missing)")
        if self.failures:
            clip, reason = next(iter(sorted(self.failures.items())))
            text += (f"; {len(self.failures):,} unreadable (modality missing; listed in "
                     f"{self.folder / FAILURES_FILE}), e.g. {clip}: {reason}")
        return text


class WaveCache:
    """Read side of one waveform cache folder; the samples are memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        self.ids: list[str] = self.meta["ids"]
        self.offsets = np.load(self.folder / "offsets.npy")
        self.key: str = self.meta["key"]

    @cached_property
    def samples(self) -> np.ndarray:
        return np.load(self.folder / "samples.npy", mmap_mode="r")

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {clip: row for row, clip in enumerate(self.ids)}

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def read(self, row: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples [start, start + length) of clip `row` as float32 (all from `start`)."""
        return to_float(self.read_int16(row, start, length))

    def read_int16(self, row: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """The same samples as stored: half the bytes to move to a GPU, where
        `taemi.endtoend` turns them into floats (`to_float`'s scale)."""
        begin, end = int(self.offsets[row]), int(self.offsets[row + 1])
        stop = end if length is None else min(end, begin + start + length)
        return np.array(self.samples[begin + start:stop])

    @property
    def report(self) -> WaveReport:
        failures = self.meta["failures"]
        return WaveReport(len(self.ids), int((self.lengths > 0).sum()),
                          len(self.ids) - int((self.lengths > 0).sum()) - len(failures),
                          failures, self.folder)

    def __getstate__(self) -> dict:  # a DataLoader worker maps the file again
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])


def waves_key(ids: list[str], digests: dict[str, str], max_samples: int) -> str:
    """The cache's key: its rows (clip ids) and each one's audio by content, what is kept."""
    return stable_hash({"ids": ids, "audio": [digests.get(c) for c in ids],
                        "max_samples": max_samples, "rate": SAMPLE_RATE,
                        "v": WAVES_VERSION}, 16)


def audio_digests(data: ChallengeData, cache_dir: str | Path) -> tuple[dict[str, Path],
                                                                      dict[str, str]]:
    """The audio (or video) file of each clip, and their content digests (quick-checked
    against the manifest the job keys use, `taemi.endtoend.media_digest`)."""
    media = find_media(data.root, "audio")
    return media, digest_files(media, Path(cache_dir) / "digests-audio.json")


def ensure_waves(data: ChallengeData, max_samples: int, cache_dir: str | Path,
                 workers: int = 1) -> WaveCache:
    """The current waveform cache of the data's audio, built (or finished) when missing."""
    cache_dir = Path(cache_dir)
    media, digests = audio_digests(data, cache_dir)
    ids = data.all_ids
    key = waves_key(ids, digests, max_samples)
    folder = cache_dir / f"waves-{max_samples / SAMPLE_RATE:g}s-{key[:12]}"
    if (folder / "meta.json").is_file():
        return WaveCache(folder)
    lock = cache_dir / f".waves-{key[:12]}.lock"
    with _building(lock):  # one builder; others wait
        if not (folder / "meta.json").is_file():
            _build(data, media, ids, key, max_samples, folder, workers)
    # by whoever leaves, builder or not: one that opened the lock after the builder removed
    # it made it again
    lock.unlink(missing_ok=True)
    return WaveCache(folder)


@contextmanager
def _building(lock: Path) -> Iterator[None]:
    """An exclusive lock on `lock` while held: of the processes that find the cache
    missing (two commands, jobs started at once), one builds it and the others then find
    it built."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(data: ChallengeData, media: dict[str, Path], ids: list[str], key: str,
           max_samples: int, folder: Path, workers: int) -> None:
    cache_dir = folder.parent
    remove_stale_temporaries(cache_dir, "waves-*")  # what a killed assembly left
    partial = cache_dir / f".waves-{key[:12]}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    shards = [(partial / f"shard-{i // SHARD:05d}.npz",
               [(c, media.get(c)) for c in ids[i:i + SHARD]], max_samples)
              for i in range(0, len(ids), SHARD)]
    todo = [s for s in shards if not s[0].is_file()]  # finished shards of a killed build stay
    bar = progress(total=len(ids), initial=len(ids) - sum(len(s[1]) for s in todo),
                   desc="cache audio waveforms", unit="clip")
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo))) as pool:
            for done in pool.map(_decode_shard, todo):
                bar.update(done)
    else:
        for shard in todo:
            bar.update(_decode_shard(shard))
    bar.close()
    source = str(Path(data.root).resolve())
    _assemble(folder, [s[0] for s in shards], ids, key, max_samples, source)
    shutil.rmtree(partial, ignore_errors=True)
    for stale in cache_dir.glob(f"waves-{max_samples / SAMPLE_RATE:g}s-*"):
        if stale != folder and stale.is_dir() and _source(stale) == source:
            shutil.rmtree(stale, ignore_errors=True)  # an older state of the same files


def _source(folder: Path) -> str | None:
    try:
        return read_json(folder / "meta.json").get("source")
    except (OSError, ValueError):
        return None


def _decode_shard(shard: tuple[Path, list[tuple[str, Path | None]], int]) -> int:
    path, clips, max_samples = shard
    waves, reasons, faults = [], [], []
    for _, file in clips:
        wave, reason, fault = decode_clip(file, max_samples)
        waves.append(wave)
        reasons.append(reason or "")
        faults.append(fault)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, samples=np.concatenate(waves) if waves else np.zeros(0, np.int16),
                 lengths=np.array([len(w) for w in waves], np.int64),
                 ids=np.array([c for c, _ in clips]), reasons=np.array(reasons),
                 faults=np.array(faults))
    return len(clips)


def _assemble(folder: Path, shards: list[Path], ids: list[str], key: str,
              max_samples: int, source: str) -> None:
    lengths, failures, held = [], {}, []
    for shard in shards:
        with np.load(shard) as part:
            held += part["ids"].tolist()
            lengths.append(part["lengths"])
            failures.update({c: " ".join(r.split()) for c, r, f in zip(
                part["ids"].tolist(), part["reasons"].tolist(), part["faults"].tolist(),
                strict=True) if f})
    if held != ids:  # shards of other rows cannot be (the key holds the ids): never mix
        raise RuntimeError(f"waveform cache {folder}: its shards hold other clips than "
                           "its ids; delete the .waves-*.partial folder beside it")
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_dir(folder) as tmp:
        samples = np.lib.format.open_memmap(tmp / "samples.npy", mode="w+", dtype=np.int16,
                                            shape=(int(offsets[-1]),))
        at = 0
        for shard in shards:
            with np.load(shard) as part:
                chunk = part["samples"]
                samples[at:at + len(chunk)] = chunk
                at += len(chunk)
        samples.flush()
        del samples
        np.save(tmp / "offsets.npy", offsets)
        log = FailureLog(tmp / FAILURES_FILE)
        for clip, reason in failures.items():
            log.record(clip, reason)
        log.save()
        write_json(tmp / "meta.json", {"ids": ids, "key": key, "max_samples": max_samples,
                                       "rate": SAMPLE_RATE, "version": WAVES_VERSION,
                                       "source": source,
                                       "failures": dict(sorted(failures.items()))})
