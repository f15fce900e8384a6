"""Real data, real faults: hostile pickles, empty and all-NaN arrays, float16 overflow, a full
disk, ambiguous feature files, transcript words that look like NA, and file permissions."""

from __future__ import annotations

import errno
import os
import pickle
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_labels, write_pkl
from taemi import cache as cache_module
from taemi.artifacts import atomic_dir, stale_temporaries, write_text
from taemi.cache import DiskFullError, build_packed, pool_steps
from taemi.data import (
    FLOAT16_MAX,
    ChallengeData,
    DataError,
    DataWarning,
    load_feature,
    read_labels,
    read_transcripts,
)

# ----------------------------------------------------------------------------- 1. pickles


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "SOMEFILE"
    path = write_pkl(tmp_path / "00001.pkl", _Payload(target))
    with pytest.raises(DataError, match=r"00001.pkl: refused to unpickle (posix|nt|os)\.system: "
                                        r"expected a pickled numpy array"):
        load_feature(path)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (5, 3)])
def test_numpy_arrays_still_load(tmp_path: Path, protocol: int, dtype: type,
                                 shape: tuple[int, ...]) -> None:
    array = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    path = tmp_path / "00001.pkl"
    path.write_bytes(pickle.dumps(array, protocol=protocol))
    loaded = load_feature(path)
    np.testing.assert_array_equal(loaded.array, array.reshape(-1, shape[-1]).astype(np.float32))


def test_pickles_written_by_numpy_1_load(tmp_path: Path) -> None:
    blob = pickle.dumps(np.ones((2, 3), np.float32), protocol=2)
    assert b"numpy._core" in blob
    path = tmp_path / "00001.pkl"
    path.write_bytes(blob.replace(b"numpy._core", b"numpy.core"))  # numpy 1.x's module names
    assert load_feature(path).array.shape == (2, 3)


# ----------------------------------------------------------------------------- 2. empty, NaN


@pytest.mark.parametrize("empty", [np.zeros(0), np.zeros((0,), np.float32), np.zeros((0, 4))])
def test_empty_arrays_are_missing_clips(messy_root: Path, tmp_path: Path,
                                        empty: np.ndarray) -> None:
    write_pkl(messy_root / "vit" / "00007.pkl", empty)
    pack = build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    row = pack.row_of["00007"]
    assert pack.width == 4 and pack.missing[row] and not pack.valid[row].any()
    assert pack.report.empty == ["00007"]
    assert "1 empty arrays (modality missing), e.g. 00007" in pack.report.line()


def test_all_nan_arrays_are_missing_clips(messy_root: Path, tmp_path: Path) -> None:
    write_pkl(messy_root / "vit" / "00006.pkl", np.full((9, 4), np.nan, np.float32))
    write_pkl(messy_root / "vit" / "00007.pkl", np.full((2, 4), np.nan, np.float32))
    pack = build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    for clip in ("00006", "00007"):
        assert pack.missing[pack.row_of[clip]] and not pack.valid[pack.row_of[clip]].any()
    assert pack.report.all_nan == ["00006", "00007"] and pack.report.empty == []
    assert "2 arrays without a finite value" in pack.report.line()
    assert pack.report.line().startswith("vit: 9/12 clips")


def test_nan_rows_are_invalid_steps_not_zeros() -> None:
    short = np.ones((3, 2), np.float32)
    short[1] = np.nan  # a step without a face
    ok = ~np.isnan(short).all(1)
    out, valid = pool_steps(np.nan_to_num(short), 4, ok)
    assert valid.tolist() == [True, False, True, False]

    long = np.arange(16, dtype=np.float32).reshape(8, 2)
    ok = np.array([True, True, False, False, False, True, True, True])
    out, valid = pool_steps(np.where(ok[:, None], long, 0), 4, ok)  # bins of 2 rows
    assert valid.tolist() == [True, False, True, True]
    np.testing.assert_allclose(out[2], long[5])  # bin [4, 6) averages its finite row only
    assert not out[1].any()


def test_nan_value_inside_a_good_row_is_zeroed_and_counted(tmp_path: Path) -> None:
    array = np.ones((4, 3), np.float32)
    array[1, 2] = np.nan
    loaded = load_feature(write_pkl(tmp_path / "a.pkl", array))
    assert (loaded.nan_values, loaded.bad_rows, loaded.array[1, 2]) == (1, 0, 0)
    assert loaded.rows_ok.all()


# ----------------------------------------------------------------------------- 3. float16


def test_values_beyond_float16_are_handled_like_nan(messy_root: Path, tmp_path: Path) -> None:
    big = np.ones((3, 4), np.float32)
    big[1, 2] = 1e6  # one value: zeroed, the step stays valid
    write_pkl(messy_root / "vit" / "00007.pkl", big)
    huge = np.ones((2, 4), np.float64)
    huge[0] = [1e300, -np.inf, 7e4, np.inf]  # a whole step out of range: invalid
    write_pkl(messy_root / "vit" / "00008.pkl", huge)
    pack = build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    x, valid = pack.read()
    assert np.isfinite(x).all() and np.abs(x.astype(np.float32)).max() <= FLOAT16_MAX
    assert valid[pack.row_of["00007"]].tolist() == [True, True, True, False]
    assert x[pack.row_of["00007"], 1, 2] == 0
    assert valid[pack.row_of["00008"]].tolist() == [False, True, False, False]
    report = pack.report
    assert report.range_files == ["00007", "00008"] and report.range_values == 5
    assert "2 arrays with 5 values infinite or beyond float16's range" in report.line()
    assert "first 00007" in report.line()


# ----------------------------------------------------------------------------- 4. disk full


def test_stale_temporary_pack_folders_are_removed(messy_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = cache / ".vit-k4-0a1b2c-0123456789ab.x7_ab3kq.tmp"  # an interrupted older kit
    dead = cache / f".vit-k8-0a1b2c-0123456789ab.{_host()}-{2**31 - 2}-abcd1234.tmp"
    running = cache / f".vit-k2-0a1b2c-0123456789ab.{_host()}-{os.getpid()}-abcd1234.tmp"
    host = "ffff" if _host() != "ffff" else "0000"  # another machine on a shared disk
    other_host = cache / f".vit-k2-0a1b2c-0123456789ab.{host}-1-abcd1234.tmp"
    for folder in (old, dead, running, other_host):
        folder.mkdir(parents=True)
        (folder / "x.npy").write_bytes(b"half")
    assert stale_temporaries(cache) == sorted([old, dead])
    build_packed(ChallengeData(messy_root), "vit", 4, cache, workers=1)
    assert not old.exists() and not dead.exists()
    assert running.exists() and other_host.exists()


def _host() -> str:
    from taemi.artifacts import _host_tag

    return _host_tag()


def test_disk_full_is_one_clear_error(messy_root: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(DiskFullError, match=r"^disk full while writing the cache: \S+/cache/"
                                             r"vit-k4-[0-9a-f]{12}/x\.npy \(free some space"):
        build_packed(ChallengeData(messy_root), "vit", 4, cache, workers=1)
    assert list(cache.iterdir()) == []  # no temporary folder is left behind


def test_disk_full_in_a_write_names_the_file(messy_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, *args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cache_module, "_allocate", full)
    with pytest.raises(DataError, match=r"disk full while writing the cache: .*x\.npy \(free"):
        build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)


def test_allocation_writes_zeros_where_fallocate_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", unsupported, raising=False)
    monkeypatch.setattr(cache_module, "_ZEROS", 1000)  # several writes
    path = tmp_path / "x.npy"
    cache_module._allocate(path, np.float16, (3, 50, 40))
    loaded = np.load(path)
    assert loaded.shape == (3, 50, 40) and loaded.dtype == np.float16 and not loaded.any()
    if sys.platform == "linux":
        assert path.stat().st_blocks * 512 >= path.stat().st_size - 4096  # no holes


# ----------------------------------------------------------------------------- 5. .pkl + .npy


def test_pkl_beside_npy_is_refused(messy_root: Path) -> None:
    np.save(messy_root / "test_data" / "vit" / "00010.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match=r"test_data/vit/00010.npy and .*test_data/vit/"
                                        r"00010.pkl: two feature files for id 00010"):
        ChallengeData(messy_root).feature_files("vit")


# ----------------------------------------------------------------------------- 6. transcripts


def test_transcript_words_that_look_like_na_are_text(tmp_path: Path) -> None:
    path = tmp_path / "transcripts.csv"
    path.write_text('Filename,text\n00000,NA\n00001,null\n00002,None\n00003,nan\n00004,\n'
                    '00005,""\n00006, N/A \n')
    texts = read_transcripts(path)
    assert texts == {"00000": "NA", "00001": "null", "00002": "None", "00003": "nan",
                     "00004": "", "00005": "", "00006": "N/A"}


def test_missing_transcripts_file_warns_once_naming_it(messy_root: Path) -> None:
    data = ChallengeData(messy_root, transcripts="whisper/transcripts.csv")
    with pytest.warns(DataWarning, match=r"transcripts file not found: .*whisper/"
                                         r"transcripts.csv") as caught:
        assert data.transcripts == {}
        assert data.transcripts == {}
    assert len([w for w in caught if issubclass(w.category, DataWarning)]) == 1


def test_header_only_split_warns_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train_split.csv"
    write_labels(path, []).to_csv(path, index=False)
    assert pd.read_csv(path).empty
    with pytest.warns(DataWarning, match=r"train_split.csv: no rows, only a header"):
        assert read_labels(path).empty


# ----------------------------------------------------------------------------- 7. umask


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, file_mode: int,
                                        dir_mode: int) -> None:
    before = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "hello\n")
        with atomic_dir(tmp_path / "folder") as tmp:
            write_text(tmp / "inner.json", "{}\n")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "folder" / "inner.json").stat().st_mode) == file_mode
