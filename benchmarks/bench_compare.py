"""Runs of the recommended file side by side, each side a tree and a recipe (bench_inner_split.sh:
the inner split by participant and by seed video; bench_epochs40.sh: 20 and 40 epochs),
per dataset with seed videos disjoint: TAEMI's fold models' best epochs and the refit
epochs they gave, the search's best inner objective against TAEMI's CV (how much the
inner split overstates), each member's CV / test single / submitted test, and what the
stack submits with its CV and test.
    python benchmarks/bench_compare.py LABEL:TREE:RECIPE [LABEL:TREE:RECIPE ...]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from bench_recommended import MEMBERS, markdown, member_cell


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def row(tree: Path, side: str, ds: str, recipe: str) -> dict | None:
    models, ensembles = tree / f"models/rb-{ds}/{recipe}", tree / f"ensembles/rb-{ds}/{recipe}"
    stack_path = ensembles / "recommended-stack" / "cv.json"
    if not stack_path.is_file():
        return None
    out: dict = {"dataset": ds, "side": side}
    best = sorted(read(f)["best_epoch"]
                  for f in (models / "rec-taemi").glob("*/seed0/fold[0-9]/done.json"))
    out["TAEMI best epochs"] = " ".join(map(str, best))
    cvs = {m: read(models / m / "cv.json") for m in MEMBERS}
    out["refit epochs (T/A/F)"] = "/".join(
        "/".join(map(str, cvs[m].get("refit", {}).get("epochs", {}).values())) or "-"
        for m in MEMBERS)
    tuned = cvs["rec-taemi"].get("tuned")
    out["search best / TAEMI cv"] = ""
    if tuned:
        trials = pd.read_csv(tree / "runs/tune" / tuned["study"] / "trials.csv")
        out["search best / TAEMI cv"] = (f"{trials['value'].max():.3f} / "
                                         f"{cvs['rec-taemi']['overall']['mean']:.3f}")
    for m, column in MEMBERS.items():
        out[column] = member_cell(cvs[m])
    stack = read(stack_path)
    board = stack["leaderboard"][stack["method"]]
    out["submits"] = stack["method"]
    out["stack cv / test"] = f"{board['cv']['mean']:.3f} / {board['heldout_test']['mean']:.3f}"
    return out


def main(sides: list[str]) -> None:
    parsed = [side.split(":") for side in sides]
    datasets = sorted({p.name.removeprefix("rb-") for _, tree, _ in parsed
                       for p in Path(tree, "models").glob("rb-disjoint-*")})
    rows = [got for ds in datasets for label, tree, recipe in parsed
            if (got := row(Path(tree), f"{label} ({recipe})", ds, recipe))]
    print("member cells: CV / test single / submitted test (the refit model's)\n")
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
