"""Optuna tuning: the pruner wiring, the overlay, resume, and two workers on one study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from conftest import MODEL, tiny_config
from taemi.config import load_config
from taemi.data import open_data
from taemi.pipeline import ensure_cache, ensure_folds, ensure_tuning
from taemi.tuning import (
    FINISHED,
    PruningReporter,
    best_by_candidate,
    current_study,
    open_study,
    reclaim_dead_trials,
)


def test_median_pruner_stops_a_poor_trial() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=0))
    for _ in range(2):
        trial = study.ask()
        report = PruningReporter(trial)
        for epoch, score in enumerate([0.5, 0.6, 0.7]):
            report(epoch, score)
        study.tell(trial, 0.7)
    poor = study.ask()
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        PruningReporter(poor)(0, 0.1)
    good = study.ask()
    PruningReporter(good)(0, 0.9)  # above the median: goes on


def tune_config(root: Path, work: Path, n_trials: int = 3) -> Path:
    cfg = tiny_config(root, work, train={"epochs": 2, "batch_size": 32, "threads": 1},
                      experiments={"t": {"model": MODEL}},
                      tune={"experiment": "t", "n_trials": n_trials, "folds": [0],
                            "dir": str(work / "tune"), "pruner_startup_trials": 1},
                      paths={"models": str(work / "models")})
    path = work / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg.resolved()))
    return path


def test_tuning_writes_an_overlay_train_accepts_and_resumes(tiny_root: Path,
                                                            tmp_path: Path) -> None:
    path = tune_config(tiny_root, tmp_path)
    cfg = load_config(path)
    overlay = ensure_tuning(cfg)
    tuned = yaml.safe_load(overlay.read_text())["experiments"]["t"]["model"]
    assert set(tuned["modality_dropout"]) == {"text", "visual", "audio"}
    assert {"dropout", "attn_dropout", "head_dropout", "d_model"} <= set(tuned)
    merged = load_config(path, overlays=[overlay])
    assert merged.experiments["t"].model.params()["modality_dropout"] == \
        tuned["modality_dropout"]
    assert merged.experiments["t"].model.params()["d_model"] == MODEL["d_model"]
    ref = current_study(cfg, open_data(cfg))
    study = open_study(cfg, ref)
    assert len(study.get_trials(states=FINISHED)) == 3
    ensure_tuning(cfg)  # resumes: the study already has its trials
    assert len(open_study(cfg, ref).trials) == 3
    ensure_tuning(cfg, n_trials=4)  # asks for one more: exactly one more runs
    assert len(open_study(cfg, ref).get_trials(states=FINISHED)) == 4


def test_only_a_trial_whose_worker_is_gone_is_reclaimed(tmp_path: Path) -> None:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(storage=storage, direction="maximize")
    host = socket.gethostname()
    owners = {"starting": {"host": host}, "dead": {"host": host, "pid": 2**31 - 2},
              "alive": {"host": host, "pid": os.getpid()},
              "elsewhere": {"host": host + "-other", "pid": 2**31 - 2}, "unclaimed": {}}
    trials = {}
    for name, attrs in owners.items():
        trials[name] = study.ask()
        trials[name].suggest_float("rate", 0.0, 1.0)
        for key, value in attrs.items():
            trials[name].set_user_attr(key, value)

    def running() -> set[str]:
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        return {name for name, t in trials.items()
                if states[t.number] == optuna.trial.TrialState.RUNNING}

    assert reclaim_dead_trials(study) == 1  # host named, pid not yet: starting, not dead
    assert running() == {"starting", "alive", "elsewhere", "unclaimed"}
    assert reclaim_dead_trials(study, unclaimed_seconds=0.0) == 1  # no owner, too long
    assert running() == {"starting", "alive", "elsewhere"}
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 2  # retried


def test_two_workers_share_one_study(tiny_root: Path, tmp_path: Path) -> None:
    path = tune_config(tiny_root, tmp_path, n_trials=6)
    cfg = load_config(path)
    ensure_cache(cfg, report=False)
    ensure_folds(cfg)  # written once, before the workers start
    command = [sys.executable, "-m", "taemi.cli", "tune", str(path), "-q"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err.decode()[-2000:]
    trials = open_study(cfg, current_study(cfg, open_data(cfg))).trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # none counted twice
    assert len([t for t in trials if t.state in FINISHED]) == 6  # exactly n_trials
    # none lost half-way: the only unfinished trials lost the race for the last slot
    assert all(t.user_attrs.get("surplus") for t in trials if t.state not in FINISHED)
    pids = {t.user_attrs["pid"] for t in trials}
    assert pids <= {w.pid for w in workers}


def test_one_modality_rate_for_the_published_design(tiny_root: Path, tmp_path: Path) -> None:
    """taemi_paper takes one modality-dropout rate: `modality` tunes it."""
    paper = {"name": "taemi_paper", "d_model": 16, "heads": 2}
    cfg = tiny_config(tiny_root, tmp_path, train={"epochs": 1, "batch_size": 32},
                      experiments={"p": {"model": paper}},
                      tune={"experiment": "p", "n_trials": 1, "folds": [0],
                            "dir": str(tmp_path / "tune"),
                            "ranges": {"modality": (0.0, 0.5), "dropout": (0.0, 0.3)}})
    overlay = yaml.safe_load(ensure_tuning(cfg).read_text())
    params = overlay["experiments"]["p"]["model"]
    assert isinstance(params["modality_dropout"], float)
    assert 0 <= params["modality_dropout"] <= 0.5 and params["d_model"] == 16
    with pytest.raises(ValueError, match="not both"):
        tiny_config(tiny_root, tmp_path, experiments={"p": {"model": paper}},
                    tune={"experiment": "p", "ranges": {"modality": (0, 0.5),
                                                        "text": (0, 0.5)}})


RECIPES = {"train.lr": [0.001, 0.003], "train.epochs": [1, 2],
           "train.loss": [{"mse": 1.0}, {"mse": 1.0, "pearson": 0.5}],
           "model.d_model": [8, 16]}


def test_the_search_chooses_a_recipe_and_the_run_trains_with_it(tiny_root: Path,
                                                                  tmp_path: Path) -> None:
    """`tune.choices`: train settings and model parameters chosen among candidates by the
    same honest inner objective; the chosen recipe replaces the config's, and the config
    with it merged keys the same study (so it stays current)."""
    from taemi.plan import run_config

    path = tune_config(tiny_root, tmp_path, n_trials=4)
    tree = yaml.safe_load(path.read_text())
    tree["experiments"]["t"]["train"] = {"loss": {"mse": 1.0, "ccc": 0.3}}  # replaced whole
    tree["experiments"]["u"] = {"model": {"name": "unimodal_audio"}, "train": {"lr": 0.01}}
    tree["tune"].update(choices=RECIPES, share=["u"])
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    overlay = ensure_tuning(cfg)
    best = yaml.safe_load(overlay.read_text())["experiments"]["t"]
    assert best["train"]["lr"] in RECIPES["train.lr"]
    assert best["train"]["loss"] in RECIPES["train.loss"]
    assert best["model"]["d_model"] in RECIPES["model.d_model"]
    ran = run_config(cfg, open_data(cfg))
    train = ran.train_for("t")
    assert (train.lr, train.epochs, train.loss) == (
        best["train"]["lr"], best["train"]["epochs"], best["train"]["loss"])
    assert ran.experiments["t"].model.params()["d_model"] == best["model"]["d_model"]
    shared = ran.train_for("u")  # `tune.share`: the recipe, not the model parameters
    assert (shared.lr, shared.epochs, shared.loss) == (train.lr, train.epochs, train.loss)
    assert ran.experiments["u"].model.params() == cfg.experiments["u"].model.params()
    trials = pd.read_csv(overlay.parent / "trials.csv")
    best_value = json.loads((overlay.parent / "study.json").read_text())["best_value"]
    completed = trials[trials["state"] == "COMPLETE"]
    assert len(trials) == 4 and completed["value"].max() == pytest.approx(best_value)
    why = best_by_candidate(trials, RECIPES)  # the chosen candidates hold the best value
    for key, value in [("train.lr", train.lr), ("model.d_model", best["model"]["d_model"])]:
        assert why[f"{key} = {json.dumps(value)}"] == pytest.approx(best_value)
    assert (overlay.parent / "choices.png").stat().st_size > 0
    assert current_study(ran, open_data(ran)).key == current_study(cfg, open_data(cfg)).key
    study = open_study(cfg, current_study(cfg, open_data(cfg)))
    tried = {(t.params["train.lr"], t.params["model.d_model"]) for t in study.trials}
    assert len(tried) > 1  # the candidates were searched, not one recipe run four times


@pytest.mark.parametrize(("choices", "message"), [
    ({"train.threads": [1, 2]}, r"no train setting 'threads' to choose"),
    ({"train.lr": [0.001, -1]}, r"'train.lr': candidate -1"),
    ({"optimizer.lr": [0.1]}, r"name a train setting"),
    ({"model.width": [4]}, r"model 'taemi' has no parameter 'width'"),
    ({"model.dropout": [0.1]}, r"a rate tune.ranges searches already"),
    ({"train.lr": []}, r"at least one candidate"),
])
def test_bad_choices_name_the_key(choices: dict, message: str, tiny_root: Path,
                                  tmp_path: Path) -> None:
    from taemi.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_config(tiny_root, tmp_path, experiments={"t": {"model": MODEL}},
                    tune={"experiment": "t", "choices": choices})


@pytest.mark.parametrize(("tune", "message"), [
    ({"share": ["u"]}, r"chooses no train setting to share"),
    ({"share": ["t"], "choices": {"train.lr": [0.001]}}, r"the tuned experiment itself"),
    ({"share": ["nope"], "choices": {"train.lr": [0.001]}}, r"experiment 'nope'"),
])
def test_bad_share_names_the_experiment(tune: dict, message: str, tiny_root: Path,
                                        tmp_path: Path) -> None:
    from taemi.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_config(tiny_root, tmp_path, experiments={
            "t": {"model": MODEL}, "u": {"model": {"name": "unimodal_audio"}}},
            tune={"experiment": "t", **tune})


def test_the_search_starts_from_the_recipes_it_is_given(tiny_root: Path,
                                                         tmp_path: Path) -> None:
    path = tune_config(tiny_root, tmp_path, n_trials=3)
    tree = yaml.safe_load(path.read_text())
    start = [{"train.lr": 0.003, "model.d_model": 8}, {"train.lr": 0.001}]
    tree["tune"].update(choices=RECIPES, start=start)
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    ensure_tuning(cfg)
    ref = current_study(cfg, open_data(cfg))
    trials = sorted(open_study(cfg, ref).trials, key=lambda t: t.number)
    assert (trials[0].params["train.lr"], trials[0].params["model.d_model"]) == ("0.003", "8")
    assert trials[1].params["train.lr"] == "0.001"
    ensure_tuning(load_config(path, ["tune.n_trials=4"]))  # resumed: not queued again
    resumed = open_study(cfg, ref).trials
    assert len(resumed) == 4 and "fixed_params" not in resumed[3].system_attrs
    with pytest.raises(ValueError, match=r"tune.start\[0\] 'train.lr': 0.5 is not one"):
        load_config(path, ["tune.start=[{train.lr: 0.5}]"])
    with pytest.raises(ValueError, match=r"'train.epochs': not among tune.choices"):
        tiny_config(tiny_root, tmp_path, experiments={"t": {"model": MODEL}},
                    tune={"experiment": "t", "choices": {"train.lr": [0.001]},
                          "start": [{"train.epochs": 3}]})


def test_a_time_budget_ends_the_search_and_a_larger_one_resumes_it(
        tiny_root: Path, tmp_path: Path) -> None:
    from taemi.artifacts import read_json
    from taemi.plan import run_config

    path = tune_config(tiny_root, tmp_path, n_trials=50)
    cfg = load_config(path, ["tune.minutes=0.0005"])  # 0.03 s: one trial is over it
    ensure_tuning(cfg)
    ref = current_study(cfg, open_data(cfg))
    assert len(open_study(cfg, ref).get_trials(states=FINISHED)) == 1
    assert read_json(ref.folder / "study.json")["trial_seconds"] > 0
    run_config(cfg, open_data(cfg))  # done by its budget: the run trains with it
    more = load_config(path, ["tune.minutes=60", "tune.n_trials=2"])
    assert current_study(more, open_data(more)).name == ref.name  # the same study, resumed
    ensure_tuning(more)
    assert len(open_study(more, ref).get_trials(states=FINISHED)) == 2


def test_a_recipe_drawn_again_is_not_trained_again(tiny_root: Path, tmp_path: Path) -> None:
    path = tune_config(tiny_root, tmp_path, n_trials=3)
    tree = yaml.safe_load(path.read_text())
    tree["tune"].update(ranges={}, choices={"train.lr": [0.003]}, pruner_startup_trials=5)
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    ensure_tuning(cfg)
    ref = current_study(cfg, open_data(cfg))
    trials = open_study(cfg, ref).get_trials(states=FINISHED)
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0]
    assert len({t.value for t in trials}) == 1
    assert sorted(p.name for p in ref.folder.glob("trial*") if p.is_dir()) == ["trial0"]
