"""The packed cache: every clip's features as fixed-length, memory-mapped float16 arrays.

Reading and pooling thousands of `{id}.pkl` files at every training step is what makes
public EMI code slow. One pass here turns a feature folder into

    <cache>/<feature>-k<K>-<key>/
        x.npy        (N, K, D) float16, rows in id order
        valid.npy    (N, K) bool: which of the K steps hold data
        length.npy   (N,) int: the clip's original step count
        missing.npy  (N,) bool: no file, an empty one, or one without a finite value
        meta.json    ids, width, settings, the key and the loading report
        files.json   each clip's file: name, size, mtime and content digest

A clip of T >= K steps is adaptive-average-pooled to K steps (torch's bins); a shorter
clip keeps its T steps and the rest are padding, marked invalid. A step made only of NaN,
infinite or out-of-float16-range values (`load_feature`) is invalid too, and a pooled bin
averages only the usable steps in it. The folder is named by the pack's key: the content
of every input file (quick-checked by size and mtime, `taemi.identity`), the step count and
the packing code's version. Changed bytes rebuild the pack; a copy, a move or a touch does
not.

The packs' files are allocated on disk before they are memory-mapped, so a full disk stops
packing with a "disk full" DataError rather than killing the process with SIGBUS, and the
temporary folders of interrupted runs are removed when the next run packs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from taemi.artifacts import atomic_dir, read_json, remove_stale_temporaries, stable_hash, write_json
from taemi.data import LONG_CLIP_STEPS, ChallengeData, DataError, FeatureReport, load_feature
from taemi.identity import DigestBook, read_manifest
from taemi.legacy import adopt_legacy_pack
from taemi.progress import progress

CACHE_VERSION = 2  # 2: steps without a usable value are invalid, not zeros
MANIFEST = "files.json"  # clip -> [file name, size, mtime_ns, content digest]
CHUNK = 64
_ZEROS = 1 << 24  # bytes per write when a file system cannot fallocate


def pool_steps(
    array: np.ndarray, steps: int, rows_ok: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pool (T, D) to (K, D), or pad when T < K; return it and the (K,)
    valid mask. Rows with `rows_ok` False are left out: a short clip's step is invalid, a
    pooled bin averages its other rows and is invalid when it has none."""
    length, width = array.shape
    out = np.zeros((steps, width), np.float32)
    valid = np.zeros(steps, np.bool_)
    if length <= steps:
        out[:length] = array
        valid[:length] = True if rows_ok is None else rows_ok
        out[~valid] = 0
        return out, valid
    i = np.arange(steps)
    start = (i * length) // steps
    end = ((i + 1) * length + steps - 1) // steps
    sums = np.zeros((length + 1, width), np.float64)
    if rows_ok is None:
        np.cumsum(array, axis=0, dtype=np.float64, out=sums[1:])
        counts = (end - start).astype(np.float64)
    else:
        np.cumsum(np.where(rows_ok[:, None], array, 0), axis=0, dtype=np.float64, out=sums[1:])
        seen = np.concatenate([[0], np.cumsum(rows_ok, dtype=np.int64)])
        counts = (seen[end] - seen[start]).astype(np.float64)
    valid[:] = counts > 0
    out[valid] = (sums[end] - sums[start])[valid] / counts[valid, None]
    return out, valid


class DiskFullError(DataError):
    """No space left where the cache is written; the message names the path."""


def _disk_full(err: OSError, where: Path) -> DiskFullError:
    path = err.filename or where
    return DiskFullError(f"disk full while writing the cache: {path} (free some space there "
                         "or point cache.dir at another disk)")


def _allocate(path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    """Create an .npy file of zeros whose blocks are really on disk: a full disk fails here
    with ENOSPC, where a sparse file would fail later, on a page fault, with SIGBUS."""
    try:
        _allocate_file(path, dtype, shape)
    except OSError as err:
        if err.errno == errno.ENOSPC and not err.filename:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def _allocate_file(path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    np.lib.format.open_memmap(path, "w+", dtype, shape).flush()
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
            return
        except AttributeError:  # no posix_fallocate on this platform
            pass
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        handle.seek(0)  # the header's bytes are rewritten unchanged, the rest as zeros
        header = handle.read(min(size, 4096))
        handle.seek(0)
        handle.write(header)
        zeros = memoryview(bytes(min(_ZEROS, size)))
        for offset in range(len(header), size, len(zeros)):
            handle.write(zeros[: size - offset])
        handle.flush()
        os.fsync(handle.fileno())


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
        # what the pack is, by content (`pack_key`); the name a kit before content keys
        # gave it, kept to carry over jobs trained on it (`taemi.legacy`)
        self.key: str = self.meta.get("key") or self.folder.name
        self.legacy_name: str | None = self.meta.get("legacy_folder")

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


def pack_key(name: str, steps: int, ids: list[str], digests: dict[str, str]) -> str:
    """A pack's identity: the bytes it packed (each clip's file digest, or none), the step
    count and the packing code's version; never a path or a time."""
    return stable_hash({"v": CACHE_VERSION, "feature": name, "steps": steps,
                        "files": [(clip, digests.get(clip)) for clip in ids]})


def _known_digests(cache_root: Path, prefix: str) -> dict:
    """Every file digest the packs of this feature and step count recorded, by stat."""
    known = {}
    for manifest in cache_root.glob(f"{prefix}-*/{MANIFEST}"):
        if not manifest.parent.name.startswith("."):
            known.update(read_manifest(manifest))
    return known


def _manifest(stats: dict[str, tuple], digests: dict[str, str]) -> dict[str, list]:
    return {clip: [*stats[clip], digests[clip]] for clip in sorted(digests)}


def _probe_width(name: str, files: dict[str, Path]) -> int:
    """The folder's width, by majority over a spread-out sample of its non-empty files (all
    files when the sample holds none)."""
    paths = list(files.values())
    sample = paths[:: max(1, len(paths) // 15)][:16]
    widths = Counter(a.shape[1] for a in (load_feature(p).array for p in sample) if len(a))
    if not widths:
        widths = Counter(a.shape[1] for a in (load_feature(p).array for p in paths) if len(a))
    if not widths:
        raise DataError(f"feature folder {name!r}: all {len(paths):,} files hold empty arrays "
                        f"(e.g. {paths[0]}), expected (T, D) arrays with T > 0")
    return widths.most_common(1)[0][0]


class _ClipStats(NamedTuple):
    row: int
    clip: str
    path: str
    steps: int  # T as read; 0 for an empty array
    width: int
    nan_values: int
    range_values: int
    bad_rows: int
    was_1d: bool
    all_nan: bool


def _pack_chunk(args: tuple) -> list[_ClipStats]:
    """Worker: load, repair and pool a run of clips straight into the memory maps."""
    folder, steps, width, chunk = args
    x = np.load(folder / "x.npy", mmap_mode="r+")
    valid = np.load(folder / "valid.npy", mmap_mode="r+")
    stats = []
    for row, clip, path in chunk:
        loaded = load_feature(path)
        array = loaded.array
        length, got = array.shape
        if length and got == width and not loaded.all_nan:
            pooled, ok = pool_steps(array, steps, loaded.rows_ok)
            x[row] = pooled.astype(np.float16)
            valid[row] = ok
        stats.append(_ClipStats(row, clip, str(path), length, got, loaded.nan_values,
                                loaded.range_values, loaded.bad_rows, loaded.was_1d,
                                loaded.all_nan))
    x.flush()
    valid.flush()
    return stats


@dataclass
class PackLookup:
    """Where the pack of a feature folder at a step count is, by its key, found without
    writing anything (`find_pack`); `build_packed` then opens, adopts or makes it."""

    name: str
    steps: int
    key: str
    folder: Path
    source: list[str]  # the feature folders, resolved: which old packs a new one replaces
    files: dict[str, Path]
    manifest: dict[str, list]  # clip -> [file name, size, mtime_ns, digest]
    files_read: int  # files whose bytes were read (their stats matched no manifest)

    @property
    def exists(self) -> bool:
        return (self.folder / "meta.json").is_file()

    @property
    def legacy_name(self) -> str | None:
        """The pack's name under older kits, when such a pack is what exists."""
        if self.exists:
            return read_json(self.folder / "meta.json").get("legacy_folder")
        return None


_REMEMBERED: dict | None = None  # find_pack's answers while one command runs


@contextlib.contextmanager
def remembering() -> Iterator[None]:
    """Within one command (`taemi.cli.main`, `taemi.pipeline.run_all`), each feature
    folder is listed and quick-checked once, however many steps ask for its pack: the kit
    writes no feature file while it plans, packs and trains. Outside, every call looks
    again."""
    global _REMEMBERED
    outer = _REMEMBERED
    _REMEMBERED = {} if outer is None else outer
    try:
        yield
    finally:
        _REMEMBERED = outer


def find_pack(data: ChallengeData, name: str, steps: int,
              cache_root: str | os.PathLike) -> PackLookup:
    """The key of the pack of `name` at `steps` steps: the files' contents, quick-checked
    against the manifests of this feature's packs (a copied project reads them once)."""
    if steps < 1:
        raise ValueError(f"cache steps must be at least 1, got {steps}")
    memo = None
    if _REMEMBERED is not None:
        memo = (name, steps, str(Path(cache_root).resolve()), hash(tuple(data.all_ids)),
                tuple(str(f.resolve()) for f in data.feature_folders(name)))
        if memo in _REMEMBERED:
            return _REMEMBERED[memo]
    found = _find_pack(data, name, steps, cache_root)
    if memo is not None:
        _REMEMBERED[memo] = found
    return found


def _find_pack(data: ChallengeData, name: str, steps: int,
               cache_root: str | os.PathLike) -> PackLookup:
    files = data.feature_files(name)
    if not files:
        raise DataError(f"feature folder {name!r} holds no file for any known id")
    cache_root = Path(cache_root)
    prefix = f"{name}-k{steps}"
    book = DigestBook(_known_digests(cache_root, prefix))
    stats, digests = {}, {}
    # shown only when it takes a while: after a copy, when every file is read once
    for clip, path in progress(files.items(), desc=f"digest {name}", unit="file",
                               total=len(files), leave=False, delay=2):
        stats[clip], digests[clip] = book.digest(path)
    key = pack_key(name, steps, data.all_ids, digests)
    source = sorted(str(f.resolve()) for f in data.feature_folders(name))
    return PackLookup(name, steps, key, cache_root / f"{prefix}-{key}", source, files,
                      _manifest(stats, digests), book.read)


def build_packed(
    data: ChallengeData,
    name: str,
    steps: int,
    cache_root: str | os.PathLike,
    workers: int = 2,
) -> PackedFeature:
    """Pack feature folder `name` at `steps` steps, or open the current pack if it exists.

    The pack's folder is named by its key (`find_pack`). A pack made by kits that keyed
    packs by paths and mtimes is renamed to its key, not rebuilt (`taemi.legacy`); a pack
    whose files were copied (same bytes, new stats) gets its manifest's stats renewed."""
    found = find_pack(data, name, steps, cache_root)
    cache_root, folder, ids = Path(cache_root), found.folder, data.all_ids
    if not found.exists:
        adopt_legacy_pack(data, name, steps, cache_root, folder, ids, found.files, found.key)
    if found.exists:
        if found.files_read or not (folder / MANIFEST).is_file():
            write_json(folder / MANIFEST, found.manifest)
        pack = PackedFeature(folder)
        if pack.meta.get("source") != found.source or pack.meta.get("key") != found.key:
            write_json(folder / "meta.json", {**pack.meta, "source": found.source,
                                              "key": found.key})
            pack = PackedFeature(folder)
        return pack

    remove_stale_temporaries(cache_root)  # what interrupted runs left behind
    width = _probe_width(name, found.files)
    try:
        _pack(folder, name, steps, width, ids, found.files, workers,
              {"key": found.key, "source": found.source}, found.manifest)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _disk_full(_named(err, folder), cache_root) from err
        raise
    for stale in cache_root.glob(f"{name}-k{steps}-*"):
        if stale != folder and stale.is_dir() and not stale.name.startswith(".") and \
                _same_source(stale, found.source):
            shutil.rmtree(stale, ignore_errors=True)
            for derived in cache_root.glob(f"{NORMALISED_PREFIX}-{stale.name}-*"):
                shutil.rmtree(derived, ignore_errors=True)
    return PackedFeature(folder)


def _named(err: OSError, folder: Path) -> OSError:
    """The error with the pack's own folder where it names the temporary one being written
    (a user looks for the pack, never for `.<name>.<host>-<pid>-<random>.tmp`)."""
    where = Path(err.filename) if err.filename else None
    if where is None or where.parent.parent != folder.parent or \
            not where.parent.name.startswith(f".{folder.name}."):
        return err
    return OSError(err.errno, err.strerror, str(folder / where.name))


def _same_source(folder: Path, source: list[str]) -> bool:
    try:
        return read_json(folder / "meta.json").get("source") == source
    except (OSError, ValueError):
        return False


def _pack(folder: Path, name: str, steps: int, width: int, ids: list[str],
          files: dict[str, Path], workers: int, identity: dict, manifest: dict) -> None:
    """Write the pack of `name` into `folder` atomically (see `build_packed`)."""
    row_of = {clip: row for row, clip in enumerate(ids)}
    todo = [(row_of[c], c, files[c]) for c in ids if c in files]
    with atomic_dir(folder) as tmp:
        _allocate(tmp / "x.npy", np.float16, (len(ids), steps, width))
        _allocate(tmp / "valid.npy", np.bool_, (len(ids), steps))
        jobs = [(tmp, steps, width, todo[i:i + CHUNK]) for i in range(0, len(todo), CHUNK)]
        stats: list[_ClipStats] = []
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

        widths = Counter(s.width for s in stats if s.steps > 0)
        if len(widths) > 1:
            expected = widths.most_common(1)[0][0]
            odd = [(s.path, s.width) for s in stats if s.steps > 0 and s.width != expected]
            shown = "; ".join(f"{p} has width {w}" for p, w in odd[:5])
            raise DataError(
                f"feature folder {name!r}: {shown} ({len(odd)} such files), but "
                f"{widths[expected]:,} of its files have width {expected}")
        width = next(iter(widths)) if widths else width

        length = np.zeros(len(ids), np.int64)
        missing = np.ones(len(ids), np.bool_)
        report = FeatureReport(name=name, width=width, clips=len(ids))
        for s in stats:
            length[s.row] = s.steps
            missing[s.row] = s.steps == 0 or s.all_nan
            if s.steps == 0:
                report.empty.append(s.clip)
            elif s.all_nan:
                report.all_nan.append(s.clip)
            else:
                report.invalid_steps += s.bad_rows
            if s.nan_values:
                report.nan_files.append(s.clip)
                report.nan_values += s.nan_values
            if s.range_values:
                report.range_files.append(s.clip)
                report.range_values += s.range_values
            if s.was_1d:
                report.one_d.append(s.clip)
            if s.steps >= LONG_CLIP_STEPS:
                report.long_clips[s.clip] = int(s.steps)
        report.missing = [c for c in ids if c not in files]
        present = length[~missing]
        report.max_steps = int(present.max()) if present.size else 0
        report.mean_steps = float(present.mean()) if present.size else 0.0
        np.save(tmp / "length.npy", length)
        np.save(tmp / "missing.npy", missing)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / "meta.json", {
            "feature": name, "steps": steps, "width": width, "ids": ids,
            "version": CACHE_VERSION, "report": asdict(report), **identity,
        })


# ------------------------------------------------------------------ per-participant packs

NORMALISED_PREFIX = "pnorm"


def participant_moments(pack: PackedFeature, participants: np.ndarray, prior: float,
                        chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    np.ndarray]:
    """Each participant's per-dimension mean and standard deviation over its valid steps,
    shrunk toward the pooled ones by `prior` clips' weight (a participant with few clips
    keeps mostly the pooled statistics); also the pooled mean and within-person deviation.

    `participants` holds one integer per pack row; a negative one is nobody known, and its
    clips get the pooled statistics."""
    groups = int(participants.max()) + 1 if len(participants) else 0
    sums = np.zeros((groups, pack.width))
    squares = np.zeros((groups, pack.width))
    steps, clips = np.zeros(groups), np.zeros(groups)
    for start in range(0, len(pack.ids), chunk):
        rows = slice(start, start + chunk)
        x = np.asarray(pack.x[rows], np.float64)
        valid = np.asarray(pack.valid[rows])
        who = participants[rows]
        known = who >= 0
        masked = x * valid[..., None]
        np.add.at(sums, who[known], masked.sum(1)[known])
        np.add.at(squares, who[known], (masked * x).sum(1)[known])
        np.add.at(steps, who[known], valid.sum(1)[known])
        np.add.at(clips, who[known], valid.any(1)[known])
    seen = steps > 0
    pooled_mean = sums[seen].sum(0) / max(steps[seen].sum(), 1)
    mean = np.divide(sums, steps[:, None], out=np.zeros_like(sums), where=seen[:, None])
    within = squares - steps[:, None] * mean ** 2
    pooled_var = np.maximum(within[seen].sum(0) / max(steps[seen].sum(), 1), 1e-12)
    var = np.divide(within, steps[:, None], out=np.zeros_like(sums), where=seen[:, None])
    weight = (clips / (clips + prior))[:, None] if prior > 0 else seen[:, None].astype(float)
    mean = weight * mean + (1 - weight) * pooled_mean
    var = np.maximum(weight * var + (1 - weight) * pooled_var, 1e-6 * pooled_var)
    return mean, np.sqrt(var), pooled_mean, np.sqrt(pooled_var)


def normalised_identity(raw_folder: str, raw_key: str, raw_legacy: str | None,
                        participants: np.ndarray, prior: float) -> tuple[str, dict]:
    """The folder name and identity (key, and name under older kits) of the pack that
    standardises raw pack `raw_folder` by these participant labels and prior."""
    labels = stable_hash({"participants": np.asarray(participants).tolist(), "prior": prior}, 8)
    return f"{NORMALISED_PREFIX}-{raw_folder}-{labels}", {
        "key": stable_hash({"raw": raw_key, "participants": labels}),
        "legacy_folder": f"{NORMALISED_PREFIX}-{raw_legacy}-{labels}" if raw_legacy else None}


def participant_normalised(pack: PackedFeature, participants: np.ndarray, prior: float,
                           cache_root: str | os.PathLike, chunk: int = 1024) -> PackedFeature:
    """A pack whose clips are standardised by their participant's own statistics
    (`participant_moments`), then put back on the pooled mean and within-person scale, so
    a model tuned on the raw features needs no new learning rate: what is left is how a
    person's face or voice moves, not whose it is.

    Written once beside the raw pack (`pnorm-<raw pack>-<hash>`), keyed by the raw pack,
    the participant labels and `prior`; padding and missing clips stay zeros."""
    participants = np.asarray(participants, np.int64)
    if len(participants) != len(pack.ids):
        raise ValueError(f"{len(participants)} participant labels for the {len(pack.ids)} "
                         f"clips of {pack.folder}")
    cache_root = Path(cache_root)
    name, identity = normalised_identity(pack.folder.name, pack.key, pack.legacy_name,
                                         participants, prior)
    folder = cache_root / name
    if not (folder / "meta.json").is_file() and identity["legacy_folder"]:
        old = cache_root / identity["legacy_folder"]
        if (old / "meta.json").is_file():  # made before content keys: renamed, not redone
            old.rename(folder)
    if (folder / "meta.json").is_file():
        normalised = PackedFeature(folder)
        if normalised.meta.get("key") != identity["key"]:
            write_json(folder / "meta.json", {**normalised.meta, **identity})
            normalised = PackedFeature(folder)
        return normalised
    mean, std, pooled_mean, pooled_std = participant_moments(pack, participants, prior, chunk)
    scale = np.vstack([pooled_std / std, np.ones((1, pack.width))])  # row -1: nobody known
    shift = np.vstack([mean, pooled_mean[None]])
    with atomic_dir(folder) as tmp:
        x = np.lib.format.open_memmap(tmp / "x.npy", "w+", np.float16, pack.x.shape)
        for start in range(0, len(pack.ids), chunk):
            rows = slice(start, start + chunk)
            who = participants[rows]
            raw = np.asarray(pack.x[rows], np.float64)
            out = pooled_mean + (raw - shift[who][:, None]) * scale[who][:, None]
            x[rows] = np.where(pack.valid[rows][..., None], out, 0).astype(np.float16)
        x.flush()
        del x
        for name in ("valid.npy", "length.npy", "missing.npy"):
            shutil.copyfile(pack.folder / name, tmp / name)
        write_json(tmp / "meta.json", {
            **pack.meta, **identity, "normalised": {"by": "participant", "prior": prior,
                                        "participants": len(np.unique(participants)),
                                        "source": pack.folder.name}})
    for stale in cache_root.glob(f"{NORMALISED_PREFIX}-{pack.folder.name}-*"):
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return PackedFeature(folder)
