"""Shared fixtures: small generated datasets and hand-made messy files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taemi.config import config_from_dict
from taemi.data import TARGETS
from taemi.pipeline import train_experiments
from taemi.progress import set_quiet
from taemi.synth import SynthParams, generate

set_quiet(True)
# Ray clusters in the tests talk over loopback only (read when ray is first imported)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

TINY = SynthParams(scale=0.02, seed=3, workers=1)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset of ~350 clips; read-only for the tests that share it."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, TINY)
    return root


def tiny_config(root: Path, work: Path, **sections) -> object:
    """A validated config over a generated dataset, writing everything under `work`."""
    tree = {
        "name": "tiny",
        "data": {"root": str(root), "test_list": "test_split.csv",
                 "test_labels": "heldout/test_labels.csv"},
        "cache": {"dir": str(work / "cache"), "steps": {"text": 8, "visual": 8, "audio": 8},
                  "workers": 1},
        "folds": {"path": str(work / "folds" / "folds.csv"), "n_splits": 3},
        "backbones": {"vit-w2v": {"text": "text", "visual": "vit", "audio": "wav2vec2"}},
    }
    for key, value in sections.items():
        tree[key] = value
    return config_from_dict(tree)


def write_pkl(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


def write_labels(path: Path, ids: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 7, size=(len(ids), len(TARGETS))) / 6,
                         columns=list(TARGETS))
    frame.insert(0, "Filename", ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture
def messy_root(tmp_path: Path) -> Path:
    """A hand-made dataset in the organisers' layout carrying each kind of mess."""
    root = tmp_path / "messy"
    write_labels(root / "train_split.csv", [f"{i:05d}" for i in range(0, 6)])
    write_labels(root / "valid_split.csv", [f"{i:05d}" for i in range(6, 9)], seed=1)
    for i in range(9, 12):  # test ids come from the media names
        (root / "test_data" / "raw").mkdir(parents=True, exist_ok=True)
        (root / "test_data" / "raw" / f"{i:05d}.mp4").write_bytes(b"")
    rng = np.random.default_rng(0)
    for i in range(12):
        clip = f"{i:05d}"
        if i == 2:
            continue  # no visual file: modality missing
        array = rng.standard_normal((5 + i, 4)).astype(np.float32)
        if i == 3:
            array[1, 2] = np.nan
            array[4] = np.nan
        if i == 4:
            array = array[0]  # a 1-D array
        if i == 5:
            array = rng.standard_normal((60_123, 4)).astype(np.float32)  # a 16-minute clip
        folder = "test_data/vit" if i >= 9 else "vit"
        write_pkl(root / folder / f"{clip}.pkl", array)
    pd.DataFrame({"Filename": [f"{i:05d}" for i in range(12)],
                  "text": ["hello there", "", "wow", None, *["fine"] * 8]}).to_csv(
        root / "transcripts.csv", index=False)
    return root


MODEL = {"name": "taemi", "d_model": 16, "heads": 2, "layers": 1}


def grid_config(root: Path, work: Path, **train):
    return tiny_config(
        # one thread: bitwise-equal results whatever executor (Ray tasks run on one thread)
        root, work, train={"epochs": 2, "batch_size": 32, "threads": 1, **train},
        experiments={"t": {"model": MODEL, "seeds": [0, 1]}},
        paths={"models": str(work / "models")})


@pytest.fixture(scope="session")
def grid(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("grid")
    cfg = grid_config(tiny_root, work)
    return cfg, train_experiments(cfg)["t"]


def run_config_tree(work: Path) -> dict:
    """A whole `taemi run` on a tiny generated dataset: synth, tune, grid, stack, submit."""
    return {
        "name": "tinyrun",
        "data": {"root": str(work / "data"), "test_list": "test_split.csv",
                 "test_labels": "heldout/test_labels.csv"},
        "synth": {"scale": 0.02, "seed": 5},
        "cache": {"dir": str(work / "cache"), "steps": {"text": 8, "visual": 8, "audio": 8},
                  "workers": 1},
        "folds": {"path": str(work / "folds" / "folds.csv"), "n_splits": 3},
        "backbones": {"vit-w2v": {}, "vit-mel": {"audio": "logmel"}},
        "train": {"epochs": 2, "batch_size": 32, "threads": 1},
        "experiments": {"tiny-taemi": {"model": MODEL},
                        "tiny-audio": {"model": {"name": "linear_audio"},
                                       "backbones": ["vit-w2v"], "robustness": False}},
        "tune": {"experiment": "tiny-taemi", "n_trials": 2, "folds": [0],
                 "dir": str(work / "tune"), "backbone": "vit-w2v"},
        "stack": {"name": "tiny-stack", "experiments": ["tiny-taemi", "tiny-audio"],
                  "lightgbm": {"n_estimators": 50}},
        "submit": {"name": "tiny-stack", "source": "tiny-stack"},
        "tracking": {"uri": f"sqlite:///{work}/mlruns.db"},
        "paths": {"models": str(work / "models"), "ensembles": str(work / "ensembles"),
                  "submissions": str(work / "submissions"), "reports": str(work / "reports"),
                  "runs": str(work / "runs")},
    }


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    """The artifacts of one tiny end-to-end run, and its config file."""
    import yaml

    from taemi.config import load_config
    from taemi.pipeline import run_all

    work = tmp_path_factory.mktemp("run")
    path = work / "tinyrun.yaml"
    path.write_text(yaml.safe_dump(run_config_tree(work)))
    return path, run_all(load_config(path))
