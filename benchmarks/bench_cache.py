"""Packed cache vs. per-step pickle reads: one epoch of training batches.

The teams' public code reads each clip's `vit/{id}.pkl` and `wav2vec2/{id}.pkl` and
adaptive-pools them inside the training loop, at every step. The kit packs them once.
This times one epoch of batches (shuffled labelled clips) both ways, on the same data.

    python benchmarks/bench_cache.py --root data/full      # after `taemi synth data/full`
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from taemi.cache import build_packed
from taemi.data import ID_COLUMN, ChallengeData
from taemi.progress import progress


def epoch_from_pickles(data: ChallengeData, ids: list[str], steps: int, batch: int) -> float:
    """What public EMI code does: open, unpickle and pool every clip at every step."""
    files = {name: data.feature_files(name) for name in ("vit", "wav2vec2")}
    widths = {"vit": 384, "wav2vec2": 768}
    start = time.perf_counter()
    for i in progress(range(0, len(ids), batch), desc="pickles", unit="batch"):
        out = {}
        for name, found in files.items():
            pooled = []
            for clip in ids[i:i + batch]:
                if clip in found:
                    with open(found[clip], "rb") as handle:
                        x = torch.from_numpy(np.asarray(pickle.load(handle), np.float32))
                    x = torch.nan_to_num(x.reshape(-1, x.shape[-1]))
                    pooled.append(torch.nn.functional.adaptive_avg_pool1d(x.T[None], steps)[0].T)
                else:
                    pooled.append(torch.zeros(steps, widths[name]))
            out[name] = torch.stack(pooled)
    return time.perf_counter() - start


def epoch_from_cache(packs: dict, ids: list[str], batch: int) -> float:
    """The kit: gather rows of the memory-mapped float16 packs."""
    rows = {name: pack.rows(ids) for name, pack in packs.items()}
    start = time.perf_counter()
    for i in progress(range(0, len(ids), batch), desc="cache", unit="batch"):
        for name, pack in packs.items():
            index = np.sort(rows[name][i:i + batch])
            torch.from_numpy(pack.x[index]).float()
            torch.from_numpy(pack.valid[index])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/full")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    data = ChallengeData(args.root, test_list="test_split.csv")
    start = time.perf_counter()
    packs = {name: build_packed(data, name, args.steps, args.cache, args.workers)
             for name in ("vit", "wav2vec2")}
    build = time.perf_counter() - start
    ids = list(np.random.default_rng(0).permutation(data.labels[ID_COLUMN].to_numpy()))
    cache_s = min(epoch_from_cache(packs, ids, args.batch) for _ in range(3))
    pickle_s = epoch_from_pickles(data, ids, args.steps, args.batch)
    result = {
        "clips_per_epoch": len(ids), "batch": args.batch, "steps": args.steps,
        "cache_build_s": round(build, 2), "epoch_cache_s": round(cache_s, 3),
        "epoch_pickles_s": round(pickle_s, 2), "speedup": round(pickle_s / cache_s, 1),
    }
    print(json.dumps(result, indent=2))
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/cache.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
