"""The experiment grid: one model config x backbones x seeds x folds (`taemi train`).

    models/<experiment>/
        config.json                       the resolved config it was trained with
        oof.csv  test.csv  cv.json        mean over backbones and seeds; CV scores
        <backbone>/oof.csv test.csv       mean over seeds
        <backbone>/seed<k>/oof.csv ...    one seed, its folds' OOF rows and mean test
        <backbone>/seed<k>/fold<f>/       model.pt metrics.csv oof.csv test.csv done.json
        <backbone>/seed<k>/refit/         the refit model: model.pt test.csv done.json

A job (one fold model) is done when its `done.json` carries the key of everything that
shaped it (`job_key_parts`: the model and its code, the train settings that change
results, its packs by content, folds, labels, seed, fold, the kit's version; never a path,
a time or a thread count) and each part's digest, so `taemi plan` can say which changed.
A done job is skipped, a changed one retrained, an interrupted one resumed from `last.pt`.
Every file is written atomically.

Refit (`experiments.<name>.refit`): once a seed's fold models are done, one more model is
trained on every CV row, and it predicts the test (and holdout) in their place;
`test_folds.csv` keeps the fold models' mean, and the OOF predictions, hence the CV and
the stack's training rows, stay the fold models'. Where purge groups (seed videos) leave
each fold model a small part of the CV rows, refit more than doubled the held-out test
score; with plain folds the stack lost 0.005 to 0.007 by it (benchmarks/RESULTS.md,
"Refit"), so `auto` refits where the fold models learn from under half the CV rows
(`REFIT_BELOW`). A refit runs the median of its fold models' best epochs (the count the
CV chose), shrunk where the data are large (`refit_epochs`): a fold model learns from a
seventh of the rows, and at 12,660 rows the refit did best on a third of that count, at
1,266 on all of it, and on all of it where the fold models ran to their epoch cap
(RESULTS, "How many epochs a refit runs").
"""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import read_json, stable_hash, write_csv, write_json
from taemi.cache import PackedFeature, build_packed, participant_normalised
from taemi.config import (
    ROLES,
    UNKEYED_TRAIN_KEYS,
    Config,
    ConfigError,
    TrainConfig,
    config_from_dict,
)
from taemi.data import ID_COLUMN, TARGETS, ChallengeData, labels_matrix, open_data
from taemi.folds import (
    HOLDOUT,
    folds_digest,
    read_folds,
    selection_split,
    training_rows,
    training_share,
)
from taemi.identity import KIT_VERSION, table_digest
from taemi.legacy import legacy_job_fingerprint, legacy_labels_digest
from taemi.metrics import score_table
from taemi.participants import ensure_participants

PREDICTIONS = ("oof", "test", "holdout")
REFIT = -2  # the fold of a refit job: it learns from every CV row
REFIT_BELOW = 0.5  # refit auto: where fold models learn from under this share of CV rows
REFIT_MEDIAN_ROWS = 1_266  # refit_epochs auto: the median best epoch up to these CV rows,
REFIT_SQRT_ROWS = 12_660  # times the square root of the training share from these


@dataclass(frozen=True)
class Job:
    experiment: str
    backbone: str
    seed: int
    fold: int
    epochs: int | None = None  # a refit job's epochs (`refit_epochs`)

    @property
    def part(self) -> str:
        return "refit" if self.fold == REFIT else f"fold{self.fold}"

    def folder(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.experiment / self.backbone / f"seed{self.seed}" / \
            self.part

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.backbone}/seed{self.seed}/{self.part}"

    @staticmethod
    def is_refit_label(label: str) -> bool:
        """Whether a job label (cv.json `jobs`, a plan's) names a refit job."""
        return label.endswith("/refit")

    @property
    def train_seed(self) -> int:
        return self.seed * 1000 + (999 if self.fold == REFIT else self.fold)


def experiment_folds(cfg: Config, experiment: str, folds: pd.DataFrame) -> list[int]:
    available = sorted(int(f) for f in folds["fold"].unique() if f != HOLDOUT)
    wanted = cfg.experiments[experiment].folds
    if wanted is None:
        return available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(f"config key 'experiments.{experiment}.folds': folds {unknown} do "
                          f"not exist; {cfg.folds.path} has folds {available}")
    return sorted(wanted)


def plan_jobs(cfg: Config, experiment: str, folds: pd.DataFrame) -> list[Job]:
    exp = cfg.experiments[experiment]
    return [Job(experiment, b, s, f) for b in cfg.backbones_for(experiment)
            for s in exp.seeds for f in experiment_folds(cfg, experiment, folds)]


def refit_decision(cfg: Config, experiment: str, folds: pd.DataFrame) -> dict:
    """Whether the experiment refits, and why (cv.json's `refit`)."""
    setting = cfg.experiments[experiment].refit
    share = training_share(folds, experiment_folds(cfg, experiment, folds))
    used = share < REFIT_BELOW if setting == "auto" else bool(setting)
    why = f"refit: {str(setting).lower()}" if setting != "auto" else \
        f"auto: the fold models learn from {share:.0%} of the CV rows " + \
        (f"(under {REFIT_BELOW:.0%}: refit)" if used else f"(refit under {REFIT_BELOW:.0%})")
    rule = cfg.experiments[experiment].refit_epochs
    cv_rows = int((folds["fold"] != HOLDOUT).sum())
    exponent = refit_exponent(rule, cv_rows)
    factor = share ** exponent
    cap = cfg.train_for(experiment).epochs
    epochs_why = f"{rule} at {cv_rows:,} CV rows: the fold models' median best epoch x " \
        f"{share:.2f} ** {exponent:.2f} = x {factor:.2f}"
    if rule == "auto":
        epochs_why += f" (x 1 where it is the cap, {cap})"
    return {"used": used, "why": why, "training_share": round(share, 4),
            "epochs_rule": {"rule": rule, "cv_rows": cv_rows, "exponent": exponent,
                            "factor": factor, "cap": cap, "why": epochs_why}}


def refit_jobs(cfg: Config, experiment: str, folds: pd.DataFrame,
               fingerprints: dict[Job, str] | None = None) -> list[Job]:
    """The experiment's refit jobs, one per backbone and seed whose fold jobs are done (to
    `fingerprints` where given), each for the median of those fold models' best epochs
    scaled by the experiment's `refit_epochs` rule; none where it does not refit."""
    decision = refit_decision(cfg, experiment, folds)
    if not decision["used"]:
        return []
    out = []
    models = cfg.paths.models
    jobs = plan_jobs(cfg, experiment, folds)
    for backbone, seed in dict.fromkeys((j.backbone, j.seed) for j in jobs):
        group = [j for j in jobs if (j.backbone, j.seed) == (backbone, seed)]
        if fingerprints is not None and \
                not all(is_done(j.folder(models), fingerprints[j]) for j in group):
            continue
        if not all((j.folder(models) / "done.json").is_file() for j in group):
            continue
        best = float(np.median([read_json(j.folder(models) / "done.json")["best_epoch"]
                                for j in group]))
        out.append(Job(experiment, backbone, seed, REFIT,
                       epochs=refit_epochs(best, decision["epochs_rule"])))
    return out


def refit_exponent(setting: str, cv_rows: int) -> float:
    """How far a refit's epochs shrink from its fold models' median best epoch: it runs
    that count times share ** exponent. `median`: 0 (the count the CV chose); `sqrt`: 1/2;
    `auto`: by the refit's rows, 0 up to REFIT_MEDIAN_ROWS, 1/2 from REFIT_SQRT_ROWS, in
    proportion to log(rows) between, and 0 where the fold models' median best epoch is
    the epoch cap (`refit_epochs`) (benchmarks/RESULTS.md, "How many epochs a refit runs":
    the median was best at 1,266 labelled rows, the square root at 12,660 where the fold
    models stopped on their own, the median where they ran to a cap of 7)."""
    if setting == "median":
        return 0.0
    if setting == "sqrt":
        return 0.5
    low, high = np.log(REFIT_MEDIAN_ROWS), np.log(REFIT_SQRT_ROWS)
    return 0.5 * float(np.clip((np.log(max(cv_rows, 1)) - low) / (high - low), 0.0, 1.0))


def refit_epochs(median_best: float, epochs_rule: dict) -> int:
    """A refit job's epochs: its fold models' median best epoch times the rule's factor
    (`refit_decision`'s `epochs_rule`), at least 1. `auto` keeps the median where it is
    the epoch cap: a count the fold models ran into is a floor, not their optimum."""
    capped = epochs_rule["rule"] == "auto" and median_best >= epochs_rule["cap"]
    return max(1, round(median_best * (1.0 if capped else epochs_rule["factor"])))


def job_train(cfg: Config, job: Job) -> TrainConfig:
    """The train settings a job runs with: a refit job's epochs, all of them run (it has no
    rows left to choose an epoch on)."""
    train = cfg.train_for(job.experiment)
    if job.fold != REFIT:
        return train
    return train.model_copy(update={"epochs": job.epochs, "selection": "fixed"})


NORMALISED_ROLES = ("visual", "audio")  # who is speaking shows there, not in the words


def open_packs(cfg: Config, data: ChallengeData, backbone: str) -> dict[str, PackedFeature]:
    """The backbone's packs, role -> pack (built by `ensure_cache`; reopened here), the
    visual and audio ones standardised per participant under its `normalise`."""
    packs = {role: build_packed(data, feature, cfg.cache.steps_for(role), cfg.cache.dir,
                                workers=1)
             for role, feature in cfg.backbones[backbone].features().items()}
    if cfg.backbones[backbone].normalise == "participant":
        participants = ensure_participants(cfg, data)
        for role in NORMALISED_ROLES:
            if role in packs:
                packs[role] = participant_normalised(
                    packs[role], participants.of(packs[role].ids), cfg.cache.normalise_prior,
                    cfg.cache.dir)
    return packs


def labels_digest(labels: pd.DataFrame) -> str:
    """A fingerprint of the label table: corrected labels retrain what they touch."""
    return table_digest(labels)


def keyed_train_settings(train: dict) -> dict:
    return {k: v for k, v in train.items() if k not in UNKEYED_TRAIN_KEYS}


def job_key_parts(cfg: Config, job: Job, pack_keys: dict[str, str], digest: str,
                  labels: str, media: str | None = None) -> dict:
    """What a job is made of: its model (parameters, defaults included, and the digest of
    its code), the train settings that change results, its packs' content keys, folds,
    labels, seed and fold, and the kit's version. `media`: the raw inputs' digest of an
    end-to-end experiment (`taemi.endtoend`)."""
    from taemi.models import model_code_digest

    exp = cfg.experiments[job.experiment]
    extra = {"endtoend": exp.endtoend.model_dump(mode="json", exclude={"loader_workers"}),
             "media": media} \
        if exp.endtoend else {}
    return {
        "kit": KIT_VERSION, "code": model_code_digest(exp.model.name),
        "model": exp.model.resolved(),
        "train": keyed_train_settings(job_train(cfg, job).model_dump(mode="json")),
        "packs": dict(sorted(pack_keys.items())),
        "folds": digest, "labels": labels, "seed": job.seed, "fold": job.fold, **extra,
    }


def job_fingerprint(cfg: Config, job: Job, packs: dict[str, PackedFeature],
                    digest: str, labels: str, media: str | None = None) -> str:
    """A job's key: the digest of `job_key_parts`."""
    pack_keys = {role: pack.key for role, pack in packs.items()}
    return stable_hash(job_key_parts(cfg, job, pack_keys, digest, labels, media))


def _hashed(parts: dict) -> dict:
    """A key's parts as `done.json` records them: short digests (packs per role)."""
    return {name: dict(value) if name == "packs" else stable_hash(value, 8)
            for name, value in parts.items()}


def changed_parts(recorded: dict | None, parts: dict) -> list[str]:
    """Which parts of a job's key differ from those its `done.json` recorded."""
    if not recorded:
        return ["made by an earlier kit"]
    out = []
    for name, value in _hashed(parts).items():
        if name == "packs":  # which role's pack
            before = recorded.get(name) or {}
            out += [f"packs.{r}" for r in sorted(set(value) | set(before))
                    if value.get(r) != before.get(r)]
        elif recorded.get(name) != value:
            out.append(name)
    return out


def job_fingerprints(cfg: Config, experiment: str, data: ChallengeData,
                     folds: pd.DataFrame) -> dict[Job, str]:
    """Each planned job of the experiment and the fingerprint its `done.json` must hold,
    the packs opened once a backbone. A job an older kit finished on these very inputs
    has its `done.json` re-keyed here (`carry_over`), not retrained."""
    digest, labels = folds_digest(folds), labels_digest(data.labels)
    endtoend = cfg.experiments[experiment].endtoend
    media = None
    if endtoend is not None:
        from taemi.endtoend import media_digest

        media = media_digest(data, endtoend, cfg.cache.dir)
    jobs = plan_jobs(cfg, experiment, folds)
    out, keys = {}, {}
    for backbone in cfg.backbones_for(experiment):
        packs = open_packs(cfg, data, backbone)
        keys[backbone] = {role: pack.key for role, pack in packs.items()}
        for job in (j for j in jobs if j.backbone == backbone):
            parts = job_key_parts(cfg, job, keys[backbone], digest, labels, media)
            out[job] = stable_hash(parts)
            carry_over(cfg, job, parts, packs, folds, labels, data)
    for job in refit_jobs(cfg, experiment, folds, out):  # once their fold jobs are done
        out[job] = stable_hash(job_key_parts(cfg, job, keys[job.backbone], digest, labels,
                                             media))
    return out


def carry_over(cfg: Config, job: Job, parts: dict, packs: dict[str, PackedFeature],
               folds: pd.DataFrame, labels: str, data: ChallengeData) -> bool:
    """Re-key a job that a kit before content keys finished on exactly these inputs (its
    `done.json` holds the old key of these packs, folds and settings); True if it did."""
    fingerprint = stable_hash(parts)
    done = job.folder(cfg.paths.models) / "done.json"
    if not done.is_file():
        return False
    record = read_json(done)
    if record.get("fingerprint") == fingerprint or "kit" in record:
        return False  # current, or made by this kit: nothing to carry
    names = {role: pack.legacy_name for role, pack in packs.items()}
    if any(name is None for name in names.values()):
        return False
    old = legacy_job_fingerprint(cfg, job.experiment, job.seed, job.fold, names, folds,
                                 legacy_labels_digest(data.labels), data)
    if record.get("fingerprint") != old:
        return False
    write_json(done, {**record, "fingerprint": fingerprint, "kit": KIT_VERSION,
                      "parts": _hashed(parts), "carried_from": old})
    return True


def stale_reason(cfg: Config, experiment: str, data: ChallengeData,
                 folds: pd.DataFrame, fingerprints: dict[Job, str] | None = None) -> str | None:
    """Why the experiment's gathered predictions are not what this config trains (None:
    they are): a job missing (a refit job waits for its fold jobs), retrained since, or
    keyed by other inputs or settings."""
    cv_path = cfg.paths.models / experiment / "cv.json"
    if not cv_path.is_file():
        return "not trained"
    gathered = read_json(cv_path).get("jobs", {})
    planned = fingerprints or job_fingerprints(cfg, experiment, data, folds)
    if set(gathered) != {job.label for job in planned}:
        return "its jobs are not the ones the config plans (backbones, seeds or folds)"
    for job, fingerprint in planned.items():
        if gathered.get(job.label) != fingerprint:
            return f"job {job.label} is not what the config trains"
        if not is_done(job.folder(cfg.paths.models), fingerprint):
            return f"job {job.label} was retrained or lost since it was gathered"
    return None


def ran_on() -> dict:
    """Where this job ran: the host and, inside a Ray task, the Ray node and GPU ids."""
    node, gpus = None, []
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        node, gpus = ray.get_runtime_context().get_node_id(), list(ray.get_gpu_ids())
    return {"host": socket.gethostname(), "ray_node": node, "gpu_ids": gpus}


def prediction_frame(ids: list[str], pred: np.ndarray,
                     fold: int | np.ndarray | None = None) -> pd.DataFrame:
    """Predictions as the kit writes them: Filename, (fold,) the six targets."""
    frame = pd.DataFrame(pred, columns=list(TARGETS))
    if fold is not None:
        frame.insert(0, "fold", fold)
    frame.insert(0, ID_COLUMN, ids)
    return frame


def is_done(folder: Path, fingerprint: str) -> bool:
    done = folder / "done.json"
    return done.is_file() and read_json(done).get("fingerprint") == fingerprint


def fold_inputs(cfg: Config, data: ChallengeData, folds: pd.DataFrame,
                packs: dict[str, PackedFeature], fold: int, selection: str = "inner",
                inner_fraction: float = 0.15):
    """One fold's clips as model inputs: the ids of each part and their row indices.

    Parts: `fit` (the rows the model learns from), `select` (the rows that choose its
    epoch: see `TrainConfig.selection`), `val` (the scored fold, predicted once at the
    end), `test` and `holdout`. A refit job (`REFIT`) learns from every CV row and has
    no `val`.
    """
    from taemi.training import ClipInputs

    cv = folds["fold"] != HOLDOUT
    if fold == REFIT:
        if selection != "fixed":
            raise ValueError("a refit job runs a fixed number of epochs (selection: fixed)")
        train, val = folds.loc[cv, ID_COLUMN].tolist(), []
    else:
        train = training_rows(folds, fold)[ID_COLUMN].tolist()
        val = folds.loc[folds["fold"] == fold, ID_COLUMN].tolist()
    if selection == "inner":
        fit, select = selection_split(folds, fold, inner_fraction)
    else:
        fit, select = train, []
    part_ids = {"fit": fit, "select": select, "val": val, "test": data.test_ids,
                "holdout": folds.loc[~cv, ID_COLUMN].tolist()}
    ids = [clip for part in ("fit", "select", "val", "test", "holdout")
           for clip in part_ids[part]]
    ends = np.cumsum([len(part_ids[p]) for p in ("fit", "select", "val", "test", "holdout")])
    index = {name: np.arange(end - len(part_ids[name]), end)
             for name, end in zip(("fit", "select", "val", "test", "holdout"), ends,
                                  strict=True)}
    if selection == "outer":  # the scored fold chooses the epoch: optimistic, opt-in only
        part_ids["select"], index["select"] = val, index["val"]
    inputs = ClipInputs(packs, ids, {r: cfg.cache.steps_for(r) for r in ROLES})
    return inputs, part_ids, index


def fold_model(cfg: Config, data: ChallengeData, experiment: str, inputs, seed: int = 0):
    """The experiment's model, untrained, and the inputs it reads: a registered model on
    the packs' inputs, or encoders trained end to end with one, whose inputs then also
    read the raw media (`taemi.endtoend`; crops drawn by `seed`, which holds the fold)."""
    from taemi.models import create_model

    spec = cfg.experiments[experiment].model
    endtoend = cfg.experiments[experiment].endtoend
    if endtoend is None:
        return create_model(spec.name, dims=inputs.dims, **spec.params()), inputs
    from taemi.endtoend import EndToEnd, EndToEndInputs

    model = EndToEnd(endtoend, spec, inputs.dims, {r: cfg.cache.steps_for(r) for r in ROLES})
    return model, EndToEndInputs(inputs, data, model, cfg.cache.dir, seed)


def run_job(cfg_tree: dict, job: Job) -> dict:
    """Train and predict one fold model; the same function runs locally and as a Ray task.

    A job trains in its own work folder (`.work-<fingerprint>`) beside the job's
    artifacts; only a finished run replaces them, `done.json` last, so an interrupted
    retrain never leaves a finished job pointing at an unfinished model.
    """
    from taemi.training import SNAPSHOTS, fit_fold, predict, seed_everything

    cfg = config_from_dict(cfg_tree)
    data = open_data(cfg)
    folds = read_folds(cfg.folds.path)
    packs = open_packs(cfg, data, job.backbone)
    endtoend = cfg.experiments[job.experiment].endtoend
    media = None
    if endtoend is not None:
        from taemi.endtoend import check_backbone, media_digest

        check_backbone(job.experiment, job.backbone, cfg.backbones[job.backbone].features(),
                       endtoend)
        media = media_digest(data, endtoend, cfg.cache.dir)
    parts = job_key_parts(cfg, job, {role: pack.key for role, pack in packs.items()},
                          folds_digest(folds), labels_digest(data.labels), media)
    fingerprint = stable_hash(parts)
    folder = job.folder(cfg.paths.models)
    if is_done(folder, fingerprint):
        return {**read_json(folder / "done.json"), "skipped": True}

    train_cfg = job_train(cfg, job)
    inputs, part_ids, index = fold_inputs(cfg, data, folds, packs, job.fold,
                                          train_cfg.selection, train_cfg.inner_fraction)
    del packs  # the inputs hold their own copy: unmap the packs, halving resident memory
    job_seed = job.train_seed
    seed_everything(job_seed)
    model, inputs = fold_model(cfg, data, job.experiment, inputs, job_seed)
    work = folder / f".work-{fingerprint}"
    try:
        outcome = fit_fold(model, inputs, index["fit"],
                           labels_matrix(data.labels, part_ids["fit"]), index["select"],
                           labels_matrix(data.labels, part_ids["select"]), train_cfg,
                           job_seed, work, fingerprint, desc=job.label)
        for kind, part in (("oof", "val"), ("test", "test"), ("holdout", "holdout")):
            if part_ids[part]:
                pred = predict(model, inputs, index[part], train_cfg.eval_batch_size)
                write_csv(work / f"{kind}.csv", prediction_frame(
                    part_ids[part], pred, job.fold if kind == "oof" else None))
    finally:
        inputs.close()
    summary = {"fingerprint": fingerprint, "kit": KIT_VERSION, "parts": _hashed(parts),
               "job": asdict(job),
               "best_epoch": outcome.best_epoch,
               "selection": train_cfg.selection, "selection_rows": len(part_ids["select"]),
               "selection_mean_pearson": outcome.best_score, "epochs_run": outcome.epochs_run,
               "seconds": outcome.seconds, "ran_on": ran_on()}
    (folder / "done.json").unlink(missing_ok=True)  # from here the old job is gone
    (work / "last.pt").unlink(missing_ok=True)
    shutil.rmtree(work / SNAPSHOTS, ignore_errors=True)
    for kind in PREDICTIONS:
        (folder / f"{kind}.csv").unlink(missing_ok=True)
    for item in work.iterdir():
        item.replace(folder / item.name)
    for stale in folder.glob(".work-*"):
        shutil.rmtree(stale, ignore_errors=True)
    write_json(folder / "done.json", summary)
    return {**summary, "skipped": False}


# ----------------------------------------------------------------------------- aggregation


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={ID_COLUMN: str})


def _mean(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean of prediction frames over the same ids (ids must match exactly)."""
    first = frames[0]
    for other in frames[1:]:
        if not other[ID_COLUMN].equals(first[ID_COLUMN]):
            raise ValueError("prediction files to average cover different ids")
    out = first.copy()
    out[list(TARGETS)] = np.mean([f[list(TARGETS)].to_numpy() for f in frames], axis=0)
    return out


def _write_level(folder: Path, parts: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    level = {kind: _mean([p[kind] for p in parts]) for kind in parts[0]}
    for kind, frame in level.items():
        write_csv(folder / f"{kind}.csv", frame)
    if "test_folds" not in level:  # refit off since: the test is the fold models' again
        (folder / "test_folds.csv").unlink(missing_ok=True)
    return level


def _score(frame: pd.DataFrame, labels: pd.DataFrame | None) -> dict[str, float] | None:
    if labels is None or frame.empty:
        return None
    return score_table(labels_matrix(labels, frame[ID_COLUMN]), frame[list(TARGETS)].to_numpy())


def aggregate(cfg: Config, experiment: str, data: ChallengeData, folds: pd.DataFrame,
              tuned: dict | None = None) -> dict:
    """Gather the fold models into OOF and test predictions at each level, and cv.json;
    `tuned`: the study whose parameters it trained with (its name and the folds it saw)."""
    exp_dir = cfg.experiment_dir(experiment)
    jobs = plan_jobs(cfg, experiment, folds)
    refits = {(j.backbone, j.seed): j for j in refit_jobs(cfg, experiment, folds)}
    decision = refit_decision(cfg, experiment, folds)
    refit_record = {**decision, "epochs": {j.label: j.epochs for j in refits.values()}}
    if decision["used"] and len(refits) < len({(j.backbone, j.seed) for j in jobs}):
        raise ValueError(f"experiment {experiment!r} refits but not every seed's fold jobs "
                         "are done: train it first")
    made = {j.label: read_json(j.folder(cfg.paths.models) / "done.json")["fingerprint"]
            for j in [*jobs, *refits.values()]}
    test_labels = None if data.test_labels is None else table_digest(data.test_labels)
    earlier = read_json(exp_dir / "cv.json") if (exp_dir / "cv.json").is_file() else {}
    # the refit record too: a rule change that leaves every refit's epochs as they were
    # retrains nothing, but cv.json must say which rule chose them
    if earlier.get("jobs") == made and earlier.get("tuned") == tuned and \
            earlier.get("test_labels") == test_labels and \
            earlier.get("refit") == refit_record and \
            all((exp_dir / f"{kind}.csv").is_file() for kind in ("oof", "test")):
        write_json(exp_dir / "config.json", {"experiment": experiment, **cfg.public()})
        return earlier  # gathered from these very jobs: nothing to redo
    cv: dict = {"experiment": experiment, "model": cfg.experiments[experiment].model.name,
                "folds_file": str(cfg.folds.path), "folds_digest": folds_digest(folds),
                "folds": experiment_folds(cfg, experiment, folds), "per_backbone": {},
                "per_seed": {}, "per_fold": {}}
    by_backbone, single, refit_single = [], [], []
    for backbone in cfg.backbones_for(experiment):
        by_seed = []
        for seed in cfg.experiments[experiment].seeds:
            fold_dirs = [j.folder(cfg.paths.models) for j in jobs
                         if j.backbone == backbone and j.seed == seed]
            if data.test_labels is not None:
                single.extend(_score(read_predictions(d / "test.csv"), data.test_labels)["mean"]
                              for d in fold_dirs)
            oof = pd.concat([read_predictions(d / "oof.csv") for d in fold_dirs])
            oof = oof.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
            parts = {"oof": oof, "test": _mean([read_predictions(d / "test.csv")
                                                for d in fold_dirs])}
            if (fold_dirs[0] / "holdout.csv").is_file():
                parts["holdout"] = _mean([read_predictions(d / "holdout.csv") for d in fold_dirs])
            refit = refits.get((backbone, seed))
            if refit is not None:  # it predicts in the fold models' place
                refit_dir = refit.folder(cfg.paths.models)
                parts["test_folds"] = parts["test"]
                parts["test"] = read_predictions(refit_dir / "test.csv")
                if "holdout" in parts:
                    parts["holdout"] = read_predictions(refit_dir / "holdout.csv")
                if data.test_labels is not None:
                    refit_single.append(_score(parts["test"], data.test_labels)["mean"])
            seed_dir = exp_dir / backbone / f"seed{seed}"
            by_seed.append(_write_level(seed_dir, [parts]))
            cv["per_seed"][f"{backbone}/seed{seed}"] = _score(oof, data.labels)
            for fold in cv["folds"]:
                rows = oof[oof["fold"] == fold]
                cv["per_fold"][f"{backbone}/seed{seed}/fold{fold}"] = _score(rows, data.labels)
        by_backbone.append(_write_level(exp_dir / backbone, by_seed))
        cv["per_backbone"][backbone] = _score(by_backbone[-1]["oof"], data.labels)
    top = _write_level(exp_dir, by_backbone)
    cv["overall"] = _score(top["oof"], data.labels)
    if "holdout" in top:
        cv["holdout"] = _score(top["holdout"], data.labels)
    cv["heldout_test"] = _score(top["test"], data.test_labels)
    cv["refit"] = refit_record
    if "test_folds" in top:
        cv["heldout_test_folds"] = _score(top["test_folds"], data.test_labels)
        cv["heldout_test_refit_single"] = float(np.mean(refit_single)) if refit_single \
            else None
    # which job runs these predictions come from: `taemi submit` checks them against the config
    cv["jobs"] = made
    cv["test_labels"] = test_labels
    # what the OOF score estimates: one fold model's score on the test (mean over models)
    cv["heldout_test_single"] = float(np.mean(single)) if single else None
    cv["selection"] = cfg.train_for(experiment).selection
    cv["tuned"] = tuned
    write_json(exp_dir / "cv.json", cv)
    write_json(exp_dir / "config.json", {"experiment": experiment, **cfg.public()})
    return cv
