"""Does the CV predict the held-out test? Each fold grouping against the test, per model.

On generated data the test labels are known, so a CV estimate can be set beside the score
it claims to predict. Like is compared with like: an OOF score is the score of single fold
models, so it is set against the mean held-out test score of those same fold models
("test single"); what averaging the fold models adds on the test is reported apart
("test mean", what a submission would score).

Models: `ridge` (a linear model on every pooled feature), `knn_text` (recalls the clips
whose words match: a seed-video memoriser) and, with --taemi, the kit's TAEMI from the
experiment folders `benchmarks/bench_cv.sh` trains (each grouping x selection rule).
Also printed: `taemi inspect`'s evidence and choice, and how well the inferred
participants match the generator's true ones (adjusted Rand index).

    python benchmarks/bench_cv.py --regime shared   --root data/full --taemi
    python benchmarks/bench_cv.py --regime disjoint --root data/full-disjoint --taemi
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from taemi.artifacts import read_json
from taemi.config import load_config
from taemi.data import ID_COLUMN, labels_matrix
from taemi.evidence import fold_groups
from taemi.folds import make_folds, purged, training_rows
from taemi.metrics import mean_pearson
from taemi.participants import clip_means
from taemi.pipeline import ensure_cache, ensure_participants, inspect_data, open_data
from taemi.plots import grouped_bars
from taemi.progress import set_quiet

GROUPINGS = ("none", "seed", "participant", "both")
FEATURES = (("text", 16), ("vit", 32), ("wav2vec2", 32))
TEXT = slice(0, 385)  # the transcript's mean embedding and its missing flag
MODELS = {
    "ridge": (slice(None), lambda: make_pipeline(StandardScaler(), Ridge(alpha=100.0))),
    "knn_text": (TEXT, lambda: make_pipeline(StandardScaler(), PCA(32, random_state=0),
                                              KNeighborsRegressor(5))),
}


def pooled(packs: dict, ids: list[str]) -> np.ndarray:
    """Mean over valid steps of text, vit and wav2vec2, each with its missing flag."""
    parts = []
    for name, steps in FEATURES:
        means, present = clip_means(packs[(name, steps)], ids)
        parts += [means, ~present[:, None]]
    return np.hstack(parts)


def cv_and_test(model: str, x: np.ndarray, y: np.ndarray, folds: pd.DataFrame,
                x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """OOF score; each fold model learns from `training_rows` (purged where `both` asks)."""
    columns, build = MODELS[model]
    oof, tests = np.zeros_like(y), []
    fold = folds["fold"].to_numpy()
    for k in np.unique(fold):
        held = fold == k
        train = folds[ID_COLUMN].isin(training_rows(folds, int(k))[ID_COLUMN]).to_numpy()
        fitted = build().fit(x[train][:, columns], y[train])
        oof[held] = fitted.predict(x[held][:, columns])
        tests.append(fitted.predict(x_test[:, columns]))
    return {"cv": mean_pearson(y, oof),
            "test_single": float(np.mean([mean_pearson(y_test, t) for t in tests])),
            "test_mean": mean_pearson(y_test, np.mean(tests, axis=0))}


def taemi_rows(regime: str, models_dir: Path) -> dict:
    rows = {}
    for path in sorted(models_dir.glob(f"cv-{regime}-*/cv-taemi/cv.json")):
        cv = read_json(path)
        run = path.parent.parent.name.removeprefix(f"cv-{regime}-")
        if run.count("-") != 1:  # <group_by>-<selection> only: not the 2-fold variants
            continue
        folds_json = Path(cv["folds_file"]).with_name("folds.json")
        chosen = read_json(folds_json)["chosen"] if folds_json.is_file() else "?"
        seconds = [read_json(p)["seconds"] for p in path.parent.rglob("done.json")]
        rows[run] = {"grouping": chosen, "selection": cv["selection"],
                     "cv": cv["overall"]["mean"], "test_single": cv["heldout_test_single"],
                     "test_mean": cv["heldout_test"]["mean"],
                     "train_seconds": round(float(np.sum(seconds)), 1)}
    return rows


def plot_gaps(out: dict, path: Path) -> Path:
    """cv - test single per model and grouping (TAEMI: its inner-selection runs)."""
    gaps = {model: {g: row["gap"] for g, row in rows.items() if "gap" in row}
            for model, rows in out["models"].items() if model != "taemi"}
    for row in out["models"].get("taemi", {}).values():
        if row["selection"] == "inner" and row.get("test_single") is not None:
            gaps.setdefault("taemi", {})[row["grouping"]] = row["cv"] - row["test_single"]
    table = pd.DataFrame(gaps).T.reindex(columns=list(GROUPINGS))
    return grouped_bars(table, path, f"{out['regime']} seed videos: CV minus single-model "
                        f"test (auto: {out['auto']})", columns=list(GROUPINGS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regime", choices=("shared", "disjoint"), required=True)
    parser.add_argument("--root", default="data/full")
    parser.add_argument("--config", default="configs/cv.yaml")
    parser.add_argument("--taemi", action="store_true", help="add the trained TAEMI runs")
    parser.add_argument("--models", default="models")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot from the JSON written before (and --taemi)")
    args = parser.parse_args()
    path = Path(f"benchmarks/results/cv-{args.regime}.json")
    if args.plot_only:
        out = json.loads(path.read_text())
        if args.taemi:
            out["models"]["taemi"] = taemi_rows(args.regime, Path(args.models))
        print(plot_gaps(out, path.with_suffix(".png")))
        return
    set_quiet(True)

    cfg = load_config(args.config, [f"data.root={args.root}",
                                    f"folds.path=folds/cv-{args.regime}-bench/folds.csv"])
    data = open_data(cfg)
    packs = ensure_cache(cfg, data, report=False)
    evidence, chosen, reason = inspect_data(cfg, data)
    participants = ensure_participants(cfg, data)
    truth = pd.read_csv(Path(args.root) / "heldout" / "clips.csv", dtype={ID_COLUMN: str})
    truth = truth.set_index(ID_COLUMN).loc[participants.ids, "participant"]
    out: dict = {"root": args.root, "regime": args.regime, "inspect": evidence.lines(),
                 "auto": chosen, "reason": reason,
                 "participants_ari": adjusted_rand_score(truth, participants.labels),
                 "participants_found": len(set(participants.labels)),
                 "participants_true": int(truth.nunique()), "models": {}}
    print("\n".join(out["inspect"]))
    print(f"auto -> {chosen}: {reason}")
    print(f"participants: ARI {out['participants_ari']:.4f} ({out['participants_found']} "
          f"found, {out['participants_true']} true)")

    labelled = data.labels[ID_COLUMN].tolist()
    x, y = pooled(packs, labelled), labels_matrix(data.labels, labelled)
    x_test = pooled(packs, data.test_ids)
    y_test = labels_matrix(data.test_labels, data.test_ids)
    for model in MODELS:
        out["models"][model] = {}
        for grouping in GROUPINGS:
            groups, purge = fold_groups(data, grouping, participants)
            folds = make_folds(data.labels, 5, seed=42, groups=groups, purge=purge)
            folds = folds.set_index(ID_COLUMN).loc[labelled].reset_index()
            row = cv_and_test(model, x, y, folds, x_test, y_test)
            if purge is not None:
                row["purged"] = float(np.mean([share for _, share in purged(folds)]))
            row["gap"] = row["cv"] - row["test_single"]
            out["models"][model][grouping] = row
            print(model, grouping, {k: round(v, 4) for k, v in row.items()}, flush=True)
    if args.taemi:
        out["models"]["taemi"] = taemi_rows(args.regime, Path(args.models))
        for run, row in out["models"]["taemi"].items():
            print("taemi", run, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"written: {path}, {plot_gaps(out, path.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
