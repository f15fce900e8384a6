"""The packed cache: every clip's features as fixed-length, memory-mapped float16 arrays.

Reading and pooling thousands of `{id}.pkl` files at every training step is what makes
public EMI code slow. One pass here turns a feature folder into

    <cache>/<feature>-k<K>-<source>-<hash>/
        x.npy        (N, K, D) float16, rows in id order
        valid.npy    (N, K) bool: which of the K steps hold data
        length.npy   (N,) int: the clip's original step count
        missing.npy  (N,) bool: no file, or an empty one
        meta.json    ids, width, settings and the loading report

A clip of T >= K steps is adaptive-average-pooled to K steps (torch's bins); a shorter
clip keeps its T steps and the rest are padding, marked invalid. The hash covers the
settings and every input file's size and modification time: a change rebuilds the cache,
nothing else does.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import numpy as np

from taemi.artifacts import atomic_dir, read_json, stable_hash, write_json
from taemi.data import LONG_CLIP_STEPS, ChallengeData, DataError, FeatureReport, load_feature
from taemi.progress import progress

CACHE_VERSION = 1
CHUNK = 64


def pool_steps(array: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
    """Adaptive-average-pool (T, D) to (K, D), or pad when T < K; return it and valid steps."""
    length, width = array.shape
    out = np.zeros((steps, width), np.float32)
    if length <= steps:
        out[:length] = array
        return out, length
    sums = np.zeros((length + 1, width), np.float64)
    np.cumsum(array, axis=0, dtype=np.float64, out=sums[1:])
    i = np.arange(steps)
    start = (i * length) // steps
    end = ((i + 1) * length + steps - 1) // steps
    out[:] = (sums[end] - sums[start]) / (end - start)[:, None]
    return out, steps


class PackedFeature:
    """Read side of one packed feature folder; arrays are memory-mapped, not loaded."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        self.name: str = self.meta["feature"]
        self.steps: int = self.meta["steps"]
        self.width: int = self.meta["width"]
        self.ids: list[str] = self.meta["ids"]
        self.x = np.load(self.folder / "x.npy", mmap_mode="r")
        self.valid = np.load(self.folder / "valid.npy", mmap_mode="r")
        self.length = np.load(self.folder / "length.npy")
        self.missing = np.load(self.folder / "missing.npy")

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole pack (x, valid) in memory, read plainly rather than memory-mapped."""
        return np.load(self.folder / "x.npy"), np.load(self.folder / "valid.npy")

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {clip: row for row, clip in enumerate(self.ids)}

    def rows(self, ids: list[str]) -> np.ndarray:
        try:
            return np.fromiter((self.row_of[i] for i in ids), np.int64, count=len(ids))
        except KeyError as err:
            raise DataError(f"id {err.args[0]} is not in the {self.name} cache") from None

    @property
    def report(self) -> FeatureReport:
        return FeatureReport(**self.meta["report"])


def _fingerprint(name: str, steps: int, ids: list[str], files: dict[str, Path]) -> str:
    entries = []
    for clip in ids:
        path = files.get(clip)
        if path is None:
            entries.append((clip, None))
        else:
            stat = path.stat()
            entries.append((clip, str(path), stat.st_size, stat.st_mtime_ns))
    return stable_hash({"v": CACHE_VERSION, "feature": name, "steps": steps, "files": entries})


def _probe_width(files: dict[str, Path]) -> int:
    """The folder's width, by majority over a spread-out sample of its files."""
    paths = list(files.values())
    sample = paths[:: max(1, len(paths) // 15)][:16]
    widths = Counter(load_feature(p).array.shape[1] for p in sample)
    return widths.most_common(1)[0][0]


def _pack_chunk(args: tuple) -> list[tuple]:
    """Worker: load, repair and pool a run of clips straight into the memory maps."""
    folder, steps, width, chunk = args
    x = np.load(folder / "x.npy", mmap_mode="r+")
    valid = np.load(folder / "valid.npy", mmap_mode="r+")
    stats = []
    for row, clip, path in chunk:
        loaded = load_feature(path)
        array = loaded.array
        length, got = array.shape
        if length and got == width:
            pooled, n_valid = pool_steps(array, steps)
            x[row] = pooled.astype(np.float16)
            valid[row, :n_valid] = True
        stats.append((row, clip, str(path), length, got, loaded.nan_values, loaded.was_1d))
    x.flush()
    valid.flush()
    return stats


def build_packed(
    data: ChallengeData,
    name: str,
    steps: int,
    cache_root: str | os.PathLike,
    workers: int = 2,
) -> PackedFeature:
    """Pack feature folder `name` at `steps` steps, or open the current pack if it exists."""
    if steps < 1:
        raise ValueError(f"cache steps must be at least 1, got {steps}")
    ids = data.all_ids
    files = data.feature_files(name)
    if not files:
        raise DataError(f"feature folder {name!r} holds no file for any known id")
    cache_root = Path(cache_root)
    # the prefix names the source folder, so two datasets never evict each other's packs
    source = stable_hash([str(f.resolve()) for f in data.feature_folders(name)], 6)
    prefix = f"{name}-k{steps}-{source}"
    folder = cache_root / f"{prefix}-{_fingerprint(name, steps, ids, files)}"
    if (folder / "meta.json").is_file():
        return PackedFeature(folder)

    width = _probe_width(files)
    row_of = {clip: row for row, clip in enumerate(ids)}
    todo = [(row_of[c], c, files[c]) for c in ids if c in files]
    with atomic_dir(folder) as tmp:
        np.lib.format.open_memmap(tmp / "x.npy", "w+", np.float16, (len(ids), steps, width)).flush()
        np.lib.format.open_memmap(tmp / "valid.npy", "w+", np.bool_, (len(ids), steps)).flush()
        jobs = [(tmp, steps, width, todo[i:i + CHUNK]) for i in range(0, len(todo), CHUNK)]
        stats: list[tuple] = []
        bar = progress(total=len(todo), desc=f"cache {name}", unit="clip")
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
                for chunk_stats in pool.map(_pack_chunk, jobs):
                    stats.extend(chunk_stats)
                    bar.update(len(chunk_stats))
        else:
            for job in jobs:
                stats.extend(_pack_chunk(job))
                bar.update(len(job[3]))
        bar.close()

        widths = Counter(s[4] for s in stats if s[3] > 0)
        if len(widths) > 1:
            expected = widths.most_common(1)[0][0]
            odd = [(s[2], s[4]) for s in stats if s[3] > 0 and s[4] != expected]
            shown = "; ".join(f"{p} has width {w}" for p, w in odd[:5])
            raise DataError(
                f"feature folder {name!r}: {shown} ({len(odd)} such files), but "
                f"{widths[expected]:,} of its files have width {expected}")
        width = next(iter(widths)) if widths else width

        length = np.zeros(len(ids), np.int64)
        missing = np.ones(len(ids), np.bool_)
        report = FeatureReport(name=name, width=width, clips=len(ids))
        for row, clip, _path, steps_read, _w, nan_values, was_1d in stats:
            length[row] = steps_read
            missing[row] = steps_read == 0
            if steps_read == 0:
                report.empty.append(clip)
            if nan_values:
                report.nan_files.append(clip)
                report.nan_values += nan_values
            if was_1d:
                report.one_d.append(clip)
            if steps_read >= LONG_CLIP_STEPS:
                report.long_clips[clip] = int(steps_read)
        report.missing = [c for c in ids if c not in files]
        present = length[~missing]
        report.max_steps = int(present.max()) if present.size else 0
        report.mean_steps = float(present.mean()) if present.size else 0.0
        np.save(tmp / "length.npy", length)
        np.save(tmp / "missing.npy", missing)
        write_json(tmp / "meta.json", {
            "feature": name, "steps": steps, "width": width, "ids": ids,
            "version": CACHE_VERSION, "report": asdict(report),
        })
    for stale in cache_root.glob(f"{prefix}-*"):
        if stale != folder and stale.is_dir() and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return PackedFeature(folder)
