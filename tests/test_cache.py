"""The packed cache: pooling, masks, the loading report, keying and rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_pkl
from taemi.cache import build_packed, participant_moments, participant_normalised, pool_steps
from taemi.data import ChallengeData, DataError


@pytest.mark.parametrize(("length", "steps"), [(100, 8), (9, 8), (62_495, 32), (33, 32)])
def test_pooling_matches_torch_adaptive_avg_pool(length: int, steps: int) -> None:
    x = np.random.default_rng(0).standard_normal((length, 5)).astype(np.float32)
    pooled, valid = pool_steps(x, steps)
    expected = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x).T[None], steps)[0].T
    np.testing.assert_allclose(pooled, expected.numpy(), atol=1e-5)
    assert valid.all() and valid.shape == (steps,)


def test_short_clips_are_padded_not_stretched() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    pooled, valid = pool_steps(x, 5)
    assert valid.tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(pooled[:3], x)
    assert not pooled[3:].any()


def test_pack_masks_and_report_the_mess(messy_root: Path, tmp_path: Path) -> None:
    data = ChallengeData(messy_root)
    pack = build_packed(data, "vit", 4, tmp_path / "cache", workers=1)
    assert pack.x.dtype == np.float16 and pack.x.shape == (12, 4, 4)
    row = pack.row_of
    assert pack.missing[row["00002"]] and not pack.missing[row["00003"]]
    assert not pack.x[row["00002"]].any()
    assert pack.valid[row["00004"]].tolist() == [True, False, False, False]  # 1-D = one step
    assert pack.length[row["00005"]] == 60_123
    assert np.isfinite(pack.x.astype(np.float32)).all()
    # 00003: 8 steps pooled to 4; its all-NaN step 4 is left out of bin [4, 6)
    raw = np.load(messy_root / "vit" / "00003.pkl", allow_pickle=True)
    np.testing.assert_allclose(pack.x[row["00003"]][2].astype(np.float32), raw[5], rtol=1e-3)
    assert pack.valid[row["00003"]].all()
    report = pack.report
    assert report.missing == ["00002"] and report.one_d == ["00004"]
    assert report.nan_files == ["00003"] and report.nan_values == 5
    assert report.invalid_steps == 1
    assert report.long_clips == {"00005": 60_123}
    line = report.line()
    for fragment in ("1 missing files", "5 values", "1 steps made only of them marked invalid",
                     "1-D arrays", "60,000+ steps"):
        assert fragment in line


def test_width_mismatch_names_the_file(messy_root: Path, tmp_path: Path) -> None:
    write_pkl(messy_root / "vit" / "00007.pkl", np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match=r"00007.pkl has width 5.*have width 4"):
        build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    assert not any((tmp_path / "cache").glob("*vit-*"))  # nothing half-built is left


def test_cache_is_reused_and_rebuilt_only_on_change(messy_root: Path, tmp_path: Path) -> None:
    data = ChallengeData(messy_root)
    first = build_packed(data, "vit", 4, tmp_path / "cache", workers=1)
    stamp = (first.folder / "x.npy").stat().st_mtime_ns
    again = build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    assert again.folder == first.folder
    assert (again.folder / "x.npy").stat().st_mtime_ns == stamp
    other_steps = build_packed(data, "vit", 2, tmp_path / "cache", workers=1)
    assert other_steps.folder != first.folder and first.folder.exists()

    changed = messy_root / "vit" / "00001.pkl"
    write_pkl(changed, np.full((6, 4), 7, np.float32))
    os.utime(changed, ns=(1, 1))
    rebuilt = build_packed(ChallengeData(messy_root), "vit", 4, tmp_path / "cache", workers=1)
    assert rebuilt.folder != first.folder and not first.folder.exists()
    assert np.allclose(rebuilt.x[rebuilt.row_of["00001"]][:4].astype(np.float32), 7)


def test_two_workers_pack_the_same_arrays(tiny_root: Path, tmp_path: Path) -> None:
    data = ChallengeData(tiny_root, test_list="test_split.csv")
    one = build_packed(data, "wav2vec2", 8, tmp_path / "a", workers=1)
    two = build_packed(data, "wav2vec2", 8, tmp_path / "b", workers=2)
    np.testing.assert_array_equal(one.x, two.x)
    np.testing.assert_array_equal(one.valid, two.valid)
    np.testing.assert_array_equal(one.missing, two.missing)


def test_participant_normalised_pack(tiny_root: Path, tmp_path: Path) -> None:
    """Each participant's valid steps end with the pooled mean (prior 0: exactly); padding
    stays zero, nobody-known clips keep their raw values, the pack is built once, and a
    small participant keeps mostly the pooled statistics under a prior."""
    data = ChallengeData(tiny_root, test_list="test_split.csv")
    raw = build_packed(data, "wav2vec2", 8, tmp_path, workers=1)
    rng = np.random.default_rng(0)
    who = rng.integers(0, 6, len(raw.ids))
    who[:5] = -1
    who[5] = 6  # a participant of one clip
    packed = participant_normalised(raw, who, 0.0, tmp_path)
    x, valid = np.asarray(packed.x, np.float64), np.asarray(packed.valid)
    _, _, pooled_mean, _ = participant_moments(raw, who, 0.0)
    for person in range(6):
        steps = x[who == person][valid[who == person]]
        np.testing.assert_allclose(steps.mean(0), pooled_mean, atol=2e-2)
    assert (x[~valid] == 0).all()
    np.testing.assert_array_equal(packed.x[:5], raw.x[:5])
    np.testing.assert_array_equal(packed.valid, raw.valid)
    assert not np.allclose(x[who >= 0], np.asarray(raw.x, np.float64)[who >= 0], atol=1e-2)
    stamp = (packed.folder / "x.npy").stat().st_mtime_ns
    assert participant_normalised(raw, who, 0.0, tmp_path).folder == packed.folder
    assert (packed.folder / "x.npy").stat().st_mtime_ns == stamp
    # with a prior, the one-clip participant's mean moves only part of the way to its own
    mean, _, _, _ = participant_moments(raw, who, 5.0)
    own = np.asarray(raw.x[5], np.float64)[raw.valid[5]].mean(0)
    between = np.abs(mean[6] - pooled_mean) / np.abs(own - pooled_mean).clip(1e-9)
    assert 0.1 < np.median(between) < 0.3  # 1 / (1 + 5) of the way
    with pytest.raises(ValueError, match="participant labels for the"):
        participant_normalised(raw, who[:-1], 0.0, tmp_path)
