"""Where the grid's jobs run: here, one after another (default) or `workers` at once, or on
a Ray cluster.

Both call the same `run_job(config, job)`; a job writes its own folder, so the results
do not depend on the executor. Ray joins the cluster at `ray.address` (or `RAY_ADDRESS`,
or `ray.init()`'s usual discovery; with none it starts a local instance). Each job asks
for `ray.cpus_per_job` CPUs, which are also its torch threads, and, where the cluster
has GPUs, `ray.gpus_per_job` of one: a fraction packs several fold jobs on one GPU. A job
whose node dies is run again on another node (`ray.max_retries`) and resumes from its
last saved epoch; a finished job is never redone. Every `done.json` records the host
and Ray node the job ran on. On a cluster the project folder (data, cache, folds,
models) must be on storage every node sees.
"""

from __future__ import annotations

from collections.abc import Callable

from taemi.config import config_from_dict
from taemi.experiment import Job, run_job
from taemi.progress import progress, set_quiet

Executor = Callable[[dict, list[Job]], list[dict]]


def run_local(cfg_tree: dict, jobs: list[Job]) -> list[dict]:
    cfg = config_from_dict(cfg_tree)
    if cfg.workers > 1 and len(jobs) > 1:
        return run_processes(cfg_tree, jobs, cfg.workers, cfg.train.threads)
    results = []
    bar = progress(jobs, desc="jobs", unit="job")
    for job in bar:
        bar.set_postfix_str(job.label)
        results.append(run_job(cfg_tree, job))
    return results


def _start_worker(threads: int) -> None:
    import torch

    set_quiet(True)  # one bar, the parent's: workers' epoch bars would garble it
    torch.set_num_threads(threads)


def run_processes(cfg_tree: dict, jobs: list[Job], workers: int,
                  threads: int | None) -> list[dict]:
    """`workers` jobs at once, each in its own spawned process (forking a process that
    holds torch's thread pools can hang) with `threads` torch threads, or an equal share of
    the cores. The first failure stops the jobs not yet started and is raised; finished
    jobs keep their folders, so a rerun does only what is left."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    results: list[dict | None] = [None] * len(jobs)
    bar = progress(total=len(jobs), desc=f"jobs ({workers} at once)", unit="job")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(run_job, cfg_tree, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(pending):
                results[pending[future]] = future.result()
                bar.set_postfix_str(jobs[pending[future]].label)
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
    return [r for r in results if r is not None]


def run_job_with_threads(cfg_tree: dict, job: Job, threads: int) -> dict:
    """A Ray task: the job with torch on its own CPUs only (train.threads wins where set),
    so packed jobs do not fight over a node's cores."""
    import torch

    torch.set_num_threads(threads)
    return run_job(cfg_tree, job)


def run_ray(cfg_tree: dict, jobs: list[Job]) -> list[dict]:
    import ray

    settings = config_from_dict(cfg_tree).ray
    if not ray.is_initialized():
        ray.init(address=settings.address, log_to_driver=False)
    gpus = settings.gpus_per_job if ray.cluster_resources().get("GPU", 0) else 0
    task = ray.remote(num_cpus=settings.cpus_per_job, num_gpus=gpus,
                      max_retries=settings.max_retries)(run_job_with_threads)
    pending = {task.remote(cfg_tree, job, settings.cpus_per_job): i
               for i, job in enumerate(jobs)}
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
