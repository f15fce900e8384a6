"""The waveform cache: decoded once, keyed by content, resumable, failures reported; the
decoder stops where the cache does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_extract import CORRUPT, NO_AUDIO, SPEECH_MP3, SPEECH_MP4, media_root  # noqa: F401

from taemi import waves
from taemi.data import ChallengeData
from taemi.extract.common import find_media
from taemi.extract.media import SAMPLE_RATE, read_audio
from taemi.waves import WaveCache, ensure_waves, to_float, to_int16

KEPT = 2 * SAMPLE_RATE  # 2 s: the 3 s speech clips are cut, the 1 s tones are whole


def open_root(root: Path) -> ChallengeData:
    return ChallengeData(root, test_list="test_split.csv", transcripts=None)


@pytest.fixture
def root(media_root: Path, tmp_path: Path) -> Path:  # noqa: F811
    copy = tmp_path / "data"
    shutil.copytree(media_root, copy)
    return copy


def test_the_decoder_stops_where_it_is_told_and_reads_the_same_samples(
        media_root: Path) -> None:  # noqa: F811
    path = media_root / "audio" / f"{SPEECH_MP3}.mp3"
    whole = read_audio(path)
    first = read_audio(path, max_samples=SAMPLE_RATE)
    assert len(whole) > 2 * SAMPLE_RATE and len(first) == SAMPLE_RATE
    np.testing.assert_array_equal(first, whole[:SAMPLE_RATE])


def test_each_clip_is_decoded_once_as_the_decoder_reads_it(root: Path, tmp_path: Path) -> None:
    data = open_root(root)
    cache = ensure_waves(data, KEPT, tmp_path / "cache")
    media = find_media(root, "audio")
    assert cache.ids == data.all_ids
    for clip in data.all_ids:
        row = cache.row_of[clip]
        if clip in (NO_AUDIO, CORRUPT):
            assert cache.lengths[row] == 0  # its audio is missing
            continue
        expected = to_float(to_int16(read_audio(media[clip], max_samples=KEPT)))
        np.testing.assert_array_equal(cache.read(row), expected)
        assert cache.lengths[row] == min(KEPT, len(read_audio(media[clip])))
    speech = cache.row_of[SPEECH_MP4]
    np.testing.assert_array_equal(cache.read(speech, 100, 50), cache.read(speech)[100:150])
    assert np.abs(cache.read(speech) - read_audio(media[SPEECH_MP4], max_samples=KEPT)
                  ).max() <= 0.5 / waves.SCALE + 1e-7  # int16: half a step at most


def test_unreadable_audio_is_reported_and_listed(root: Path, tmp_path: Path) -> None:
    cache = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    listed = pd.read_csv(cache.folder / "_failures.csv", dtype=str)
    assert listed["Filename"].tolist() == [CORRUPT]  # a silent video is not a fault
    assert "cannot open as media" in listed["reason"].iloc[0]
    line = cache.report.line()
    assert "1 unreadable" in line and f"e.g. {CORRUPT}" in line and "_failures.csv" in line
    assert "1 without audio" in line


def test_the_cache_is_keyed_by_content_not_by_time_or_place(root: Path, tmp_path: Path) -> None:
    first = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    made = (first.folder / "samples.npy").stat().st_mtime_ns
    for path in root.rglob("*.mp4"):
        os.utime(path, ns=(made + 10**9, made + 10**9))  # touched: the same bytes
    again = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    assert again.folder == first.folder
    assert (again.folder / "samples.npy").stat().st_mtime_ns == made
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert ensure_waves(open_root(moved), KEPT, tmp_path / "cache").folder == first.folder
    shutil.copy(root / "audio" / f"{SPEECH_MP3}.mp3", root / "raw" / "00000.mp4")  # new bytes
    changed = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    assert changed.folder != first.folder and not first.folder.exists()
    assert ensure_waves(open_root(root), SAMPLE_RATE, tmp_path / "cache").folder != \
        changed.folder  # what is kept is in the key too


def test_a_killed_build_resumes_at_the_shards_it_had_not_finished(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waves, "SHARD", 4)  # 16 clips: 4 shards
    decoded: list[str] = []
    real = waves.decode_clip

    def counting(path, max_samples):
        decoded.append(path.stem if path else "")
        if len(decoded) == 10:  # killed in the third shard
            raise KeyboardInterrupt
        return real(path, max_samples)

    monkeypatch.setattr(waves, "decode_clip", counting)
    with pytest.raises(KeyboardInterrupt):
        ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("waves-*"))  # nothing half-made in view
    decoded.clear()
    resumed = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    assert len(decoded) == 8  # the two shards the kill had finished were not decoded again
    monkeypatch.setattr(waves, "decode_clip", real)
    whole = ensure_waves(open_root(root), KEPT, tmp_path / "whole")
    np.testing.assert_array_equal(np.asarray(resumed.samples), np.asarray(whole.samples))
    np.testing.assert_array_equal(resumed.offsets, whole.offsets)
    assert not list((tmp_path / "cache").glob(".waves-*"))  # the partial shards are gone


def test_a_worker_process_reopens_the_cache(root: Path, tmp_path: Path) -> None:
    import pickle

    cache = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    copy = pickle.loads(pickle.dumps(cache))
    assert isinstance(copy, WaveCache) and copy.folder == cache.folder
    np.testing.assert_array_equal(copy.read(3), cache.read(3))


def _build_in_a_process(root: str, cache: str) -> str:
    data = ChallengeData(root, test_list="test_split.csv", transcripts=None)
    return str(ensure_waves(data, KEPT, cache).folder)


def test_processes_building_the_same_cache_at_once_take_turns(root: Path,
                                                              tmp_path: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        folders = list(pool.map(_build_in_a_process, [str(root)] * 2,
                                [str(tmp_path / "cache")] * 2))
    assert folders[0] == folders[1]
    assert [p.name for p in (tmp_path / "cache").glob("waves-*")] == [Path(folders[0]).name]
    assert not list((tmp_path / "cache").glob(".waves-*"))
    whole = ensure_waves(open_root(root), KEPT, tmp_path / "whole")
    np.testing.assert_array_equal(np.asarray(WaveCache(folders[0]).samples),
                                  np.asarray(whole.samples))


def test_other_clip_ids_make_another_cache(root: Path, tmp_path: Path) -> None:
    first = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    tests = pd.read_csv(root / "test_split.csv", dtype=str)
    tests.iloc[:-1].to_csv(root / "test_split.csv", index=False)  # one test clip fewer
    fewer = ensure_waves(open_root(root), KEPT, tmp_path / "cache")
    assert fewer.folder != first.folder and len(fewer.ids) == len(first.ids) - 1
