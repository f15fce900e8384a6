"""The table of bench_inner_split.sh: the same runs with the inner selection split by
participant (the kit's rule) and by seed video (the patched worktree), per dataset and
recipe: TAEMI's fold models' best epochs and the refit epochs they gave, the search's
best inner objective against TAEMI's CV (how much the split overstates), each member's
CV / test single / submitted test, and what the stack submits with its CV and test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

MEMBERS = {"rec-taemi": "TAEMI", "rec-audio": "audio", "rec-fusion": "fusion"}


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def row(tree: Path, side: str, ds: str, recipe: str) -> dict | None:
    models, ensembles = tree / f"models/rb-{ds}/{recipe}", tree / f"ensembles/rb-{ds}/{recipe}"
    stack_path = ensembles / "recommended-stack" / "cv.json"
    if not stack_path.is_file():
        return None
    out: dict = {"dataset": ds, "recipe": recipe, "split": side}
    taemi = models / "rec-taemi"
    best = sorted(read(f)["best_epoch"] for f in taemi.glob("*/seed0/fold[0-9]/done.json"))
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
        cv = cvs[m]
        out[column] = (f"{cv['overall']['mean']:.3f} / {cv['heldout_test_single']:.3f} / "
                       f"{cv['heldout_test']['mean']:.3f}")
    stack = read(stack_path)
    board = stack["leaderboard"][stack["method"]]
    out["submits"] = stack["method"]
    out["stack cv / test"] = f"{board['cv']['mean']:.3f} / {board['heldout_test']['mean']:.3f}"
    return out


def main(participant: str, seed_video: str) -> None:
    rows = []
    for ds_folder in sorted(Path(seed_video, "models").glob("rb-disjoint-*")):
        ds = ds_folder.name.removeprefix("rb-")
        for recipe in ("chosen", "defaults"):
            for side, tree in (("participant", Path(participant)),
                               ("seed video", Path(seed_video))):
                got = row(tree, side, ds, recipe)
                if got:
                    rows.append(got)
    frame = pd.DataFrame(rows)
    print("member cells: CV / test single / submitted test (the refit model's)\n")
    lines = [" | ".join(frame.columns), " | ".join("---" for _ in frame.columns)]
    lines += [" | ".join(map(str, r)) for r in frame.itertuples(index=False)]
    print("\n".join(f"| {line} |" for line in lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
