"""The table of `bash benchmarks/bench_text.sh`: each model across the generator's text
knob (`synth.text_meaning`), CV and held-out test, seed 0, 5 participant folds.

    python benchmarks/bench_text.py

Writes benchmarks/results/text.md and text.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from taemi.config import load_config
from taemi.data import ID_COLUMN, TARGETS, labels_matrix, open_data
from taemi.metrics import score_table

OUT = Path("benchmarks/results")
# text_meaning -> (data root, {model: models/<experiment> folder})
LEVELS = {
    0.0: ("data/full", {"taemi": "models/paper-taemi", "unimodal_audio": "models/paper-audio",
                        "fusion": "models/paper-fusion", "unimodal_text": "models/text0/tx-text"}),
    **{level: (f"data/full-{tag}", {model: f"models/{tag}/{experiment}" for model, experiment in
                                     (("taemi", "tx-taemi"), ("unimodal_audio", "tx-audio"),
                                      ("fusion", "tx-fusion"), ("unimodal_text", "tx-text"))})
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


def main() -> None:
    cfg = load_config("configs/text.yaml")
    results: dict[str, dict] = {}
    for level, (root, folders) in LEVELS.items():
        data = open_data(cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"root": Path(root)})}))
        for model, folder in folders.items():
            found = seed0_scores(Path(folder), data)
            if found is not None:
                results.setdefault(model, {})[str(level)] = found
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
