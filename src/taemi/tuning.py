"""Optuna tunes an experiment's dropout rates (`taemi tune`).

Searched: each modality's dropout probability, attention, hidden and head dropout, in the
ranges of the config's `tune` section. The objective is the mean over the chosen folds of
the best mean Pearson on each fold's inner selection split (part of the fold's own
training rows, `taemi.folds.selection_split`): no row a CV score is computed on ever
reaches a trial, and trials use seeds no final job uses. Every epoch is reported to the
trial and a MedianPruner stops poor trials early.

    runs/tune/<study>/optuna.journal   the study (JournalFileBackend: safe for several
                                       worker processes on one machine)
    runs/tune/<study>/best.yaml        the best parameters, as a config overlay:
                                       taemi train CONFIG --overlay .../best.yaml

For workers on many machines give `tune.storage` an RDB URL (PostgreSQL, MySQL). A study
resumes where it stopped: `n_trials` counts finished trials across every run and worker,
and a trial whose worker died on this machine is marked failed and its parameters retried.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import optuna
import yaml

from taemi.artifacts import stable_hash, write_text
from taemi.config import Config, ConfigError, TuneConfig
from taemi.data import ChallengeData, labels_matrix
from taemi.experiment import fold_inputs, open_packs
from taemi.folds import read_folds
from taemi.progress import echo, is_quiet

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
MODALITIES = ("text", "visual", "audio")


def study_dir(cfg: Config) -> Path:
    tune = _tune(cfg)
    return tune.dir / study_name(cfg)


def study_name(cfg: Config) -> str:
    tune = _tune(cfg)
    return tune.study_name or f"{cfg.name}-{tune.experiment}"


def _tune(cfg: Config) -> TuneConfig:
    if cfg.tune is None:
        raise ConfigError("the config has no `tune` section: add one (see configs/demo.yaml) "
                          "to run `taemi tune`")
    return cfg.tune


def open_study(cfg: Config) -> optuna.Study:
    """Create or load the study on its storage (a journal file unless an RDB URL is given)."""
    tune = _tune(cfg)
    if tune.storage:
        storage = optuna.storages.RDBStorage(
            tune.storage, heartbeat_interval=60, grace_period=180,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2))
    else:
        folder = study_dir(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                         n_warmup_steps=tune.pruner_warmup_epochs)
    sampler = optuna.samplers.TPESampler(seed=tune.seed)
    try:  # loading writes nothing; creating an existing study would append to the journal
        return optuna.load_study(study_name=study_name(cfg), storage=storage, sampler=sampler,
                                 pruner=pruner)
    except KeyError:
        return optuna.create_study(study_name=study_name(cfg), storage=storage,
                                   direction="maximize", sampler=sampler, pruner=pruner,
                                   load_if_exists=True)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def reclaim_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process on this host is gone; retry their params."""
    host = socket.gethostname()
    reclaimed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or _alive(int(attrs.get("pid", -1))):
            continue
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=True)
        reclaimed += 1
    return reclaimed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def suggest(trial: optuna.Trial, ranges: dict[str, tuple[float, float]]) -> dict:
    """Model parameters for one trial: `modality_dropout` plus the other dropout rates."""
    values = {name: trial.suggest_float(name, low, high) for name, (low, high) in
              sorted(ranges.items())}
    params: dict = {k: v for k, v in values.items() if k not in MODALITIES}
    rates = {k: v for k, v in values.items() if k in MODALITIES}
    if rates:
        params["modality_dropout"] = rates
    return params


def merged_params(cfg: Config, params: dict) -> dict:
    """The experiment's model parameters with the tuned ones on top."""
    base = cfg.experiments[_tune(cfg).experiment].model.params()
    out = {**base, **{k: v for k, v in params.items() if k != "modality_dropout"}}
    if "modality_dropout" in params:
        out["modality_dropout"] = {**(base.get("modality_dropout") or {}),
                                   **params["modality_dropout"]}
    return out


class PruningReporter:
    """The trainer's per-epoch callback: report to the trial, stop it if it is poor."""

    def __init__(self, trial: optuna.Trial, first_step: int = 0) -> None:
        self.trial = trial
        self.first_step = first_step

    def __call__(self, epoch: int, score: float) -> None:
        self.trial.report(score, step=self.first_step + epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch + 1}: {score:.4f} is below the median")


def trial_seed(seed: int, fold: int) -> int:
    """A trial's seed, never a final job's (`seed * 1000 + fold`): a tuned trial does not
    stand in for the model that is then scored."""
    return seed * 1000 + 500 + fold


def make_objective(cfg: Config, data: ChallengeData):
    """The study's objective: mean best selection-split Pearson over the tuning folds."""
    from taemi.models import create_model
    from taemi.training import fit_fold, seed_everything

    tune = _tune(cfg)
    exp = cfg.experiments[tune.experiment]
    train_cfg = cfg.train_for(tune.experiment)
    if tune.epochs:
        train_cfg = train_cfg.model_copy(update={"epochs": tune.epochs})
    backbone = tune.backbone or cfg.backbones_for(tune.experiment)[0]
    folds = read_folds(cfg.folds.path)
    packs = open_packs(cfg, data, backbone)
    # the objective never sees a scored row: each tuning fold's model learns from part of
    # that fold's training rows and is judged on the rest (the same inner split as the
    # final jobs); the fold itself, and so its OOF score, plays no part
    prepared = {f: fold_inputs(cfg, data, folds, packs, f, "inner", train_cfg.inner_fraction)
                for f in tune.folds}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        params = merged_params(cfg, suggest(trial, tune.ranges))
        scores = []
        for i, fold in enumerate(tune.folds):
            inputs, part_ids, index = prepared[fold]
            seed = trial_seed(tune.seed, fold)
            seed_everything(seed)
            model = create_model(exp.model.name, dims=inputs.dims, **params)
            workdir = study_dir(cfg) / f"trial{trial.number}" / f"fold{fold}"
            outcome = fit_fold(
                model, inputs, index["fit"], labels_matrix(data.labels, part_ids["fit"]),
                index["select"], labels_matrix(data.labels, part_ids["select"]), train_cfg,
                seed, workdir, stable_hash(params),
                on_epoch=PruningReporter(trial, i * train_cfg.epochs),
                desc=f"trial {trial.number} fold {fold}")
            for leftover in ("model.pt", "last.pt"):
                (workdir / leftover).unlink(missing_ok=True)
            scores.append(outcome.best_score)
        return float(np.mean(scores))

    return objective


def write_overlay(cfg: Config, study: optuna.Study) -> Path:
    """The best trial's parameters as a YAML overlay for `taemi train --overlay`."""
    tune = _tune(cfg)
    best = study.best_trial
    params = merged_params(cfg, suggest(optuna.trial.FixedTrial(best.params), tune.ranges))
    overlay = {"experiments": {tune.experiment: {"model": params}}}
    header = (f"# Optuna study {study_name(cfg)}: best of {finished_trials(study)} trials, "
              f"trial {best.number}, mean Pearson {best.value:.4f}\n")
    path = study_dir(cfg) / "best.yaml"
    write_text(path, header + yaml.safe_dump(overlay, sort_keys=True))
    return path


def run_tuning(cfg: Config, data: ChallengeData, n_trials: int | None = None) -> Path:
    """Run (or resume) the study until it has `n_trials` finished trials; write best.yaml."""
    tune = _tune(cfg)
    target = n_trials or tune.n_trials
    study = open_study(cfg)
    reclaimed = reclaim_dead_trials(study)
    if reclaimed:
        echo(f"tune: {reclaimed} trial(s) of a dead worker marked failed and queued again")
    if finished_trials(study) < target:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(make_objective(cfg, data), n_trials=target,
                       callbacks=[optuna.study.MaxTrialsCallback(target, states=FINISHED)],
                       show_progress_bar=not is_quiet())
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"study {study_name(cfg)} has no completed trial")
    return write_overlay(cfg, study)
