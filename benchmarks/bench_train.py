"""Training throughput, achieved GFLOP/s and the data-loading share of a step.

For each model it times training steps on the packed cache of a config's first backbone:

* clips/s over the timed steps (forward, backward, optimizer);
* achieved GFLOP/s, from torch's FLOP counter on one step, as a fraction of the rate of a
  plain matrix product measured in the same run on the same device (fp32 on the CPU; bf16
  on a GPU when --bf16);
* data loading as a share of step time: the gather of a batch from the in-memory cache.

    python benchmarks/bench_train.py configs/full.yaml --models taemi fusion
    python benchmarks/bench_train.py configs/full.yaml --models taemi taemi_base --bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from taemi.config import load_config
from taemi.data import ID_COLUMN, labels_matrix
from taemi.experiment import open_packs
from taemi.losses import MixedLoss
from taemi.models import create_model
from taemi.pipeline import ensure_cache, open_data
from taemi.training import ClipInputs, pick_device


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10
                ) -> float:
    """GFLOP/s of an n x n matrix product: the device's practical peak for dense work."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(name: str, inputs: ClipInputs, y: torch.Tensor, batch: int, steps: int,
                device: torch.device, bf16: bool, loss_weights: dict) -> dict:
    torch.manual_seed(0)
    model = create_model(name, dims=inputs.dims).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = MixedLoss(loss_weights)
    generator = torch.Generator().manual_seed(0)
    n = len(y)

    def step(index: torch.Tensor) -> tuple[float, float]:
        t0 = time.perf_counter()
        data = inputs.batch(index)
        sync(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(data)
        loss = loss_fn(pred, y[index.to(device)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        return t1 - t0, time.perf_counter() - t0

    batches = [torch.randint(0, n, (batch,), generator=generator) for _ in range(steps + 3)]
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    for index in batches[1:3]:  # warm-up
        step(index)
    load, total = 0.0, 0.0
    for index in batches[3:]:
        a, b = step(index)
        load += a
        total += b
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "batch": batch, "clips_per_s": batch * steps / total,
            "step_ms": 1000 * total / steps, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops * steps / total / 1e9, "data_share": load / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--models", nargs="+", default=["taemi"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args()

    cfg = load_config(args.config, args.set)
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    device = pick_device(args.device)
    ids = data.labels[ID_COLUMN].tolist()
    backbone = next(iter(cfg.backbones))
    inputs = ClipInputs(open_packs(cfg, data, backbone), ids).to(device)
    y = torch.as_tensor(labels_matrix(data.labels, ids), dtype=torch.float32, device=device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak = matmul_rate(device, dtype)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else
               f"cpu ({torch.get_num_threads()} threads)", "backbone": backbone,
               "matmul_gflops": peak, "matmul_dtype": str(dtype), "bf16": args.bf16,
               "models": []}
    for name in args.models:
        row = bench_model(name, inputs, y, args.batch, args.steps, device, args.bf16,
                          cfg.train.loss)
        row["fraction_of_matmul"] = row["achieved_gflops"] / peak
        results["models"].append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
    print(f"matmul {dtype}: {peak:.1f} GFLOP/s on {results['device']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
