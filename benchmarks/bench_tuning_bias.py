"""How much a tuning choice flatters the CV of the folds whose rows it saw.

The demo's tuning runs on fold 0: its trials learn from and are judged on the rows of
folds 1-4, which those folds' OOF predictions then score. For each generated dataset, TAEMI
is trained twice over the same folds, with the study's best dropout rates and with the
defaults; for every fold model the gap between its OOF score (its own fold) and its score
on the held-out test is read. Tuning bias = how much more the tuned models' OOF exceeds
their test than the untuned models' does, on the folds the study saw (1-4) and on the one
it did not (0).

    python benchmarks/bench_tuning_bias.py --seeds 0 1 2 --trials 10

Writes benchmarks/results/tuning_bias.json and prints a table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix
from taemi.metrics import score_table
from taemi.pipeline import ensure_data, ensure_tuning, train_experiments
from taemi.progress import set_quiet

REPO = Path(__file__).resolve().parents[1]


def fold_gaps(cfg, data) -> dict[int, float]:
    """Per fold model: its OOF mean Pearson minus its held-out test mean Pearson."""
    exp = cfg.paths.models / "demo-taemi"
    cv = json.loads((exp / "cv.json").read_text())
    out = {}
    for fold in cv["folds"]:
        oof = cv["per_fold"][f"vit-w2v/seed0/fold{fold}"]["mean"]
        test = pd.read_csv(exp / "vit-w2v" / "seed0" / f"fold{fold}" / "test.csv",
                           dtype={ID_COLUMN: str})
        truth = labels_matrix(data.test_labels, test[ID_COLUMN])
        out[fold] = oof - score_table(truth, test[list(TARGETS)].to_numpy())["mean"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--work", default="/tmp/taemi-tuning-bias")
    args = parser.parse_args()
    set_quiet(True)
    work = Path(args.work)
    rows = []
    for seed in args.seeds:
        common = [f"name=tb{seed}", f"data.root={work}/data-{seed}", f"synth.seed={seed}",
                  f"cache.dir={work}/cache", f"folds.path={work}/folds-{seed}/folds.csv",
                  f"tune.dir={work}/tune", f"tune.n_trials={args.trials}",
                  "experiments={demo-taemi: {model: {name: taemi}, backbones: [vit-w2v]}}",
                  "stack=null", "submit=null"]
        gaps = {}
        for tuned in (True, False):
            cfg = load_config(REPO / "configs" / "demo.yaml", [
                *common, f"tune.apply={str(tuned).lower()}",
                f"paths.models={work}/models-{seed}-{'tuned' if tuned else 'untuned'}"])
            data = ensure_data(cfg)
            ensure_tuning(cfg, data)
            train_experiments(cfg, data=data)
            gaps[tuned] = fold_gaps(cfg, data)
        for fold in gaps[True]:
            rows.append({"seed": seed, "fold": fold, "seen": fold != 0,
                         "gap tuned": gaps[True][fold], "gap untuned": gaps[False][fold]})
    table = pd.DataFrame(rows)
    table["bias"] = table["gap tuned"] - table["gap untuned"]
    out = REPO / "benchmarks" / "results" / "tuning_bias.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table.to_json(orient="records", indent=2))
    summary = table.groupby("seen")[["gap tuned", "gap untuned", "bias"]].agg(["mean", "std"])
    print(summary.round(4).to_string())
    seen = table.loc[table["seen"], "bias"]
    print(f"bias on the folds tuning saw: {seen.mean():+.4f} "
          f"(+- {seen.std(ddof=1) / np.sqrt(len(seen)):.4f} s.e., {len(seen)} fold models)")


if __name__ == "__main__":
    main()
