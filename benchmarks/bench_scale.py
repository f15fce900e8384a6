"""Scaling on one machine: Optuna workers sharing its cores, and the grid on a Ray cluster
of two nodes against the local executor (benchmarks/RESULTS.md, "Scaling out").

    python benchmarks/bench_scale.py tune --trials 8   # trials/min: 1 worker, --workers 2,
                                                        # and 2 hand-started workers at
                                                        # torch's default threads
    python benchmarks/bench_scale.py ray               # one small grid: local vs 2 nodes

Both run on the demo's data (configs/demo.yaml; generated first if missing). Pruning is
off so every trial costs the same. Results go to benchmarks/results/scale-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "bench-scale"


def taemi(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taemi.cli", *args], cwd=ROOT,
                            env={**os.environ, **(env or {})})


def prepare() -> None:
    """The demo's data, cache and folds, made once (not timed)."""
    if not (ROOT / "data" / "demo").is_dir():
        subprocess.run([sys.executable, "-m", "taemi.cli", "synth", "data/demo", "--scale",
                        "0.1", "--seed", "0"], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "-m", "taemi.cli", "folds", "configs/demo.yaml",
                    "--quiet"], cwd=ROOT, check=True)


def bench_tune(trials: int, only: list[str] | None = None) -> dict:
    common = ["configs/demo.yaml", "--quiet", "--n-trials", str(trials),
              "--set", "tune.pruner_startup_trials=1000", "--set", f"tune.dir={WORK}"]
    setups = {
        "1 worker (torch default threads)": [["tune", *common, "--set",
                                              "tune.study_name=w1"]],
        "1 worker, 1 thread": [["tune", *common, "--set", "tune.study_name=w1t1", "--set",
                                "train.threads=1"]],
        "2 workers, taemi tune --workers 2 (1 thread each)": [
            ["tune", *common, "--set", "tune.study_name=w2", "--workers", "2"]],
        "2 workers started by hand (torch default threads each)": [
            ["tune", *common, "--set", "tune.study_name=w2x"]] * 2,
    }
    out = {"trials": trials, "cores": len(os.sched_getaffinity(0)), "setups": {}}
    for name, commands in setups.items():
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        shutil.rmtree(WORK, ignore_errors=True)
        started = time.perf_counter()
        processes = [taemi(*command) for command in commands]
        codes = [p.wait() for p in processes]
        seconds = time.perf_counter() - started
        assert codes == [0] * len(codes), (name, codes)
        out["setups"][name] = {"seconds": round(seconds, 1),
                               "trials_per_minute": round(trials / seconds * 60, 2)}
        print(name, out["setups"][name], flush=True)
    return out


def bench_ray() -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from taemi.config import load_config
    from taemi.pipeline import train_experiments
    from taemi.progress import set_quiet

    set_quiet(True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    overrides = ["train.epochs=4", "experiments.demo-taemi.backbones=[vit-w2v]"]
    runs = {}
    variants = {"local": [], "local, 1 thread": ["train.threads=1"], "ray": []}
    for variant, extra in variants.items():
        executor = variant.split(",")[0]
        models = WORK / f"models-{variant.replace(', ', '-').replace(' ', '')}"
        shutil.rmtree(models, ignore_errors=True)
        cfg = load_config(ROOT / "configs" / "demo.yaml",
                          [*overrides, *extra, f"paths.models={models}"])
        cluster = None
        if executor == "ray":
            started = time.perf_counter()
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            ray.init(address=cluster.address, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
            runs["cluster_start_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        cv = train_experiments(cfg, ["demo-taemi"], executor=executor)["demo-taemi"]
        runs[variant] = {"seconds": round(time.perf_counter() - started, 1),
                         "cv": round(cv["overall"]["mean"], 4)}
        if cluster is not None:
            ray.shutdown()
            cluster.shutdown()
        print(variant, runs[variant], flush=True)
    runs["grid"] = "demo-taemi, backbone vit-w2v, seed 0, 5 folds, 4 epochs"
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("tune", "ray"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None,
                        help="tune: the setups to run (by their first words), default all")
    args = parser.parse_args()
    # the cluster's nodes and the driver talk over loopback (read when ray is imported)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    prepare()
    result = bench_tune(args.trials, args.only) if args.what == "tune" else bench_ray()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scale-{args.what}.json"
    if args.what == "tune" and path.is_file():  # keep the setups not rerun
        previous = json.loads(path.read_text())
        result["setups"] = {**previous.get("setups", {}), **result["setups"]}
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
