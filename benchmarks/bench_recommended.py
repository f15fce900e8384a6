"""The table of bench_recommended.sh: per dataset and recipe, each member's CV, test
single and test mean (the refit models' where they refit), what the stack submits (the
method the nested CV picked) with its CV and test, the chosen recipe, and the wall time
and memory of each run's first, whole `taemi run`; then every stack candidate, and each
run's submitted stack against the chosen run's on the same folds, fold by fold. The
recipe "plain" is the kit's plain defaults (benchmarks/plain_defaults.yaml): its own
members, in the columns they fill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from taemi.data import ID_COLUMN, TARGETS, labels_matrix, read_labels
from taemi.metrics import fold_scores, paired_gap

# each recipe's members, by the column they fill, and its stack
MEMBERS = {"rec-taemi": "TAEMI", "rec-audio": "audio", "rec-fusion": "fusion"}
PLAIN = {"plain-taemi": "TAEMI", "plain-audio": "audio", "plain-text": "text",
         "plain-linear": "linear audio"}
COLUMNS = list(dict.fromkeys([*MEMBERS.values(), *PLAIN.values()]))


def member_cell(cv: dict) -> str:
    """A member's cell: CV / test single / test mean (the refit model's where it refit)."""
    return (f"{cv['overall']['mean']:.3f} / {cv['heldout_test_single']:.3f} / "
            f"{cv['heldout_test']['mean']:.3f}")


def stack_dir(ds: str, recipe: str) -> Path:
    """A run's stack folder (the plain defaults, and variants of their run, name theirs
    plain-stack)."""
    name = "plain-stack" if recipe.split("-")[0] == "plain" else "recommended-stack"
    return Path(f"ensembles/rb-{ds}/{recipe}/{name}")


def stack_cv(ds: str, recipe: str) -> dict:
    """The cv.json of a run's stack."""
    return json.loads((stack_dir(ds, recipe) / "cv.json").read_text())


def candidate_rows(ds: str, recipe: str) -> list[dict]:
    """Every candidate the stack chose from: nested CV, held-out test, and how far it
    trails the pick fold by fold (mean +- standard error; absent in older stacks)."""
    stack = stack_cv(ds, recipe)
    rows = []
    for method, entry in stack["leaderboard"].items():
        gap = entry.get("behind_pick")
        rows.append({"dataset": ds, "recipe": recipe,
                     "candidate": method + (" (submitted)" if method == stack["method"] else ""),
                     "cv": entry["cv"]["mean"], "test": entry["heldout_test"]["mean"],
                     "behind pick": f"{gap['mean']:.4f} +- {gap['se']:.4f}" if gap else ""})
    return rows


def submitted_fold_scores(ds: str, recipe: str, labels: pd.DataFrame) -> dict[str, float]:
    """The submitted stack's score in each fold of its OOF rows (`labels`: the dataset's
    labelled clips)."""
    oof = pd.read_csv(stack_dir(ds, recipe) / "oof.csv", dtype={ID_COLUMN: str})
    y = labels_matrix(labels, oof[ID_COLUMN])
    return fold_scores(y, oof[list(TARGETS)].to_numpy(), oof["fold"].to_numpy())


def against_chosen(frame: pd.DataFrame) -> pd.DataFrame:
    """How far each run's submitted stack CV trails the chosen run's on the same dataset,
    fold by fold (mean +- standard error; negative: it leads)."""
    rows = []
    for ds, runs in frame.groupby("dataset", sort=False):
        if "chosen" not in set(runs["recipe"]):
            continue
        labels = pd.concat([read_labels(f"data/rb-{ds}/{split}_split.csv")
                            for split in ("train", "valid")])
        chosen = submitted_fold_scores(ds, "chosen", labels)
        for recipe in runs["recipe"]:
            if recipe != "chosen":
                gap = paired_gap(chosen, submitted_fold_scores(ds, recipe, labels))
                rows.append({"dataset": ds, "recipe": recipe,
                             "behind chosen": f"{gap['mean']:.4f} +- {gap['se']:.4f}"})
    return pd.DataFrame(rows, columns=["dataset", "recipe", "behind chosen"])


def row(ds: str, recipe: str) -> dict:
    models = Path(f"models/rb-{ds}/{recipe}")
    members = PLAIN if recipe == "plain" else MEMBERS
    out: dict = {"dataset": ds, "recipe": recipe, **dict.fromkeys(COLUMNS, "")}
    cvs = {name: json.loads((models / name / "cv.json").read_text()) for name in members}
    for name, column in members.items():
        out[column] = member_cell(cvs[name])
    out["gap"] = max((cv["overall"]["mean"] - cv["heldout_test_single"] for cv in cvs.values()),
                     key=abs)
    stack = stack_cv(ds, recipe)
    board = stack["leaderboard"][stack["method"]]  # what the submission holds
    out["stack"] = stack["method"]
    out["stack cv"], out["stack test"] = board["cv"]["mean"], board["heldout_test"]["mean"]
    out["refit"] = ",".join(sorted({str(cv.get("refit", {}).get("used", False))
                                    for cv in cvs.values()}))
    out["chosen"] = ""
    tuned = next(iter(cvs.values())).get("tuned")
    if tuned:  # the study the members trained with: its best.yaml is the recipe
        best = yaml.safe_load((Path("runs/tune") / tuned["study"] / "best.yaml").read_text())
        exp = best["experiments"]["rec-taemi"]
        out["chosen"] = json.dumps({**exp.get("train", {}), **{
            k: v for k, v in exp["model"].items() if k in ("d_model", "head")}})
    return out


def markdown(frame: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r]
             for r in frame.itertuples(index=False)]
    lines = [" | ".join(frame.columns), " | ".join("---" for _ in frame.columns)]
    return "\n".join(f"| {line} |" for line in lines + [" | ".join(c) for c in cells])


def main(folder: str) -> None:
    times = pd.read_csv(Path(folder) / "times.tsv", sep="\t", header=None,
                        names=["dataset", "recipe", "wall_s", "peak_kb"])
    times = times.groupby(["dataset", "recipe"]).first().reset_index()  # the whole run
    rows = []
    for _, t in times.iterrows():
        if not Path(f"models/rb-{t['dataset']}/{t['recipe']}").is_dir():
            continue  # timed on another machine or checkout: its models are not here
        r = row(t["dataset"], t["recipe"])
        r["wall"] = f"{t['wall_s'] / 60:.1f} min"
        r["peak"] = f"{t['peak_kb'] / 1e6:.1f} GB"
        rows.append(r)
    frame = pd.DataFrame(rows)
    candidates = pd.DataFrame([c for _, r in frame.iterrows()
                               for c in candidate_rows(r["dataset"], r["recipe"])])
    print("member cells: cv / test single / test mean\n")
    print(markdown(frame.drop(columns=["gap"])))
    print("\nlargest |cv - test single| of a member, per run:")
    print(markdown(frame[["dataset", "recipe", "gap"]]))
    print("\nevery candidate of each stack: nested CV, test, and its CV behind the pick:")
    print(markdown(candidates))
    print("\neach run's submitted stack CV behind the chosen run's, fold by fold:")
    print(markdown(against_chosen(frame)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/recommended")
