"""Missing-modality robustness (`taemi robustness EXPERIMENT`).

Every fold model of an experiment predicts its own validation fold again with each
modality, and each pair, removed (marked missing, as a clip without a face, audio or
speech would be). The out-of-fold scores per condition go to `robustness.csv` and a plot.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import read_json, remove_stale_temporaries, stable_hash, write_csv, write_json
from taemi.config import ROLES, Config, config_from_dict
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.experiment import Job, experiment_folds, fold_model, open_packs, plan_jobs
from taemi.folds import read_folds
from taemi.metrics import score_table
from taemi.plots import bar_chart
from taemi.progress import progress

ROBUSTNESS_VERSION = 1  # the conditions and how they are scored
RECORD = "robustness.json"

CONDITIONS: list[tuple[str, ...]] = [()] + [(r,) for r in ROLES] + list(
    itertools.combinations(ROLES, 2))


def condition_name(drop: tuple[str, ...]) -> str:
    return "all modalities" if not drop else "without " + " + ".join(drop)


def resolve_experiment(name_or_dir: str | os.PathLike,
                       models_dir: str | os.PathLike = "models") -> tuple[Config, str]:
    """An experiment folder (or a name under `models/`) and the config it was trained with."""
    folder = Path(name_or_dir)
    if not (folder / "config.json").is_file():
        folder = Path(models_dir) / str(name_or_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no trained experiment at {name_or_dir} (looked for "
                                f"config.json there and in {folder}); run `taemi train` first")
    saved = read_json(folder / "config.json")
    experiment = saved.pop("experiment")
    return config_from_dict(saved, str(folder / "config.json")), experiment


def robustness(cfg: Config, experiment: str) -> pd.DataFrame:
    """Out-of-fold mean Pearson of the experiment with each modality (pair) removed."""
    import torch

    from taemi.training import ClipInputs, pick_device, predict

    data = open_data(cfg)
    folds = read_folds(cfg.folds.path)
    batch_size = cfg.train_for(experiment).eval_batch_size
    device = pick_device(cfg.train.device)
    trained = experiment_folds(cfg, experiment, folds)
    cv_ids = folds.loc[folds["fold"].isin(trained), ID_COLUMN].tolist()
    row_of = {clip: i for i, clip in enumerate(cv_ids)}
    preds = {drop: [] for drop in CONDITIONS}  # one (N, 6) OOF matrix per backbone x seed
    jobs = plan_jobs(cfg, experiment, folds)
    for backbone in cfg.backbones_for(experiment):
        packed = ClipInputs(open_packs(cfg, data, backbone), cv_ids,
                            {r: cfg.cache.steps_for(r) for r in ROLES})
        # an end-to-end model's inputs read its media too; a modality is removed through
        # the same missing flags either way
        model, inputs = fold_model(cfg, data, experiment, packed)
        inputs.to(device)
        try:
            for seed in cfg.experiments[experiment].seeds:
                oof = {drop: np.zeros((len(cv_ids), len(TARGETS))) for drop in CONDITIONS}
                for job in progress([j for j in jobs if j.backbone == backbone and
                                     j.seed == seed],
                                    desc=f"robustness {backbone}/seed{seed}", unit="fold"):
                    state = torch.load(job.folder(cfg.paths.models) / "model.pt",
                                       map_location=device, weights_only=True)
                    model.load_state_dict(state)
                    model.to(device)
                    val = folds.loc[folds["fold"] == job.fold, ID_COLUMN]
                    rows = np.array([row_of[c] for c in val])
                    for drop in CONDITIONS:
                        oof[drop][rows] = predict(model, inputs, rows, batch_size, drop=drop)
                for drop in CONDITIONS:
                    preds[drop].append(oof[drop])
        finally:
            inputs.close()
    y = labels_matrix(data.labels, cv_ids)
    table = pd.DataFrame([{"condition": condition_name(drop),
                           **score_table(y, np.mean(preds[drop], axis=0))}
                          for drop in CONDITIONS]).set_index("condition")
    table["loss_vs_all"] = table.loc[condition_name(()), "mean"] - table["mean"]
    return table


def robustness_key(folder: Path) -> str | None:
    """What a robustness table is made from: the fold models its experiment's cv.json
    gathered (their job keys), and the scoring's version; None before any gathering."""
    cv = folder / "cv.json"
    if not cv.is_file():
        return None
    jobs = read_json(cv).get("jobs")
    if jobs:  # the refit models predict no OOF row: they are not what it scores
        jobs = {label: key for label, key in jobs.items() if not Job.is_refit_label(label)}
    return stable_hash({"jobs": jobs, "v": ROBUSTNESS_VERSION})


def robustness_current(folder: Path) -> bool:
    """Whether the experiment folder's robustness table measured the models it holds now
    (a retrained experiment's old table describes other models)."""
    record = folder / RECORD
    return (folder / "robustness.csv").is_file() and record.is_file() and \
        robustness_key(folder) is not None and \
        read_json(record).get("key") == robustness_key(folder)


def write_robustness(cfg: Config, experiment: str, table: pd.DataFrame) -> Path:
    """Write robustness.csv and robustness.png beside the experiment's cv.json, then the
    record of which models they measured (last: a killed write leaves the table stale)."""
    folder = cfg.experiment_dir(experiment)
    remove_stale_temporaries(folder, "robustness*")  # what a killed write left behind
    write_csv(folder / "robustness.csv", table.reset_index())
    plot = bar_chart(table["mean"], folder / "robustness.png",
                     f"{experiment}: out-of-fold mean Pearson with modalities removed")
    write_json(folder / RECORD, {"key": robustness_key(folder)})
    return plot
