"""How many epochs a refit should run: its fold models' median best epoch times the
training share (the share of the CV rows a fold model learns from) to some exponent.
The kit's rules (`experiments.<name>.refit_epochs`): `median` (exponent 0: the count the
CV chose), `sqrt` (1/2) and `auto` (0 at 1,266 CV rows, 1/2 from 12,660, by log rows
between, 0 for a member whose median is the epoch cap); this probe's (run under `sqrt`'s
setting, so at the cap too): `root4` (1/4), `steps` (1: the optimiser steps a fold model took
to its best epoch) and `longer` (-1/2). Where the folds purge seed videos a fold model
learns from about a seventh of the rows the refit learns from, so `median` gives the
refit about seven times the steps its fold models were stopped at.

For a finished bench_recommended.sh run it makes a variant run beside it (`<recipe>-refit-
<rule>`: the run's models, stacks and study copied, so only the refit jobs retrain and
the stack refits on them; robustness tables skipped) and runs `taemi run` there with the
rule: a kit rule set in the config, a probe's exponent patched into taemi.experiment for
this process (not a kit path: the fold jobs, their keys and the OOF rows stay as they
were). Then it prints one table row per run: each member's refit epochs and held-out
test, and the submitted stack's CV and test. The rule `run` names the run itself (made
under the kit's rule of its day: `median` for the runs before `auto`).

    python benchmarks/refit_epochs.py DS RECIPE RULE -- TAEMI_RUN_ARGS...   (one variant)
    python benchmarks/refit_epochs.py --table DS:RECIPE:RULE ...            (the rows)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench_recommended import COLUMNS, MEMBERS, PLAIN, stack_cv

import taemi.experiment
from taemi.cli import main as taemi_main

KIT_RULES = ("median", "sqrt", "auto")
PROBE_EXPONENTS = {"root4": 0.25, "steps": 1.0, "longer": -0.5}
COPIED = ("models", "ensembles", "runs")  # what the variant starts from


def variant(recipe: str, rule: str) -> str:
    return recipe if rule == "run" else f"{recipe}-refit-{rule}"


def members(recipe: str) -> dict[str, str]:
    return PLAIN if recipe.split("-")[0] == "plain" else MEMBERS


def run_variant(ds: str, recipe: str, rule: str, args: list[str]) -> None:
    """Copy the finished run to its variant's folders, then `taemi run` there (ARGS: the
    run's own arguments, their paths pointing at the variant's)."""
    target = variant(recipe, rule)
    for kind in COPIED:
        source, dest = Path(f"{kind}/rb-{ds}/{recipe}"), Path(f"{kind}/rb-{ds}/{target}")
        if not dest.exists():
            shutil.copytree(source, dest)
    args = [a.replace(f"/rb-{ds}/{recipe}", f"/rb-{ds}/{target}") for a in args]
    setting = rule if rule in KIT_RULES else "sqrt"  # a probe's exponent replaces sqrt's:
    for experiment in members(recipe):  # every member shrinks, at the cap too (no auto)
        args += ["--set", f"experiments.{experiment}.robustness=false",
                 "--set", f"experiments.{experiment}.refit_epochs={setting}"]
    if rule in PROBE_EXPONENTS:
        taemi.experiment.refit_exponent = lambda setting, cv_rows: PROBE_EXPONENTS[rule]
    taemi_main(["run", *args])


def table_row(ds: str, recipe: str, rule: str) -> str:
    models = Path(f"models/rb-{ds}/{variant(recipe, rule)}")
    cells = dict.fromkeys(COLUMNS, "")
    for name, column in members(recipe).items():
        cv = json.loads((models / name / "cv.json").read_text())
        cells[column] = (f"{next(iter(cv['refit']['epochs'].values()))} / "
                         f"{cv['heldout_test']['mean']:.3f}")
        share = cv["refit"]["training_share"]
    stack = stack_cv(ds, variant(recipe, rule))
    board = stack["leaderboard"][stack["method"]]
    return " | ".join([ds, recipe, rule, f"{share:.0%}", *cells.values(), stack["method"],
                       f"{board['cv']['mean']:.4f}", f"{board['heldout_test']['mean']:.4f}"])


def main(argv: list[str]) -> None:
    if argv[0] == "--table":
        print("| dataset | recipe | rule | fold models learn from | "
              + " | ".join(f"{c} epochs / test" for c in COLUMNS)
              + " | submitted | stack CV | stack test |")
        print("| --- | --- | --- | ---: | " + "--- | " * len(COLUMNS) + "--- | ---: | ---: |")
        for spec in argv[1:]:
            print(f"| {table_row(*spec.split(':'))} |")
        return
    ds, recipe, rule, sep, *args = argv
    if rule not in (*KIT_RULES, *PROBE_EXPONENTS) or sep != "--":
        raise SystemExit(__doc__)
    run_variant(ds, recipe, rule, args)


if __name__ == "__main__":
    main(sys.argv[1:])
