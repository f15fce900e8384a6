"""What a fitted stack over refit members does with other test inputs. The stack learns
on fold models' OOF predictions; where a member refit, `taemi stack` applies it to the
refit model's test predictions, which have 1.3-2.1x the OOF spread where seed videos are
disjoint (prediction_spread.py). Two alternatives, each restacked on the same members:
  moment  each refit member's test predictions mapped, target by target, onto the mean
          and standard deviation of its OOF predictions (no label read);
  folds   each fold model's own test predictions (`stack.test_inputs: fold_models` as if
          nothing refit), the refit models unused.
The OOF inputs are the same in all three, so the nested CV cannot tell them apart: only
the held-out test can, and this script reads it only to report.
    python benchmarks/refit_stack_inputs.py CONFIG [key=value ...]
(the config and overrides of a finished `taemi run`, as bench_recommended.sh passes them;
refit_stack_inputs.sh runs it over that script's runs). It writes nothing under the
run's own folders: each variant stacks into a temporary folder."""

from __future__ import annotations

import sys
import tempfile

import numpy as np

import taemi.stacking as stacking
from taemi.artifacts import read_json
from taemi.config import load_config
from taemi.pipeline import ensure_folds, open_data, run_config
from taemi.progress import set_quiet

VARIANTS = ("raw", "moment", "folds")
_load_level1 = stacking.load_level1


def refit_members(cfg, level1: stacking.Level1) -> list[int]:
    """The members whose test predictions come from refit models."""
    return [i for i, name in enumerate(level1.names)
            if (read_json(cfg.paths.models / name.split("/")[0] / "cv.json").get("refit")
                or {}).get("used")]


def with_test_inputs(variant: str):
    """load_level1, its test inputs replaced as `variant` says."""
    def load(cfg, stack, folds, test_ids):
        level1 = _load_level1(cfg, stack, folds, test_ids)
        if variant == "moment":
            test = level1.test.copy()
            for i in refit_members(cfg, level1):
                oof, t = level1.oof[:, i], test[:, i]
                test[:, i] = (t - t.mean(0)) / t.std(0) * oof.std(0) + oof.mean(0)
            level1.test, level1.test_by_fold = test, test[None]
        elif variant == "folds":
            members = stacking._members(cfg, stack)
            by_fold = np.stack([
                np.stack([stacking._fold_test(n, members[n][1], f, level1.test_ids)
                          for n in level1.names], axis=1)
                for f in sorted(np.unique(level1.fold))])
            level1.test, level1.test_by_fold, level1.refit = by_fold.mean(0), by_fold, False
        return level1
    return load


def main(config: str, overrides: list[str]) -> None:
    set_quiet(True)
    base = load_config(config, overrides)
    data = open_data(base)
    folds = ensure_folds(base, data)
    packs = stacking.meta_packs(base, data)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            cfg = run_config(load_config(config, [*overrides, f"paths.ensembles={tmp}/{variant}"]),
                             data, folds)
            stacking.load_level1 = with_test_inputs(variant)
            try:
                cv = stacking.run_stack(cfg, data, folds, packs)
            finally:
                stacking.load_level1 = _load_level1
            for method, entry in stacking.leaderboard_entries(cv):
                row = rows.setdefault(method, {"cv": entry["cv"]["mean"]})
                row[variant] = entry["heldout_test"]["mean"]
            rows[cv["method"]]["pick"] = "pick"
    for method, row in rows.items():
        tests = " | ".join(f"{row[v]:.3f}" for v in VARIANTS)
        print(f"| {method} | {row['cv']:.3f} | {tests} | {row.get('pick', '')} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
