"""How the test predictions a stack is applied to compare with the OOF predictions it
learnt on: per member, the standard deviation and mean of each target's predictions,
averaged over the six targets, in oof.csv (fold models, the labelled rows) and test.csv
(what the stack reads: the fold models' mean, or the refit model where the member refit).
    python benchmarks/prediction_spread.py MEMBER_DIR [MEMBER_DIR ...]
(a member's backbone folder, e.g. models/rb-disjoint-s11-x0.1/chosen/rec-taemi/vit-w2v-pn)"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from taemi.data import TARGETS


def spread(folder: Path) -> dict:
    oof, test = (pd.read_csv(folder / f"{part}.csv")[list(TARGETS)] for part in ("oof", "test"))
    return {"member": str(folder), "rows oof / test": f"{len(oof)} / {len(test)}",
            "std oof": oof.std().mean(), "std test": test.std().mean(),
            "test / oof std": test.std().mean() / oof.std().mean(),
            "mean oof": oof.mean().mean(), "mean test": test.mean().mean()}


if __name__ == "__main__":
    print(pd.DataFrame([spread(Path(d)) for d in sys.argv[1:]]).round(3).to_string(index=False))
