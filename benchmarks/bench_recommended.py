"""The table of bench_recommended.sh: per dataset and recipe, each member's CV, test
single and test mean (the refit models' where they refit), what the stack submits (the
method the nested CV picked) with its CV and test, the chosen recipe, and the wall time
and memory of each run's first, whole `taemi run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml

MEMBERS = ("rec-taemi", "rec-audio", "rec-fusion")


def row(ds: str, recipe: str) -> dict:
    models, ensembles = Path(f"models/rb-{ds}/{recipe}"), Path(f"ensembles/rb-{ds}/{recipe}")
    out: dict = {"dataset": ds, "recipe": recipe}
    for name in MEMBERS:
        cv = json.loads((models / name / "cv.json").read_text())
        out[name] = (f"{cv['overall']['mean']:.3f} / {cv['heldout_test_single']:.3f} / "
                     f"{cv['heldout_test']['mean']:.3f}")
        out[f"{name} gap"] = cv["overall"]["mean"] - cv["heldout_test_single"]
    stack = json.loads((ensembles / "recommended-stack" / "cv.json").read_text())
    board = stack["leaderboard"][stack["method"]]  # what the submission holds
    out["stack"] = stack["method"]
    out["stack cv"], out["stack test"] = board["cv"]["mean"], board["heldout_test"]["mean"]
    out["refit"] = ",".join(sorted({str(json.loads((models / m / "cv.json").read_text())
                                        .get("refit", {}).get("used", False)) for m in MEMBERS}))
    out["chosen"] = ""
    tuned = json.loads((models / "rec-taemi" / "cv.json").read_text()).get("tuned")
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
        r = row(t["dataset"], t["recipe"])
        r["wall"] = f"{t['wall_s'] / 60:.1f} min"
        r["peak"] = f"{t['peak_kb'] / 1e6:.1f} GB"
        rows.append(r)
    frame = pd.DataFrame(rows)
    print("member cells: cv / test single / test mean\n")
    print(markdown(frame.drop(columns=[f"{m} gap" for m in MEMBERS])))
    print("\nlargest |cv - test single| of a member:",
          f"{frame[[f'{m} gap' for m in MEMBERS]].abs().max().max():.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/recommended")
