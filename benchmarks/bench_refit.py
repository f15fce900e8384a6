"""Rows and table of bench_refit.sh: refit on and off, per member and for the stack.

    python benchmarks/bench_refit.py row MODELS ENSEMBLES DATASET RECIPE MODE   (one JSON line)
    python benchmarks/bench_refit.py table ROWS.jsonl                           (markdown)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MEMBERS = ("rec-taemi", "rec-audio", "rec-fusion")


def row(models: Path, ensembles: Path, dataset: str, recipe: str, mode: str) -> dict:
    out = {"dataset": dataset, "recipe": recipe, "refit": mode == "true"}
    for member in MEMBERS:
        cv = json.loads((models / member / "cv.json").read_text())
        refit = cv.get("refit") or {}
        seconds = [json.loads(p.read_text())["seconds"]
                   for p in (models / member).glob("*/seed*/refit/done.json")]
        out[member] = {"cv": cv["overall"]["mean"], "test": cv["heldout_test"]["mean"],
                       "test_single": cv["heldout_test_single"],
                       "epochs": list(refit.get("epochs", {}).values()),
                       "share": refit.get("training_share"), "why": refit.get("why"),
                       "refit_seconds": round(sum(seconds), 1)}
    stack = json.loads((ensembles / f"refit-{mode}" / "cv.json").read_text())["leaderboard"]
    for entry in ("lightgbm stack", "ridge stack", "best single"):
        out[entry] = {"cv": stack[entry]["cv"]["mean"],
                      "test": stack[entry]["heldout_test"]["mean"]}
    return out


def table(rows: list[dict]) -> str:
    lines = ["| dataset | recipe | refit | fold models learn from | TAEMI test | audio test "
             "| fusion test | refit epochs (T/A/F) | refit s | ridge stack test "
             "| LightGBM stack CV | LightGBM stack test |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        epochs = "/".join(str(r[m]["epochs"][0]) if r[m]["epochs"] else "-" for m in MEMBERS)
        seconds = f"{sum(r[m]['refit_seconds'] for m in MEMBERS):.0f}" if r["refit"] else "-"
        lines.append(
            f"| {r['dataset']} | {r['recipe']} | {'on' if r['refit'] else 'off'} | "
            f"{r['rec-taemi']['share']:.0%} | "
            + " | ".join(f"{r[m]['test']:.3f}" for m in MEMBERS)
            + f" | {epochs} | {seconds} | {r['ridge stack']['test']:.3f} | "
            f"{r['lightgbm stack']['cv']:.3f} | {r['lightgbm stack']['test']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "row":
        models, ensembles, *rest = sys.argv[2:]
        print(json.dumps(row(Path(models), Path(ensembles), *rest)))
    else:
        print(table([json.loads(line) for line in Path(sys.argv[2]).read_text().splitlines()
                     if line.strip()]))
