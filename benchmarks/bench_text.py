"""The table of `bash benchmarks/bench_text.sh`: each model across the generator's text
knob (`synth.text_meaning`), CV and held-out test, seed 0, 5 participant folds, and a
model-free view of what the words say: a ridge on each clip's mean word vector.

    python benchmarks/bench_text.py

Writes benchmarks/results/text.md and text.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from taemi.cache import build_packed
from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.folds import HOLDOUT, read_folds, training_rows
from taemi.metrics import mean_pearson, score_table
from taemi.participants import clip_means

OUT = Path("benchmarks/results")
# text_meaning -> (data root, folds file, {model: models/<experiment> folder})
EXPERIMENTS = (("taemi", "tx-taemi"), ("unimodal_audio", "tx-audio"), ("fusion", "tx-fusion"),
               ("unimodal_text", "tx-text"))
LEVELS = {
    0.0: ("data/full", "folds/cv-shared-auto/folds.csv",
          {"taemi": "models/paper-taemi", "unimodal_audio": "models/paper-audio",
           "fusion": "models/paper-fusion", "unimodal_text": "models/text0/tx-text"}),
    **{level: (f"data/full-{tag}", f"folds/{tag}/folds.csv",
               {model: f"models/{tag}/{experiment}" for model, experiment in EXPERIMENTS})
       for level, tag in ((0.5, "text05"), (1.0, "text1"))},
}


def seed0_scores(folder: Path, data) -> dict | None:
    seed = folder / "vit-w2v" / "seed0"
    if len(list(seed.glob("fold*/done.json"))) < 5:
        return None
    oof = pd.read_csv(seed / "oof.csv", dtype={ID_COLUMN: str})
    test = pd.read_csv(seed / "test.csv", dtype={ID_COLUMN: str})
    return {"cv": score_table(labels_matrix(data.labels, oof[ID_COLUMN]),
                              oof[list(TARGETS)].to_numpy())["mean"],
            "test": score_table(labels_matrix(data.test_labels, test[ID_COLUMN]),
                                test[list(TARGETS)].to_numpy())["mean"]}


def word_ridge(data, folds_path: Path, cache_dir: Path) -> dict | None:
    """Ridge (alpha 100) on each clip's mean word vector over the participant folds: what
    the words say, whatever a network makes of them."""
    if not folds_path.is_file():
        return None
    folds = read_folds(folds_path)
    folds = folds[folds["fold"] != HOLDOUT].reset_index(drop=True)
    pack = build_packed(data, "text", 16, cache_dir, workers=1)
    x, _ = clip_means(pack, folds[ID_COLUMN].tolist())
    x_test, _ = clip_means(pack, data.test_ids)
    y = labels_matrix(data.labels, folds[ID_COLUMN])
    oof, tests = np.zeros_like(y), []
    for k in sorted(folds["fold"].unique()):
        train = folds[ID_COLUMN].isin(training_rows(folds, int(k))[ID_COLUMN]).to_numpy()
        model = make_pipeline(StandardScaler(), Ridge(alpha=100.0)).fit(x[train], y[train])
        oof[(folds["fold"] == k).to_numpy()] = model.predict(x[(folds["fold"] == k).to_numpy()])
        tests.append(model.predict(x_test))
    return {"cv": mean_pearson(y, oof),
            "test": mean_pearson(labels_matrix(data.test_labels, data.test_ids),
                                 np.mean(tests, axis=0))}


def main() -> None:
    cfg = load_config("configs/text.yaml")
    results: dict[str, dict] = {}
    for level, (root, folds_path, folders) in LEVELS.items():
        data = open_data(cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"root": Path(root)})}))
        for model, folder in folders.items():
            found = seed0_scores(Path(folder), data)
            if found is not None:
                results.setdefault(model, {})[str(level)] = found
        found = word_ridge(data, Path(folds_path), cfg.cache.dir)
        if found is not None:
            results.setdefault("ridge on the mean word vector", {})[str(level)] = found
    levels = [str(level) for level in LEVELS]
    lines = ["| model | " + " | ".join(f"text_meaning {lv}: cv / test" for lv in levels) + " |",
             "| --- |" + " ---: |" * len(levels)]
    for model, by_level in results.items():
        cells = [f"{by_level[lv]['cv']:.3f} / {by_level[lv]['test']:.3f}" if lv in by_level
                 else "not run" for lv in levels]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "text.md").write_text("    bash benchmarks/bench_text.sh\n\n" + text + "\n")
    (OUT / "text.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
