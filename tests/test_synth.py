"""Generated data: the organisers' layout, the structure TAEMI assumes, and determinism."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from taemi.artifacts import read_json
from taemi.data import TARGETS, ChallengeData, load_feature
from taemi.synth import SynthParams, generate, make_plan, make_world


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_reads_through_the_data_layer(tiny_root: Path) -> None:
    data = ChallengeData(tiny_root, test_list="test_split.csv",
                         test_labels="heldout/test_labels.csv")
    n_train, n_valid, n_test = TINY.splits()
    assert len(data.train) == n_train and len(data.valid) == n_valid
    assert len(data.test_ids) == n_test == len(data.test_labels)
    assert data.train["Filename"].iloc[0] == "00000"
    assert data.test_ids[0] == f"{n_train + n_valid:05d}"  # ids run on across the splits
    header = (tiny_root / "train_split.csv").read_text().splitlines()[0]
    assert header == "Filename,Admiration,Amusement,Determination,Empathic Pain,Excitement,Joy"
    vit = load_feature(next(iter(data.feature_files("vit").values()))).array
    w2v = load_feature(next(iter(data.feature_files("wav2vec2").values()))).array
    assert vit.shape[1] == 384 and w2v.shape[1] == 768


def test_structure_follows_the_real_data(tiny_root: Path) -> None:
    clips = pd.read_csv(tiny_root / "heldout" / "clips.csv", dtype={"Filename": str})
    labels = pd.concat([pd.read_csv(tiny_root / f, dtype={"Filename": str}) for f in
                        ("train_split.csv", "valid_split.csv", "heldout/test_labels.csv")])
    merged = clips.merge(labels, on="Filename")
    y = merged[list(TARGETS)].to_numpy()
    assert ((y == 0).mean() > 0.2) and y.min() >= 0 and y.max() <= 1
    assert np.isclose(y * 6, np.round(y * 6), atol=1e-6).all()  # sixths, stored via float32
    # clips of one seed video share (or nearly share) their label vector
    spread = merged.groupby("seed_video")[list(TARGETS)].std().fillna(0).to_numpy()
    assert np.median(spread) == 0
    # identity dominates the visual stream: same participant, close mean features
    data = ChallengeData(tiny_root, test_list="test_split.csv")
    files = data.feature_files("vit")
    means = {c: load_feature(files[c]).array.mean(0) for c in list(files)[:120]}
    part = clips.set_index("Filename")["participant"]
    pairs_same, pairs_diff = [], []
    keys = list(means)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            d = np.linalg.norm(means[keys[a]] - means[keys[b]])
            (pairs_same if part[keys[a]] == part[keys[b]] else pairs_diff).append(d)
    assert np.mean(pairs_same) < 0.6 * np.mean(pairs_diff)


def test_transcripts_text_features_and_missing_modalities(tiny_root: Path) -> None:
    data = ChallengeData(tiny_root, test_list="test_split.csv")
    empty = {c for c, t in data.transcripts.items() if not t}
    assert 0.15 < len(empty) / len(data.all_ids) < 0.5
    text_files = data.feature_files("text")
    assert not empty & set(text_files)  # no text file where there is no speech
    some = next(c for c in text_files)
    assert load_feature(text_files[some]).array.shape[0] == len(data.transcripts[some].split())
    assert len(data.feature_files("vit")) < len(data.all_ids)  # some faces missing
    summary = read_json(tiny_root / "synth.json")
    assert 0.5 < summary["oracle"]["test"]["mean"] <= 1


def test_same_seed_same_bytes_and_no_silent_replacement(tmp_path: Path,
                                                       tiny_root: Path) -> None:
    again = tmp_path / "again"
    generate(again, replace(TINY, workers=2))
    assert _digest(again) == _digest(tiny_root)
    before = (again / "synth.json").stat().st_mtime_ns
    generate(again, TINY)  # current: kept as it is
    assert (again / "synth.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="other parameters"):
        generate(again, replace(TINY, seed=4))
    other = tmp_path / "other"
    generate(other, replace(TINY, seed=4))
    assert _digest(other)["train_split.csv"] != _digest(tiny_root)["train_split.csv"]


def _word_signal(params: SynthParams) -> float:
    """Mean over targets of the Pearson r between a clip's share of words that are
    emotional for a target and its label for that target (clips with speech)."""
    _, labels, _, transcripts = make_plan(params)
    loadings = make_world(params).word_loadings > 0
    spoken = [i for i, words in enumerate(transcripts) if words]
    share = np.array([loadings[transcripts[i]].mean(axis=0) for i in spoken])
    return float(np.mean([np.corrcoef(share[:, k], labels[spoken, k])[0, 1]
                          for k in range(labels.shape[1])]))


def test_text_meaning_puts_the_clips_own_intensities_in_its_words() -> None:
    base = SynthParams(scale=0.05, seed=3)
    meaning = SynthParams(scale=0.05, seed=3, text_meaning=0.8)
    assert "text_meaning" not in base.identity()  # data made before the knob keeps its id
    assert meaning.identity()["text_meaning"] == 0.8
    assert meaning.identity()["own_words_per_intensity"] == 12  # a rule of its own
    _, labels0, _, words0 = make_plan(base)
    _, labels8, _, words8 = make_plan(meaning)
    np.testing.assert_array_equal(labels0, labels8)  # only the words change
    # the script is kept and the speaker's own words follow it; silent clips stay silent
    assert all(w8[:len(w0)] == w0 for w0, w8 in zip(words0, words8, strict=True))
    assert all(not w8 for w0, w8 in zip(words0, words8, strict=True) if not w0)
    assert sum(map(len, words8)) > sum(map(len, words0))
    assert _word_signal(meaning) > _word_signal(base) + 0.1
    with pytest.raises(ValueError, match="text_meaning must lie in"):
        SynthParams(text_meaning=1.5)
