"""Real faults a team meets: stale inputs refused, diverging runs stopped, secrets kept out
of artifacts, and one-line errors (exit 2, or 130 when interrupted) instead of tracebacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import taemi.training
from conftest import MODEL, tiny_config
from taemi.artifacts import read_json
from taemi.cli import main
from taemi.config import ConfigError, config_from_dict
from taemi.data import DataError
from taemi.experiment import Job, is_done, job_fingerprint, labels_digest, open_packs
from taemi.folds import folds_digest, read_folds
from taemi.pipeline import (
    ensure_stack,
    ensure_submission,
    open_data,
    train_experiments,
)
from taemi.training import TrainingDiverged


def _audio_grid(root: Path, work: Path, **sections) -> object:
    return tiny_config(root, work, train={"epochs": 1, "batch_size": 64, "threads": 1},
                       experiments={"a": {"model": {"name": "linear_audio"}}},
                       paths={"models": str(work / "models"),
                              "ensembles": str(work / "ensembles"),
                              "submissions": str(work / "submissions")}, **sections)


def test_a_stale_stack_or_experiment_is_never_submitted(tiny_root: Path, tmp_path: Path
                                                        ) -> None:
    cfg = _audio_grid(tiny_root, tmp_path, stack={"name": "s", "experiments": ["a"],
                                                  "method": "ridge"})
    train_experiments(cfg)
    ensure_stack(cfg)
    assert ensure_submission(cfg, "s", "first").is_file()
    for member in (cfg.paths.models / "a").rglob("test.csv"):  # touched: the same bytes
        os.utime(member, ns=(member.stat().st_atime_ns, member.stat().st_mtime_ns + 10**9))
    assert ensure_submission(cfg, "s", "touched").is_file()  # content decides, not times
    member = cfg.paths.models / "a" / "vit-w2v" / "test.csv"  # other predictions
    member.write_text(member.read_text().replace("0.", "0.0", 1))
    with pytest.raises(DataError, match=r"stale.*taemi stack"):
        ensure_submission(cfg, "s", "second")
    assert ensure_submission(cfg, "a", "third").is_file()  # the experiment is current
    retrained = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    with pytest.raises(DataError, match=r"stale.*taemi train"):
        ensure_submission(retrained, "a", "fourth")  # the config's jobs differ


def test_corrected_labels_retrain(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    cfg = _audio_grid(root, tmp_path)
    train_experiments(cfg)
    data = open_data(cfg)
    folds = read_folds(cfg.folds.path)
    job = Job("a", "vit-w2v", 0, 0)
    packs = open_packs(cfg, data, "vit-w2v")
    print_ = job_fingerprint(cfg, job, packs, folds_digest(folds), labels_digest(data.labels))
    assert is_done(job.folder(cfg.paths.models), print_)
    train = pd.read_csv(root / "train_split.csv", dtype={"Filename": str})
    train.loc[0, "Joy"] = 1.0 - train.loc[0, "Joy"]  # one corrected label
    train.to_csv(root / "train_split.csv", index=False)
    fixed = open_data(cfg)
    assert job_fingerprint(cfg, job, packs, folds_digest(folds),
                           labels_digest(fixed.labels)) != print_


def test_a_diverging_run_stops_with_one_line(tiny_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding(torch.nn.Module):
        def __init__(self, weights) -> None:
            super().__init__()

        def forward(self, pred, target, gate_logits=None):
            return (pred - target).pow(2).mean() * float("nan")

    monkeypatch.setattr(taemi.training, "MixedLoss", Exploding)
    cfg = tiny_config(tiny_root, tmp_path, train={"epochs": 2, "threads": 1},
                      experiments={"t": {"model": MODEL}},
                      paths={"models": str(tmp_path / "models")})
    with pytest.raises(TrainingDiverged, match="no longer finite at epoch 1"):
        train_experiments(cfg)
    assert not list((tmp_path / "models").rglob("done.json"))


def test_config_errors_name_the_key(tiny_root: Path, tmp_path: Path) -> None:
    tree = tiny_config(tiny_root, tmp_path).resolved()
    with pytest.raises(ConfigError, match=r"train.loss"):
        config_from_dict({**tree, "train": {"loss": {}}})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train.device"):
            taemi.training.pick_device("cuda")


def test_password_never_reaches_an_artifact(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _audio_grid(tiny_root, tmp_path, tune={
        "experiment": "a", "storage": "postgresql://kit:s3cret@db.example:5432/optuna",
        "apply": False})  # trains without a study
    train_experiments(cfg)
    saved = (cfg.paths.models / "a" / "config.json").read_text()
    assert "s3cret" not in saved
    assert read_json(cfg.paths.models / "a" / "config.json")["tune"]["storage"] == \
        "postgresql://kit:***@db.example:5432/optuna"


def _cli(tmp_path: Path, tree: dict, *argv: str) -> int:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return main([argv[0], str(path), "-q", *argv[1:]])


@pytest.mark.parametrize("case,command,expected", [
    ("no experiments", "run", "defines no experiments"),
    ("unknown fold", "train", "experiments.a.folds"),
    ("no tune section", "tune", "no `tune` section"),
    ("models path is a file", "train", "Not a directory"),
    ("no folds", "train", "'experiments.a.folds': List should have at least 1 item"),
    ("a fold twice", "train", "'experiments.a.folds': Value error, each value once"),
    ("a model without its modality", "train",
     "model 'linear_audio' needs the audio modality, which backbone 'vit-w2v' does not have"),
    ("a backbone without any modality", "train", "backbone 'vit-w2v' gives no modality"),
    ("a stacker value LightGBM refuses", "stack",
     "stack.lightgbm.n_estimators: LightGBM refuses them"),
    ("a name that leaves its folder", "report", "config key 'name': String should match"),
    ("an override that is not YAML", "train", "override 'experiments.a.seeds=[0,1'"),
    ("an override with a YAML tag", "train", "the value is not plain YAML"),
    ("a password holding @", "tune", "the password holds '@'; write it as %40"),
    ("no test clips", "train", "no test clips in"),
])
def test_one_line_errors(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                         case: str, command: str, expected: str) -> None:
    tree = _audio_grid(tiny_root, tmp_path).resolved()
    extra: list[str] = []
    if case == "no experiments":
        tree["experiments"] = {}
    elif case == "unknown fold":
        tree["experiments"]["a"]["folds"] = [7]
    elif case == "models path is a file":
        (tmp_path / "afile").write_text("")
        tree["paths"]["models"] = str(tmp_path / "afile" / "models")
    elif case == "no folds":
        tree["experiments"]["a"]["folds"] = []
    elif case == "a fold twice":
        tree["experiments"]["a"]["folds"] = [0, 0]
    elif case == "a model without its modality":
        tree["backbones"]["vit-w2v"]["audio"] = None
    elif case == "a backbone without any modality":
        tree["backbones"]["vit-w2v"] = {"text": None, "visual": None, "audio": None}
    elif case == "a stacker value LightGBM refuses":
        tree["stack"] = {"name": "s", "experiments": ["a"], "lightgbm": {"n_estimators": -5}}
    elif case == "a name that leaves its folder":
        tree["name"] = "../../evil"
    elif case == "an override that is not YAML":
        extra = ["--set", "experiments.a.seeds=[0,1"]
    elif case == "an override with a YAML tag":
        extra = ["--set", "experiments.a.seeds=!!python/object/apply:os.system [echo hi]"]
    elif case == "a password holding @":
        tree["tune"] = {"experiment": "a", "n_trials": 1,
                        "storage": "postgresql://kit:pa@ss@127.0.0.1:1/optuna"}
    elif case == "no test clips":
        (tmp_path / "no-tests.csv").write_text("Filename\n")
        tree["data"]["test_list"] = str(tmp_path / "no-tests.csv")
        tree["data"]["test_labels"] = None
    assert _cli(tmp_path, tree, command, *extra) == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    # one line, or a config's "invalid config" line with one line per bad key under it
    assert len(lines) == 1 or (lines[0].endswith("invalid config") and len(lines) == 2)
    assert expected in err and "Traceback" not in err and lines[0].startswith("taemi ")
    assert "ss@" not in err and "pa@" not in err  # no part of a password


def test_every_credential_is_masked() -> None:
    from taemi.config import mask_secrets

    text = ("MLflow cannot reach http://user:PASS@host/ and postgresql://kit:p@ss:w@rd@db:5432/x"
            " but https://host/path@x is no credential")
    masked = mask_secrets(text)
    assert "PASS" not in masked and "p@ss" not in masked and "rd@db" not in masked
    assert "http://user:***@host/" in masked and "postgresql://kit:***@db:5432/x" in masked
    assert "https://host/path@x" in masked


def test_synth_arguments_follow_the_config_rules(tmp_path: Path, capsys) -> None:
    for argv in (["--scale", "nan"], ["--scale", "0"], ["--scale", "2"],
                 ["--text-meaning", "2"]):
        assert main(["synth", str(tmp_path / "d"), *argv, "-q"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"taemi synth: error: {argv[0]}") and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "synth.json").write_text("{not json")
    assert main(["synth", str(tmp_path / "d"), "--scale", "0.02", "-q"]) == 2
    assert "synth.json is damaged (not JSON): pass --force" in capsys.readouterr().err


def test_a_killed_synth_leaves_nothing_behind(tmp_path: Path) -> None:
    from taemi.artifacts import _host_tag
    from taemi.synth import SynthParams, generate

    dead = tmp_path / f".d.{_host_tag()}-{2**31 - 2}-abc123.tmp"
    (dead / "vit").mkdir(parents=True)
    generate(tmp_path / "d", SynthParams(scale=0.02, seed=1, workers=1))
    assert not dead.exists() and (tmp_path / "d" / "synth.json").is_file()


def test_a_zombie_is_not_alive() -> None:
    """A worker that died while its parent polls stays a zombie until reaped: its trial and
    temporaries must count as its work's end, or a tuning run waits on it for ever."""
    from taemi.artifacts import process_alive

    assert process_alive(os.getpid()) and not process_alive(2**31 - 2)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert process_alive(child.pid)
    child.kill()  # not reaped yet: a zombie once the signal lands
    deadline = time.monotonic() + 30
    while process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(f"/proc/{child.pid}").exists() and not process_alive(child.pid)
    child.wait()


def test_small_path_promises(tiny_root: Path, tmp_path: Path, monkeypatch) -> None:
    """`~` is expanded in config paths; `--name final.csv` writes final.csv."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = config_from_dict({"data": {"root": "~/data"}, "paths": {"models": "~/m"}})
    assert cfg.data.root == tmp_path / "data" and cfg.paths.models == tmp_path / "m"
    grid = _audio_grid(tiny_root, tmp_path)
    train_experiments(grid)
    tree = grid.resolved()
    assert _cli(tmp_path, tree, "submit", "--from", "a", "--name", "final.csv") == 0
    assert (tmp_path / "submissions" / "final.csv").is_file()
    assert not (tmp_path / "submissions" / "final.csv.csv").exists()


def test_interrupted_command_says_how_to_resume(tiny_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import taemi.pipeline

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(taemi.pipeline, "train_experiments", interrupt)
    assert _cli(tmp_path, _audio_grid(tiny_root, tmp_path).resolved(), "train") == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err


def test_the_real_data_recipe_runs_on_the_organisers_layout(tiny_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    """configs/abaw.yaml end to end, with test ids read from test_data/raw as on the real
    data (sizes shrunk by overrides only)."""
    root = tmp_path / "EMI"
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns("heldout", "test_split.csv"))
    (root / "test_data" / "raw").mkdir(parents=True)
    for clip in pd.read_csv(tiny_root / "test_split.csv", dtype=str)["Filename"]:
        (root / "test_data" / "raw" / f"{clip}.mp4").write_bytes(b"")
    small = {"text": 8, "visual": 8, "audio": 8}
    overrides = [f"data.root={root}", f"cache.dir={tmp_path / 'cache'}",
                 f"cache.steps={small}", "cache.workers=1",
                 f"folds.path={tmp_path / 'folds' / 'folds.csv'}", "folds.n_splits=3",
                 "train.epochs=1", "train.threads=1", "experiments.abaw-taemi.seeds=[0]",
                 "experiments.abaw-taemi.model.d_model=16", "tune.n_trials=1",
                 "tune.epochs=1", f"tune.dir={tmp_path / 'tune'}"]
    overrides += [f"paths.{p}={tmp_path / p}" for p in
                  ("models", "ensembles", "submissions", "reports")]
    argv = ["run", str(Path(__file__).parents[1] / "configs" / "abaw.yaml"), "-q"]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "abaw-stack" in out and (tmp_path / "submissions" / "abaw-stack.csv").is_file()
    assert main(["validate", str(tmp_path / "submissions" / "abaw-stack.csv"),
                 "--test-ids", str(tiny_root / "test_split.csv")]) == 0


def test_quiet_tuning_prints_no_optuna_line(tiny_root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    tree = _audio_grid(tiny_root, tmp_path).resolved()
    tree["experiments"]["a"]["model"] = dict(MODEL)
    tree["tune"] = {"experiment": "a", "n_trials": 1, "epochs": 1, "dir": str(tmp_path / "t")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = subprocess.run([sys.executable, "-m", "taemi.cli", "tune", str(path), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "A new study created" not in out.stderr and "[I " not in out.stderr


def test_messy_files_are_named_in_one_line(tmp_path: Path) -> None:
    import numpy as np

    from taemi.data import load_feature, read_transcripts

    broken = tmp_path / "transcripts.csv"
    broken.write_text('Filename,text\n00001,"never closed\n00002,fine\n')
    with pytest.raises(DataError) as caught:
        read_transcripts(broken)
    assert "\n" not in str(caught.value) and str(broken) in str(caught.value)
    odd = tmp_path / "00003.pkl"
    with open(odd, "wb") as handle:
        import pickle

        pickle.dump(np.array([[1, "a"]], dtype=object), handle)
    with pytest.raises(DataError, match=r"got ndarray of dtype object"):
        load_feature(odd)
