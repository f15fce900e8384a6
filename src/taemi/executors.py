"""Where the grid's jobs run: here, one after another (default), or on a Ray cluster.

Both call the same `run_job(config, job)`; a job writes its own folder, so the results
do not depend on the executor. Ray joins a running cluster through `RAY_ADDRESS` (or
`ray.init()`'s usual discovery) and asks for a GPU per job where the cluster has GPUs;
on a single machine with no cluster it starts a local Ray instance. On a cluster the
project folder (data, cache, folds, models) must be on storage every node sees.
"""

from __future__ import annotations

from collections.abc import Callable

from taemi.experiment import Job, run_job
from taemi.progress import progress

Executor = Callable[[dict, list[Job]], list[dict]]


def run_local(cfg_tree: dict, jobs: list[Job]) -> list[dict]:
    results = []
    bar = progress(jobs, desc="jobs", unit="job")
    for job in bar:
        bar.set_postfix_str(job.label)
        results.append(run_job(cfg_tree, job))
    return results


def run_ray(cfg_tree: dict, jobs: list[Job]) -> list[dict]:
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(run_job)
    pending = {task.remote(cfg_tree, job): i for i, job in enumerate(jobs)}
    results: list[dict | None] = [None] * len(jobs)
    bar = progress(total=len(jobs), desc="jobs (ray)", unit="job")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            results[pending.pop(ref)] = ray.get(ref)
            bar.update(1)
    bar.close()
    return [r for r in results if r is not None]


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
