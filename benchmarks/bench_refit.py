"""Refit on all labelled rows, measured (issue 21's lever): for each member of a finished
run, one model trained on every CV row with the epoch count its fold models chose (the
median of their best epochs), against the fold models' mean on the held-out test; then
the ridge stack fitted on the members' OOF predictions (fold models, as always), fed the
refit models' test predictions instead of the fold models'.

    python benchmarks/bench_refit.py models/rb-shared-s11-x0.1/chosen [...]   (after
    bash benchmarks/bench_recommended.sh)   -> appended to benchmarks/results/recommended/refit.md

The refit models use seed 0 and are written under <models>/<experiment>/refit/."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from taemi.artifacts import read_json
from taemi.config import config_from_dict
from taemi.data import labels_matrix, open_data
from taemi.experiment import fold_inputs, fold_model, open_packs, plan_jobs, read_predictions
from taemi.folds import HOLDOUT, read_folds
from taemi.metrics import score_table
from taemi.stacking import RidgeStacker
from taemi.training import fit_fold, predict, seed_everything

MEMBERS = ("rec-taemi", "rec-audio", "rec-fusion")


def refit(models: Path, experiment: str) -> dict:
    tree = read_json(models / experiment / "config.json")
    tree.pop("experiment")
    cfg = config_from_dict(tree)
    data, folds = open_data(cfg), read_folds(cfg.folds.path)
    jobs = plan_jobs(cfg, experiment, folds)
    backbone = jobs[0].backbone
    chosen = [read_json(j.folder(cfg.paths.models) / "done.json")["best_epoch"] for j in jobs
              if j.backbone == backbone and j.seed == jobs[0].seed]
    epochs = int(np.median(chosen))
    train = cfg.train_for(experiment).model_copy(update={"epochs": epochs,
                                                         "selection": "fixed"})
    # every CV row in one fold, and a fold number no row has: all of them are training rows
    every = folds.assign(fold=np.where(folds["fold"] == HOLDOUT, HOLDOUT, 0))
    inputs, part_ids, index = fold_inputs(cfg, data, every, open_packs(cfg, data, backbone),
                                          fold=1, selection="fixed")
    seed_everything(0)
    model, inputs = fold_model(cfg, data, experiment, inputs, 0)
    started = time.perf_counter()
    fit_fold(model, inputs, index["fit"], labels_matrix(data.labels, part_ids["fit"]),
             index["select"], labels_matrix(data.labels, part_ids["select"]), train, 0,
             models / experiment / "refit", desc=f"refit {experiment}")
    seconds = time.perf_counter() - started
    test = predict(model, inputs, index["test"], train.eval_batch_size)
    inputs.close()
    y_test = labels_matrix(data.test_labels, part_ids["test"])
    fold_mean = read_predictions(models / experiment / "test.csv").set_index("Filename")
    fold_mean = fold_mean.loc[part_ids["test"]].to_numpy()
    oof = read_predictions(models / experiment / "oof.csv").set_index("Filename")
    cv = read_json(models / experiment / "cv.json")
    return {"experiment": experiment, "epochs": epochs, "fold_epochs": chosen,
            "rows": len(part_ids["fit"]), "seconds": round(seconds, 1),
            "cv": cv["overall"]["mean"], "test_single": cv["heldout_test_single"],
            "test_fold_mean": score_table(y_test, fold_mean)["mean"],
            "test_refit": score_table(y_test, test)["mean"],
            "test_refit_and_folds": score_table(y_test, (test + fold_mean) / 2)["mean"],
            "_oof": oof, "_test": test, "_fold_mean": fold_mean, "_ids": part_ids["test"],
            "_y_test": y_test, "_data": data}


def stack_rows(rows: list[dict]) -> dict:
    """The ridge stack on the OOF rows, fed the fold means or the refit predictions."""
    data = rows[0]["_data"]
    ids = rows[0]["_oof"].index.tolist()
    X = np.hstack([r["_oof"].loc[ids, [c for c in r["_oof"].columns if c != "fold"]]
                   .to_numpy() for r in rows])
    stacker = RidgeStacker(1.0).fit(X, labels_matrix(data.labels, ids))
    y_test = rows[0]["_y_test"]
    folds_in = np.hstack([r["_fold_mean"] for r in rows])
    refit_in = np.hstack([r["_test"] for r in rows])
    return {"stack_test_fold_inputs": score_table(y_test, stacker.predict(folds_in))["mean"],
            "stack_test_refit_inputs": score_table(y_test, stacker.predict(refit_in))["mean"]}


def main(folders: list[str]) -> None:
    out = Path("benchmarks/results/recommended/refit.md")
    for folder in folders:
        rows = [refit(Path(folder), m) for m in MEMBERS if (Path(folder) / m).is_dir()]
        lines = [f"\n{folder}\n", "| member | refit epochs (fold models chose) | rows | s | cv "
                 "| test single | test fold mean | test refit | test refit+folds |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['experiment']} | {r['epochs']} ({r['fold_epochs']}) | "
                         f"{r['rows']} | {r['seconds']} | {r['cv']:.4f} | "
                         f"{r['test_single']:.4f} | {r['test_fold_mean']:.4f} | "
                         f"{r['test_refit']:.4f} | {r['test_refit_and_folds']:.4f} |")
        lines.append("ridge stack on the OOF rows, test: " + json.dumps(
            {k: round(v, 4) for k, v in stack_rows(rows).items()}))
        text = "\n".join(lines) + "\n"
        print(text)
        with out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
