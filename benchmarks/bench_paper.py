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
from bench_levers import scores

from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.metrics import score_table

OUT = Path("benchmarks/results")


def seed_scores(folder: Path, backbone: str, seeds: list[int], data) -> tuple[list, str]:
    """Each seed's CV, test single and test, over all 5 folds where some seed has them
    (those seeds only), else over fold 0 (the rows of an earlier round)."""
    complete = [{"seed": s, **found} for s in seeds
                if (found := scores(folder.name, backbone, [s], data)) is not None]
    if complete:
        return complete, "5 folds"
    rows = []
    for seed in seeds:
        fold = folder / backbone / f"seed{seed}" / "fold0"
        if not (fold / "done.json").is_file():
            continue
        oof = pd.read_csv(fold / "oof.csv", dtype={ID_COLUMN: str})
        test = pd.read_csv(fold / "test.csv", dtype={ID_COLUMN: str})
        test_score = score_table(labels_matrix(data.test_labels, test[ID_COLUMN]),
                                 test[list(TARGETS)].to_numpy())["mean"]
        rows.append({"seed": seed, "cv": score_table(
            labels_matrix(data.labels, oof[ID_COLUMN]), oof[list(TARGETS)].to_numpy())["mean"],
            "test_single": test_score, "test": test_score})
    return rows, "fold 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.yaml")
    args = parser.parse_args()
    cfg = load_config(args.config)
    data = open_data(cfg)
    summary, lines = {}, [
        "| experiment | model | head | folds | seeds | cv per seed | test single per seed | "
        "test per seed | cv, seeds averaged | test, seeds averaged |",
        "| --- | --- | --- | --- | ---: | --- | --- | --- | ---: | ---: |"]
    for name, exp in cfg.experiments.items():
        folder = cfg.paths.models / name
        backbone = cfg.backbones_for(name)[0]
        seeds, folds = seed_scores(folder, backbone, sorted({*exp.seeds, 0, 1, 2}), data)
        if not seeds:
            continue
        both = scores(name, backbone, [s["seed"] for s in seeds], data) \
            if folds == "5 folds" else None
        params = exp.model.params()
        row = {"model": exp.model.name, "params": params, "folds": folds,
               "seeds": [s["seed"] for s in seeds], "per_seed": seeds,
               "cv": both["cv"] if both else float(np.mean([s["cv"] for s in seeds])),
               "test": both["test"] if both else float(np.mean([s["test"] for s in seeds]))}
        summary[name] = row
        model = exp.model.name + (" +projection" if params.get("projection") else "")
        cells = [", ".join(f"{v[key]:.3f}" for v in seeds)
                 for key in ("cv", "test_single", "test")]
        lines.append(f"| {name} | {model} | {params.get('head', 'sigmoid')} | {folds} | "
                     f"{len(seeds)} | " + " | ".join(cells) +
                     f" | {row['cv']:.3f} | {row['test']:.3f} |")
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
