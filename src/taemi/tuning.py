"""Optuna tunes an experiment's dropout rates (`taemi tune`).

Searched: each modality's dropout probability, attention, hidden and head dropout, in the
ranges of the config's `tune` section. The objective is the mean over the chosen folds of
the best mean Pearson on each fold's inner selection split (part of the fold's own
training rows, `taemi.folds.selection_split`); trials use seeds no final job uses. Every
epoch is reported to the trial and a MedianPruner stops poor trials early.

What the choice saw, plainly: a tuning fold's training rows are the other folds' rows,
so the chosen rates were fitted and judged on rows that those folds' OOF predictions
score. The CV of a tuned experiment on those folds has seen the choice; `study.json`,
best.yaml, the experiment's cv.json and the report name those folds.

A study is keyed by everything its objective reads (`study_inputs`: the tuning
backbone's packs by content, folds, labels, the model and its code, train settings,
ranges, tuning folds, epochs and seeds): `<base>-<key[:8]>`, base being `tune.study_name`
or `<config name>-<experiment>`. A changed input is a new study; `n_trials`, workers and
storage are in no key, so more trials resume the same study.

    runs/tune/<study>/optuna.journal   the study (JournalFileBackend: safe for several
                                       worker processes on one machine)
    runs/tune/<study>/best.yaml        the best parameters, as a config overlay, applied
                                       by every command while `tune.apply` is on
    runs/tune/<study>/study.json       its key, trials, and the folds its choice saw
    runs/tune/<study>/trials.csv       every trial: state, value, seconds, parameters
    runs/tune/<study>/choices.png      with `tune.choices`: the best trial of each
                                       candidate, the reason for the choice at a glance

Several workers share one study. `tune.workers` (or `--workers`) runs that many worker
processes on this machine, each with its share of the cores as torch threads; on many
machines give `tune.storage` an RDB URL (PostgreSQL: `postgresql://user:pw@host/db`) and
start `taemi tune` on each. A study resumes where it stopped. `n_trials` is exact across
every run and worker: a worker starts a trial only while finished plus running trials fall
short of it, and one that loses that race to another worker marks its trial failed
(`surplus`) before it runs. A trial whose worker died is failed and its parameters queued
again: on the journal file as soon as another worker sees the process gone; on RDB storage
after `tune.grace_period` seconds without a heartbeat (a worker on any machine).
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial

from taemi.artifacts import (
    process_alive,
    read_json,
    stable_hash,
    write_csv,
    write_json,
    write_text,
)
from taemi.config import Config, ConfigError, TrainConfig, TuneConfig, config_from_dict, mask_url
from taemi.data import ChallengeData, labels_matrix, open_data
from taemi.experiment import fold_inputs, keyed_train_settings, labels_digest, open_packs
from taemi.folds import HOLDOUT, folds_digest, read_folds
from taemi.identity import KIT_VERSION
from taemi.models import model_code_digest
from taemi.plots import bar_chart
from taemi.progress import echo, is_quiet, progress, set_quiet

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RUNNING = optuna.trial.TrialState.RUNNING
MODALITIES = ("text", "visual", "audio")


@dataclass(frozen=True)
class StudyRef:
    """One study: its name on the storage, its folder (journal, best.yaml, study.json), its
    key, and the CV folds whose rows its choices saw."""

    name: str
    folder: Path
    key: str
    saw_folds: tuple[int, ...]
    parts: dict = field(default_factory=dict, compare=False, hash=False)  # inputs' digests


# tune settings that change how the search runs, not what a trial computes: in no key
UNKEYED_TUNE_KEYS = {"n_trials", "minutes", "workers", "storage", "study_name", "dir",
                     "apply", "share", "heartbeat_interval", "grace_period"}


def study_base(cfg: Config) -> str:
    tune = _tune(cfg)
    return tune.study_name or f"{cfg.name}-{tune.experiment}"


def tune_backbone(cfg: Config) -> str:
    tune = _tune(cfg)
    return tune.backbone or cfg.backbones_for(tune.experiment)[0]


def study_inputs(cfg: Config, data: ChallengeData, folds: pd.DataFrame,
                 pack_keys: dict[str, str] | None = None) -> dict:
    """Everything a trial's objective reads: the tuning backbone's packs (by content), the
    folds, the labels, the model and its code, the train settings that change results, the
    ranges, tuning folds, epochs and seeds, and the kit's version."""
    tune = _tune(cfg)
    backbone = tune_backbone(cfg)
    if pack_keys is None:
        pack_keys = {r: p.key for r, p in open_packs(cfg, data, backbone).items()}
    spec = cfg.experiments[tune.experiment].model
    chosen = {key.partition(".")[2] for key in tune.choices if key.startswith("train.")}
    train = keyed_train_settings(cfg.train_for(tune.experiment).model_dump(mode="json"))
    return {
        "kit": KIT_VERSION, "code": model_code_digest(spec.name),
        "model": untuned_params(spec.resolved(), tune.ranges, tune.choices),
        "train": {k: v for k, v in train.items() if k not in chosen},
        # without choices the key is what it was before they existed: no study re-tunes
        "tune": tune.model_dump(mode="json", exclude=UNKEYED_TUNE_KEYS | {
            k for k in ("choices", "start") if not getattr(tune, k)}),
        "backbone": backbone, "packs": dict(sorted(pack_keys.items())),
        "folds": folds_digest(folds), "labels": labels_digest(data.labels),
    }


def untuned_params(params: dict, ranges: dict, choices: dict | None = None) -> dict:
    """The model parameters the search does not set: a study's key leaves the tuned ones
    out, so the config with the best parameters merged keys the same study."""
    tuned = {k for k in ranges if k not in (*MODALITIES, "modality")}
    tuned |= {k.partition(".")[2] for k in choices or {} if k.startswith("model.")}
    out = {k: v for k, v in params.items() if k not in tuned}
    rates = out.get("modality_dropout")
    if "modality" in ranges:
        out.pop("modality_dropout", None)
    elif isinstance(rates, dict):
        out["modality_dropout"] = {m: r for m, r in rates.items() if m not in ranges}
    elif ranges.keys() & set(MODALITIES):
        out.pop("modality_dropout", None)
    if out.get("modality_dropout") == {}:  # every rate tuned: as if none were given
        out.pop("modality_dropout")
    return out


def seen_folds(folds: pd.DataFrame, tuning_folds: list[int]) -> tuple[int, ...]:
    """The CV folds whose rows a study's trials learn from or are judged on: every fold's
    training rows are the other folds' rows, so these are scored by the CV."""
    cv = sorted(int(f) for f in folds["fold"].unique() if f != HOLDOUT)
    return tuple(f for f in cv if any(f != t for t in tuning_folds))


def current_study(cfg: Config, data: ChallengeData, folds: pd.DataFrame | None = None,
                  pack_keys: dict[str, str] | None = None) -> StudyRef:
    """The study these inputs make: `<base>-<key>` (a changed input is a new study)."""
    folds = read_folds(cfg.folds.path) if folds is None else folds
    inputs = study_inputs(cfg, data, folds, pack_keys)
    key = stable_hash(inputs)
    name = f"{study_base(cfg)}-{key[:8]}"
    return StudyRef(name, _tune(cfg).dir / name, key, seen_folds(folds, _tune(cfg).folds),
                    {k: stable_hash(v, 8) for k, v in inputs.items()})


def _tune(cfg: Config) -> TuneConfig:
    if cfg.tune is None:
        raise ConfigError("the config has no `tune` section: add one (see configs/demo.yaml) "
                          "to run `taemi tune`")
    return cfg.tune


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random state is seeded by each trial's number (and the tune seed).

    One seed per sampler made every worker draw the same parameters while the study was
    still sampling at random: two workers ran the same trials. Seeding by trial number
    gives each trial its own draw whichever worker runs it, and one worker's study stays
    reproducible. `constant_liar` keeps workers from piling onto one region while their
    trials run."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._tpe = self._for(0)

    def _for(self, number: int) -> optuna.samplers.TPESampler:
        return optuna.samplers.TPESampler(seed=self.seed * 1_000_003 + number,
                                          constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial,
                    state: optuna.trial.TrialState, values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)


def study_storage(cfg: Config, folder: Path) -> optuna.storages.BaseStorage:
    """The RDB of `tune.storage`, or the journal file in the study's folder."""
    tune = _tune(cfg)
    if tune.storage:
        return _rdb_storage(tune)
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))


def open_study(cfg: Config, ref: StudyRef) -> optuna.Study:
    """Create or load the study on its storage (a journal file unless an RDB URL is given)."""
    tune = _tune(cfg)
    if is_quiet():  # -q: not even Optuna's "A new study created"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage(cfg, ref.folder)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                         n_warmup_steps=tune.pruner_warmup_epochs)
    sampler = TrialSeededTPE(tune.seed)
    try:  # loading writes nothing; creating an existing study would append to the journal
        return optuna.load_study(study_name=ref.name, storage=storage, sampler=sampler,
                                 pruner=pruner)
    except KeyError:
        adopt_legacy_study(cfg, ref, storage)
        return optuna.create_study(study_name=ref.name, storage=storage,
                                   direction="maximize", sampler=sampler, pruner=pruner,
                                   load_if_exists=True)


LEGACY_MARK = "carried.json"


def adopt_legacy_study(cfg: Config, ref: StudyRef, storage: optuna.storages.BaseStorage
                       ) -> bool:
    """Copy a study that a kit before study keys ran (named `<base>`, its inputs never
    recorded) into `ref`, once, when its trials searched the same ranges; True if done."""
    base = study_base(cfg)
    old_folder = _tune(cfg).dir / base
    if (old_folder / LEGACY_MARK).is_file():
        return False
    old_storage = storage if _tune(cfg).storage else (
        study_storage(cfg, old_folder) if (old_folder / "optuna.journal").is_file() else None)
    if old_storage is None:
        return False
    try:
        old = optuna.load_study(study_name=base, storage=old_storage)
    except KeyError:
        return False
    spaces = {tuple(sorted((k, (d.low, d.high)) for k, d in t.distributions.items()))
              for t in old.get_trials(deepcopy=False, states=FINISHED)}
    wanted = tuple(sorted((k, tuple(v)) for k, v in _tune(cfg).ranges.items()))
    if spaces != {wanted}:
        return False
    optuna.copy_study(from_study_name=base, from_storage=old_storage, to_storage=storage,
                      to_study_name=ref.name)
    write_json(old_folder / LEGACY_MARK, {"carried_to": ref.name, "key": ref.key})
    return True


def rdb_url(url: str) -> str:
    """SQLAlchemy's URL for a database: plain PostgreSQL URLs use the psycopg (3) driver
    the kit installs (SQLAlchemy alone would look for psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def _rdb_storage(tune: TuneConfig) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        return optuna.storages.RDBStorage(
            rdb_url(tune.storage), heartbeat_interval=tune.heartbeat_interval,
            grace_period=tune.grace_period,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2))
    except (ArgumentError, OperationalError, ImportError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ConfigError(f"config key 'tune.storage' ({mask_url(tune.storage)}): cannot "
                          f"open the study database: {reason}") from None


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


UNCLAIMED_SECONDS = 300.0


def reclaim_dead_trials(study: optuna.Study, unclaimed_seconds: float = UNCLAIMED_SECONDS
                        ) -> int:
    """Fail RUNNING trials whose worker process on this host is gone; retry their params.

    A trial names its worker (host, then pid: two writes) as its objective starts; one that
    names only part of it is starting, not dead (failing it then was a flake: its worker
    could no longer report it). One that names none after `unclaimed_seconds` lost its
    worker between Optuna's ask and the objective, and would be waited on for ever.
    For the journal file only (one machine by construction): on RDB storage hosts can share
    a name (containers) and a pid means nothing elsewhere, so there the heartbeat decides."""
    if not isinstance(study._storage, optuna.storages.JournalStorage):
        return 0
    reclaimed = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _worker_gone(trial, unclaimed_seconds):
            continue
        try:  # two workers may reclaim it at once: the journal lets one of them fail it
            study._storage.set_trial_state_values(trial._trial_id,
                                                  optuna.trial.TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        # queued by the one that failed it (skip_if_exists would match the failed trial
        # itself, and so never queue it)
        study.enqueue_trial(trial.params)
        reclaimed += 1
    return reclaimed


def _worker_gone(trial: FrozenTrial, unclaimed_seconds: float) -> bool:
    """A running trial's worker is known gone: it named this host and a pid that no longer
    runs, or it named no worker at all for `unclaimed_seconds`."""
    attrs = trial.user_attrs
    if "host" not in attrs and "pid" not in attrs:
        started = trial.datetime_start
        return started is not None and \
            (datetime.datetime.now() - started).total_seconds() >= unclaimed_seconds
    return attrs.get("host") == socket.gethostname() and "pid" in attrs and \
        not process_alive(int(attrs["pid"]))


def suggest(trial: optuna.Trial, ranges: dict[str, tuple[float, float]]) -> dict:
    """Model parameters for one trial: `modality_dropout` (a rate per modality, or with
    `modality` one rate for all, as `taemi_paper` takes it) plus the other dropout rates."""
    values = {name: trial.suggest_float(name, low, high) for name, (low, high) in
              sorted(ranges.items())}
    params: dict = {k: v for k, v in values.items() if k not in (*MODALITIES, "modality")}
    rates = {k: v for k, v in values.items() if k in MODALITIES}
    if "modality" in values:
        params["modality_dropout"] = values["modality"]
    elif rates:
        params["modality_dropout"] = rates
    return params


def enqueue_start(study: optuna.Study, tune: TuneConfig) -> None:
    """Queue `tune.start`'s recipes (each once: a resumed study does not queue them again)."""
    for recipe in tune.start:
        study.enqueue_trial({k: json.dumps(v, sort_keys=True) for k, v in recipe.items()},
                            skip_if_exists=True)


def suggest_choices(trial: optuna.Trial, choices: dict[str, list]) -> tuple[dict, dict]:
    """One trial's recipe choices: (model parameters, train settings). Optuna stores each
    as its candidate's JSON text, so a loss mix (a mapping) is a candidate like any other."""
    model, train = {}, {}
    for key, values in sorted(choices.items()):
        picked = json.loads(trial.suggest_categorical(key, [json.dumps(v, sort_keys=True)
                                                            for v in values]))
        section, _, name = key.partition(".")
        (model if section == "model" else train)[name] = picked
    return model, train


def merged_params(cfg: Config, params: dict) -> dict:
    """The experiment's model parameters with the tuned ones on top."""
    base = cfg.experiments[_tune(cfg).experiment].model.params()
    out = {**base, **params}
    if isinstance(params.get("modality_dropout"), dict):  # per modality: on top of the base
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


def make_objective(cfg: Config, data: ChallengeData, target: int, ref: StudyRef):
    """The study's objective: mean best selection-split Pearson over the tuning folds."""
    import torch

    from taemi.models import create_model
    from taemi.training import fit_fold, seed_everything

    tune = _tune(cfg)
    exp = cfg.experiments[tune.experiment]
    train_cfg = cfg.train_for(tune.experiment)
    if tune.epochs:
        train_cfg = train_cfg.model_copy(update={"epochs": tune.epochs})
    backbone = tune_backbone(cfg)
    folds = read_folds(cfg.folds.path)
    packs = open_packs(cfg, data, backbone)
    # the objective never sees a scored row: each tuning fold's model learns from part of
    # that fold's training rows and is judged on the rest (the same inner split as the
    # final jobs); the fold itself, and so its OOF score, plays no part
    prepared = {f: fold_inputs(cfg, data, folds, packs, f, "inner", train_cfg.inner_fraction)
                for f in tune.folds}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("host", socket.gethostname())  # first: a surplus trial too
        trial.set_user_attr("pid", os.getpid())  # names its worker
        claim_or_fail(trial.study, trial, target)
        trial.set_user_attr("threads", torch.get_num_threads())
        model_choices, train_choices = suggest_choices(trial, tune.choices)
        params = merged_params(cfg, {**suggest(trial, tune.ranges), **model_choices})
        recipe = TrainConfig.model_validate({**train_cfg.model_dump(), **train_choices})
        repeated = repeat_of(trial)
        if repeated is not None:  # a recipe drawn again (few candidates): not trained twice
            trial.set_user_attr("repeat_of", repeated.number)
            if repeated.state == optuna.trial.TrialState.PRUNED:
                raise optuna.TrialPruned(f"the parameters of trial {repeated.number}, pruned")
            return float(repeated.value)
        scores = []
        for i, fold in enumerate(tune.folds):
            inputs, part_ids, index = prepared[fold]
            seed = trial_seed(tune.seed, fold)
            seed_everything(seed)
            model = create_model(exp.model.name, dims=inputs.dims, **params)
            workdir = ref.folder / f"trial{trial.number}" / f"fold{fold}"
            outcome = fit_fold(
                model, inputs, index["fit"], labels_matrix(data.labels, part_ids["fit"]),
                index["select"], labels_matrix(data.labels, part_ids["select"]), recipe,
                seed, workdir, stable_hash({"model": params, "train": train_choices}),
                on_epoch=PruningReporter(trial, i * recipe.epochs),
                desc=f"trial {trial.number} fold {fold}")
            for leftover in ("model.pt", "last.pt"):
                (workdir / leftover).unlink(missing_ok=True)
            scores.append(outcome.best_score)
        return float(np.mean(scores))

    return objective


def repeat_of(trial: optuna.Trial) -> FrozenTrial | None:
    """An earlier finished trial with exactly this trial's parameters (same seeds, same
    rows: the same score), if any."""
    for other in trial.study.get_trials(deepcopy=False, states=FINISHED):
        if other.number != trial.number and other.params == trial.params:
            return other
    return None


def overlay_text(cfg: Config, study: optuna.Study, ref: StudyRef) -> str:
    """The best trial's parameters as a YAML overlay for `taemi train --overlay`."""
    tune = _tune(cfg)
    best = study.best_trial
    fixed = optuna.trial.FixedTrial(best.params)
    model_choices, train_choices = suggest_choices(fixed, tune.choices)
    params = merged_params(cfg, {**suggest(fixed, tune.ranges), **model_choices})
    overlay: dict = {"experiments": {tune.experiment: {"model": params}}}
    if train_choices:
        overlay["experiments"][tune.experiment]["train"] = train_choices
    header = (f"# Optuna study {ref.name}: best of {finished_trials(study)} trials, "
              f"trial {best.number}, mean Pearson {best.value:.4f}\n"
              f"# chosen on rows of CV folds {list(ref.saw_folds)} (their OOF scores saw "
              "this choice)\n")
    return header + yaml.safe_dump(overlay, sort_keys=True)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row a trial: its number, state, value, seconds and parameters."""
    rows = [{"trial": t.number, "state": t.state.name, "value": t.value,
             "seconds": round(seconds_of(t), 1) if t.datetime_complete else None,
             "repeat_of": t.user_attrs.get("repeat_of"), **t.params}
            for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    return pd.DataFrame(rows)


def best_by_candidate(trials: pd.DataFrame, choices: dict[str, list]) -> pd.Series:
    """For each candidate of each choice, the best value a completed trial with it
    reached (NaN: never completed)."""
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    best = {}
    for key, values in sorted(choices.items()):
        for value in values:  # a trial stores its candidate as JSON text (a CSV, parsed)
            text = json.dumps(value, sort_keys=True)
            hits = done["value"][done[key].astype(str) == text] if key in done else []
            best[f"{key} = {text}"] = max(hits) if len(hits) else np.nan
    return pd.Series(best, dtype=float)


def write_overlay(cfg: Config, study: optuna.Study, ref: StudyRef) -> Path:
    """best.yaml, the trials and why this choice, then study.json: the record
    `tuned_overlay` trusts, written last."""
    path = ref.folder / "best.yaml"
    write_text(path, overlay_text(cfg, study, ref))
    trials = trials_table(study)
    write_csv(ref.folder / "trials.csv", trials, index=False)
    choices = _tune(cfg).choices
    if choices:
        bar_chart(best_by_candidate(trials, choices).fillna(0.0), ref.folder / "choices.png",
                  f"{ref.name}: the best trial of each candidate (inner split)")
    write_json(ref.folder / STUDY_RECORD, {
        "study": ref.name, "key": ref.key, "finished": finished_trials(study),
        "trial_seconds": round(trial_seconds(study), 1),
        "best_trial": study.best_trial.number, "best_value": study.best_trial.value,
        "saw_rows_of_folds": list(ref.saw_folds), "inputs": ref.parts})
    return path


STUDY_RECORD = "study.json"


def tuned_overlay(cfg: Config, ref: StudyRef, carry: bool = True) -> Path | None:
    """The current study's best.yaml, if that study has reached `tune.n_trials`; `carry`:
    first adopt a study an older kit finished (`adopt_legacy_study`)."""
    record = ref.folder / STUDY_RECORD
    old = _tune(cfg).dir / study_base(cfg)
    if carry and not record.is_file() and (old / "optuna.journal").is_file() and \
            not (old / LEGACY_MARK).is_file():  # a study an older kit finished, perhaps
        study = open_study(cfg, ref)
        if finished_trials(study) >= _tune(cfg).n_trials:
            write_overlay(cfg, study, ref)
    if not record.is_file() or not (ref.folder / "best.yaml").is_file():
        return None
    info = read_json(record)
    if info.get("key") != ref.key or not study_done(cfg, info.get("finished", 0),
                                                    info.get("trial_seconds", 0.0)):
        return None
    return ref.folder / "best.yaml"


def trial_seconds(study: optuna.Study) -> float:
    """The finished trials' time, summed (over workers, and over runs that resumed it)."""
    return sum(seconds_of(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


def seconds_of(trial: FrozenTrial) -> float:
    """A trial's run time (0 while it has not both started and finished)."""
    if not (trial.datetime_start and trial.datetime_complete):
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def study_done(cfg: Config, finished: int, seconds: float, target: int | None = None) -> bool:
    """At `n_trials` (or `target`) finished trials, or at the time budget (`tune.minutes`)."""
    tune = _tune(cfg)
    return finished >= (target or tune.n_trials) or (
        tune.minutes is not None and seconds >= tune.minutes * 60)


class SurplusTrial(Exception):
    """The trial would take the study past `n_trials`: another worker started one first."""


def claim_or_fail(study: optuna.Study, trial: optuna.Trial, target: int) -> None:
    """Let the trial run only if fewer than `target` trials numbered before it are finished
    or running (trial numbers are handed out by the storage: one order for all workers);
    otherwise mark it surplus, give a queued trial's parameters back to the queue, and raise
    SurplusTrial before any work."""
    earlier = [t for t in study.get_trials(deepcopy=False, states=(*FINISHED, RUNNING))
               if t.number < trial.number]
    if len(earlier) < target:
        return
    frozen = study._storage.get_trial(trial._trial_id)
    if frozen.params or "fixed_params" in frozen.system_attrs:  # it came from the queue
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=frozen.params,
            distributions=frozen.distributions, system_attrs=frozen.system_attrs))
    trial.set_user_attr("surplus", True)
    raise SurplusTrial(f"trial {trial.number}: {target} trials already finished or running")


def worker_threads(cfg: Config) -> int | None:
    """Torch threads for one of `tune.workers` processes on this machine: an equal share of
    the cores (train.threads wins where set; one worker keeps torch's default)."""
    if cfg.train.threads or _tune(cfg).workers == 1:
        return cfg.train.threads
    return max(1, len(os.sched_getaffinity(0)) // _tune(cfg).workers)


def tune_worker(cfg: Config, data: ChallengeData, target: int, ref: StudyRef) -> None:
    """One worker: run trials until the study has `target` finished ones, waiting (not
    starting more) while other workers' running trials would reach it."""
    import torch

    tune = _tune(cfg)
    threads = worker_threads(cfg)
    if threads:
        torch.set_num_threads(threads)
    study = open_study(cfg, ref)
    objective = make_objective(cfg, data, target, ref)
    heartbeat = tune.storage is not None  # RDB storage beats; the journal does not
    # Optuna logs every failed trial with its whole traceback (a surplus trial too); the
    # error that matters is raised once, as one line where it is the user's
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    bar = progress(total=target, desc=f"tune {ref.name}", unit="trial")
    while True:
        reclaimed = reclaim_dead_trials(study)
        if reclaimed:
            echo(f"tune: {reclaimed} trial(s) of a dead worker marked failed and queued again")
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        done = finished_trials(study)
        bar.update(min(done, target) - bar.n)
        if study_done(cfg, done, trial_seconds(study), target):
            break
        if done + len(study.get_trials(deepcopy=False, states=(RUNNING,))) >= target:
            time.sleep(min(tune.heartbeat_interval, 5))  # others' trials may still fail
            continue
        try:
            study.optimize(objective, n_trials=1)
        except SurplusTrial:
            continue
    bar.close()


def _spawned_worker(cfg_tree: dict, target: int, quiet: bool, ref: StudyRef) -> None:
    set_quiet(quiet)
    cfg = config_from_dict(cfg_tree)
    tune_worker(cfg, open_data(cfg), target, ref)


def run_tuning(cfg: Config, data: ChallengeData, n_trials: int | None = None) -> Path:
    """Run (or resume) the current study until it has `n_trials` finished trials; write
    best.yaml and study.json.

    With `tune.workers` > 1 the extra workers are spawned processes of this machine."""
    tune = _tune(cfg)
    target = n_trials or tune.n_trials
    ref = current_study(cfg, data)
    enqueue_start(open_study(cfg, ref), tune)  # before any worker runs a trial
    context = multiprocessing.get_context("spawn")  # no forked torch or database state
    others = [context.Process(target=_spawned_worker, args=(cfg.resolved(), target, True, ref),
                              name=f"tune-worker-{i}") for i in range(1, tune.workers)]
    for process in others:
        process.start()
    try:
        tune_worker(cfg, data, target, ref)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: no worker of the run lives on;
        for process in others:  # their trials are reclaimed when a worker next starts
            process.terminate()
        raise
    finally:
        for process in others:
            process.join()
    failed = [p.name for p in others if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"tune: worker process(es) {failed} failed; their trials are "
                           f"marked failed and queued again: run `taemi tune` again")
    study = open_study(cfg, ref)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"study {ref.name} has no completed trial")
    return write_overlay(cfg, study, ref)
