"""How many epochs a refit should run: the kit's rule (`median`: the median of its fold
models' best epochs) against that count scaled by the fold models' training share
(`steps`: the same number of optimiser steps as a fold model at its best epoch), by its
square root (`sqrt`: half way, on a log scale) or by one over its square root
(`longer`). Where the folds purge seed videos, a fold model learns from about a tenth
of the rows the refit learns from, so the kit's rule gives the refit about ten times the
steps its fold models were stopped at.

For a finished bench_recommended.sh run it makes a variant run beside it (`<recipe>-refit-
<rule>`: the run's models, stacks and study copied, so only the refit jobs retrain and
the stack refits on them; robustness tables skipped) and runs `taemi run` there with the
rule in place of the kit's, patched into taemi.experiment and taemi.plan for this process
(a benchmark's probe, not a kit path: the fold jobs, their keys and the OOF rows stay as
they were). Then it prints one table row per run: each member's refit epochs and
held-out test, and the submitted stack's CV and test.

    python benchmarks/refit_epochs.py DS RECIPE RULE -- TAEMI_RUN_ARGS...   (one variant)
    python benchmarks/refit_epochs.py --table DS:RECIPE[:RULE] ...         (the rows)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from bench_recommended import MEMBERS, stack_cv

import taemi.experiment
import taemi.plan
from taemi.cli import main as taemi_main

RULES = {"median": lambda share: 1.0, "sqrt": np.sqrt, "steps": lambda share: share,
         "longer": lambda share: 1 / np.sqrt(share)}
COPIED = ("models", "ensembles", "runs")  # what the variant starts from


def variant(recipe: str, rule: str) -> str:
    return recipe if rule == "median" else f"{recipe}-refit-{rule}"


def patch_refit_epochs(rule: str) -> None:
    """Every refit job of this process runs the rule's epochs: the kit's median best
    epoch times the rule's factor of the experiment's training share, at least 1."""
    kit_refit_jobs = taemi.experiment.refit_jobs

    def refit_jobs(cfg, experiment, folds, fingerprints=None):
        share = taemi.experiment.refit_decision(cfg, experiment, folds)["training_share"]
        factor = float(RULES[rule](share))
        return [dataclasses.replace(job, epochs=max(1, round(job.epochs * factor)))
                for job in kit_refit_jobs(cfg, experiment, folds, fingerprints)]

    taemi.experiment.refit_jobs = refit_jobs
    taemi.plan.refit_jobs = refit_jobs


def run_variant(ds: str, recipe: str, rule: str, args: list[str]) -> None:
    """Copy the finished run to its variant's folders, then `taemi run` there (ARGS: the
    run's own arguments, their paths pointing at the variant's)."""
    target = variant(recipe, rule)
    for kind in COPIED:
        source, dest = Path(f"{kind}/rb-{ds}/{recipe}"), Path(f"{kind}/rb-{ds}/{target}")
        if not dest.exists():
            shutil.copytree(source, dest)
    args = [a.replace(f"/rb-{ds}/{recipe}", f"/rb-{ds}/{target}") for a in args]
    for experiment in MEMBERS:
        args += ["--set", f"experiments.{experiment}.robustness=false"]
    patch_refit_epochs(rule)
    taemi_main(["run", *args])


def table_row(ds: str, recipe: str, rule: str) -> str:
    models = Path(f"models/rb-{ds}/{variant(recipe, rule)}")
    cvs = [json.loads((models / name / "cv.json").read_text()) for name in MEMBERS]
    cells = [f"{next(iter(cv['refit']['epochs'].values()))} / {cv['heldout_test']['mean']:.3f}"
             for cv in cvs]
    stack = stack_cv(ds, variant(recipe, rule))
    board = stack["leaderboard"][stack["method"]]
    return " | ".join([ds, recipe, rule, f"{cvs[0]['refit']['training_share']:.0%}", *cells,
                       stack["method"], f"{board['cv']['mean']:.4f}",
                       f"{board['heldout_test']['mean']:.4f}"])


def main(argv: list[str]) -> None:
    if argv[0] == "--table":
        print("| dataset | recipe | rule | fold models learn from | TAEMI epochs / "
              "test | audio | fusion | submitted | stack CV | stack test |")
        print("| --- | --- | --- | ---: | --- | --- | --- | --- | ---: | ---: |")
        for spec in argv[1:]:
            ds, recipe, *rule = spec.split(":")
            print(f"| {table_row(ds, recipe, rule[0] if rule else 'median')} |")
        return
    ds, recipe, rule, sep, *args = argv
    if rule not in RULES or sep != "--":
        raise SystemExit(__doc__)
    run_variant(ds, recipe, rule, args)


if __name__ == "__main__":
    main(sys.argv[1:])
