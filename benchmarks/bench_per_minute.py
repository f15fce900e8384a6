"""Rows and table of bench_per_minute.sh: each addition's stack and TAEMI scores against
the base, and the minutes its `taemi train` took (only its new jobs train).

    python benchmarks/bench_per_minute.py row DATASET VARIANT MODELS STACK   (one JSON line)
    python benchmarks/bench_per_minute.py table ROWS.jsonl TIMES.tsv         (markdown)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(dataset: str, variant: str, models: Path, stack: Path) -> dict:
    member = {"wider": "rec-wide", "prototypes": "rec-protos"}.get(variant, "rec-taemi")
    taemi = json.loads((models / member / "cv.json").read_text())
    return {"dataset": dataset, "variant": variant,
            "taemi_cv": taemi["overall"]["mean"], "taemi_test": taemi["heldout_test"]["mean"],
            **stack_scores(stack)}


def stack_scores(stack: Path) -> dict:
    """What the stack submits (the method `stack.method: cv` picked) and the LightGBM
    stack, CV and test."""
    cv = json.loads((stack / "cv.json").read_text())
    board, lightgbm = cv["leaderboard"][cv["method"]], cv["leaderboard"]["lightgbm stack"]
    return {"method": cv["method"], "stack_cv": board["cv"]["mean"],
            "stack_test": board["heldout_test"]["mean"], "lightgbm_cv": lightgbm["cv"]["mean"],
            "lightgbm_test": lightgbm["heldout_test"]["mean"]}


def table(rows: list[dict], times: dict[tuple[str, str], float]) -> str:
    """Each variant's latest row; TAEMI's cells are the added member's for `wider` (the
    wider TAEMI) and `prototypes` (taemi_prototypes)."""
    rows = list({(r["dataset"], r["variant"]): r for r in rows}.values())
    base = {r["dataset"]: r for r in rows if r["variant"] == "base"}
    lines = ["| dataset | variant | TAEMI CV / test | LightGBM stack CV / test | submits "
             "| its CV / test | test - base | train minutes | test gain per minute |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        gain = r["stack_test"] - base[r["dataset"]]["stack_test"]
        minutes = times[(r["dataset"], r["variant"])] / 60
        per = f"{gain / minutes:+.4f}" if r["variant"] != "base" and minutes > 0.5 else ""
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['taemi_cv']:.3f} / "
                     f"{r['taemi_test']:.3f} | {r['lightgbm_cv']:.3f} / "
                     f"{r['lightgbm_test']:.3f} | {r['method']} | {r['stack_cv']:.3f} / "
                     f"{r['stack_test']:.3f} | {gain:+.3f} | {minutes:.1f} | {per} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "row":
        dataset, variant, models, stack = sys.argv[2:]
        print(json.dumps(row(dataset, variant, Path(models), Path(stack))))
    else:
        times = {}
        for line in Path(sys.argv[3]).read_text().splitlines():
            dataset, variant, seconds, _ = line.split("\t")
            times[(dataset, variant)] = float(seconds)
        print(table([json.loads(x) for x in Path(sys.argv[2]).read_text().splitlines()
                     if x.strip()], times))
