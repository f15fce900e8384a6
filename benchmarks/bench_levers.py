"""The table of the score levers (`bash benchmarks/bench_levers.sh`): each lever on and
off, CV and held-out test, on full-size generated data with participant folds.

Reads trained models only (models/<experiment>/<backbone>/seed<k>/...): each row scores
the named seeds' out-of-fold rows (CV), each fold model alone on the held-out test (test
single: what the CV estimates) and the fold models' mean (test: what is submitted), with
the mean seconds of its fold jobs. Writes benchmarks/results/levers.md and levers.json.

    python benchmarks/bench_levers.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.metrics import score_table

OUT = Path("benchmarks/results")
MODELS = Path("models")

# (lever, model, off: (experiment, backbone, seeds), on: (experiment, backbone, seeds))
PAIRS = [
    ("per-participant normalisation", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-pn", "vit-w2v-pn", [0])),
    ("per-participant normalisation", "unimodal_audio",
     ("paper-audio", "vit-w2v", [0]), ("lv-audio-pn", "vit-w2v-pn", [0])),
    ("per-participant normalisation", "fusion",
     ("paper-fusion", "vit-w2v", [0]), ("lv-fusion-pn", "vit-w2v-pn", [0])),
    ("gate x intensity head, on normalised packs", "taemi",
     ("lv-taemi-pn", "vit-w2v-pn", [0]), ("lv-taemi-pn-gate", "vit-w2v-pn", [0])),
    ("gate x intensity head, on normalised packs", "fusion",
     ("lv-fusion-pn", "vit-w2v-pn", [0]), ("lv-fusion-pn-gate", "vit-w2v-pn", [0])),
    ("loss 0.3 MSE + 0.7 (1 - r) (off: 1.0 MSE + 0.5 (1 - r))", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-loss37", "vit-w2v", [0])),
    ("batch 512, lr 6e-3 (off: batch 256, lr 3e-3)", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-b512", "vit-w2v", [0])),
    ("batch 128, lr 1.5e-3 (off: batch 256, lr 3e-3)", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-b128", "vit-w2v", [0])),
    ("batch 512, lr 6e-3, loss 0.3 MSE + 0.7 (1 - r)", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-b512-loss37", "vit-w2v", [0])),
    ("mean of the 3 best epochs' weights", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("lv-taemi-avg3", "vit-w2v", [0])),
    ("a second seed (predictions averaged)", "taemi",
     ("paper-taemi", "vit-w2v", [0]), ("paper-taemi", "vit-w2v", [0, 1])),
    ("a third seed (predictions averaged)", "taemi",
     ("paper-taemi", "vit-w2v", [0, 1]), ("paper-taemi", "vit-w2v", [0, 1, 2])),
]


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={ID_COLUMN: str}).set_index(ID_COLUMN)


def scores(experiment: str, backbone: str, seeds: list[int], data) -> dict | None:
    """CV, test single, test (fold mean) and job seconds of the seeds' mean predictions."""
    seed_dirs = [MODELS / experiment / backbone / f"seed{s}" for s in seeds]
    folds = sorted({p.parent.name for d in seed_dirs for p in d.glob("fold*/done.json")})
    if len(folds) < 5 or any(not (d / f / "done.json").is_file()
                             for d in seed_dirs for f in folds):
        return None
    oof = sum(read(d / "oof.csv")[list(TARGETS)] for d in seed_dirs) / len(seed_dirs)
    test = sum(read(d / "test.csv")[list(TARGETS)] for d in seed_dirs) / len(seed_dirs)
    y, y_test = labels_matrix(data.labels, oof.index), labels_matrix(data.test_labels,
                                                                      test.index)
    single = [score_table(y_test, read(d / f / "test.csv").loc[test.index, list(TARGETS)]
                          .to_numpy())["mean"] for d in seed_dirs for f in folds]
    seconds = [json.loads((d / f / "done.json").read_text())["seconds"]
               for d in seed_dirs for f in folds]
    return {"cv": score_table(y, oof.to_numpy())["mean"], "test_single": float(np.mean(single)),
            "test": score_table(y_test, test.to_numpy())["mean"],
            "seconds_per_job": float(np.mean(seconds)), "jobs": len(seconds)}


def main() -> None:
    data = open_data(load_config("configs/levers.yaml"))
    rows, lines = [], [
        "| lever | model | off: cv / test single / test | on: cv / test single / test | "
        "test on - off | s per fold job off / on |",
        "| --- | --- | --- | --- | ---: | --- |"]
    for lever, model, off, on in PAIRS:
        a, b = scores(*off, data), scores(*on, data)
        if a is None or b is None:
            continue
        rows.append({"lever": lever, "model": model, "off": a, "on": b})
        lines.append(
            f"| {lever} | {model} | {a['cv']:.3f} / {a['test_single']:.3f} / {a['test']:.3f} "
            f"| {b['cv']:.3f} / {b['test_single']:.3f} / {b['test']:.3f} "
            f"| {b['test'] - a['test']:+.3f} "
            f"| {a['seconds_per_job']:.0f} / {b['seconds_per_job']:.0f} |")
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "levers.md").write_text("    python benchmarks/bench_levers.py\n\n" + text + "\n")
    (OUT / "levers.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
