"""The table of `bash benchmarks/bench_paper.sh`: taemi_paper against the kit's models.

Reads each experiment's cv.json (models/<name>/) and its seeds' test predictions, scores
each seed on the held-out test labels, and writes benchmarks/results/paper.md and
paper.json, with the robustness tables of both TAEMIs beside them.

    python benchmarks/bench_paper.py [--config configs/paper.yaml]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.metrics import score_table

OUT = Path("benchmarks/results")


def seed_scores(folder: Path, backbone: str, seeds: list[int], data) -> list[dict]:
    """Each seed's OOF and held-out test mean Pearson (test: its fold models' mean)."""
    rows = []
    for seed in seeds:
        seed_dir = folder / backbone / f"seed{seed}"
        if not (seed_dir / "oof.csv").is_file():
            continue
        oof = pd.read_csv(seed_dir / "oof.csv", dtype={ID_COLUMN: str})
        test = pd.read_csv(seed_dir / "test.csv", dtype={ID_COLUMN: str})
        rows.append({
            "seed": seed,
            "cv": score_table(labels_matrix(data.labels, oof[ID_COLUMN]),
                              oof[list(TARGETS)].to_numpy())["mean"],
            "test": score_table(labels_matrix(data.test_labels, test[ID_COLUMN]),
                                test[list(TARGETS)].to_numpy())["mean"],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.yaml")
    args = parser.parse_args()
    cfg = load_config(args.config)
    data = open_data(cfg)
    summary, lines = {}, [
        "| experiment | model | head | seeds | cv per seed | cv (seeds averaged) | "
        "test per seed | test single | test mean (seeds averaged) |",
        "| --- | --- | --- | ---: | --- | ---: | --- | ---: | ---: |"]
    for name, exp in cfg.experiments.items():
        folder = cfg.paths.models / name
        if not (folder / "cv.json").is_file():
            continue
        cv = json.loads((folder / "cv.json").read_text())
        seeds = seed_scores(folder, cfg.backbones_for(name)[0], exp.seeds, data)
        params = exp.model.params()
        row = {"model": exp.model.name, "params": params, "seeds": [s["seed"] for s in seeds],
               "cv_per_seed": [s["cv"] for s in seeds], "test_per_seed": [s["test"] for s in seeds],
               "cv": cv["overall"]["mean"], "test_single": cv["heldout_test_single"],
               "test_mean": cv["heldout_test"]["mean"], "folds": cv["folds"]}
        summary[name] = row
        model = exp.model.name + (" +projection" if params.get("projection") else "")
        lines.append(
            f"| {name} | {model} | {params.get('head', 'sigmoid')} | {len(seeds)} | "
            + ", ".join(f"{v:.3f}" for v in row["cv_per_seed"])
            + f" | {row['cv']:.3f} | " + ", ".join(f"{v:.3f}" for v in row["test_per_seed"])
            + f" | {row['test_single']:.3f} | {row['test_mean']:.3f} |")
    robust = {}
    for name in ("paper-taemi-paper", "paper-taemi"):
        source = cfg.paths.models / name / "robustness.csv"
        if source.is_file():
            shutil.copy(source, OUT / f"robustness-{name}.csv")
            robust[name] = pd.read_csv(source).set_index("condition")["mean"]
    if robust:
        table = pd.DataFrame(robust)
        lines += ["", "| removed | " + " | ".join(table.columns) + " |",
                  "| --- |" + " ---: |" * len(table.columns)]
        for condition, values in table.iterrows():
            lines.append(f"| {condition} | " + " | ".join(
                f"{v:.3f}" if np.isfinite(v) else "" for v in values) + " |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "paper.md").write_text("\n".join(lines) + "\n")
    (OUT / "paper.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
