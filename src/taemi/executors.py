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
models) must be on storage every node sees; the config's plugin files travel with each
task (`taemi.plugins.ship`), so the nodes need not have them. A task's error is raised as
the error itself, as the local executor raises it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from taemi.config import config_from_dict
from taemi.experiment import Job, run_job
from taemi.plugins import ship, unship
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


class WorkerDied(RuntimeError):
    """A worker process was killed from outside (the out-of-memory killer, `kill -9`)."""


_STARTED = None  # in a worker process: where it says which job it runs (the parent reads)


def _start_worker(threads: int, started) -> None:
    import torch

    global _STARTED
    set_quiet(True)  # one bar, the parent's: workers' epoch bars would garble it
    torch.set_num_threads(threads)
    _STARTED = started


def _run_reporting(cfg_tree: dict, job: Job) -> dict:
    """`run_job`, after telling the parent which process runs it."""
    _STARTED.put((job.label, os.getpid()))
    return run_job(cfg_tree, job)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End every worker now (their jobs resume from their last saved epoch)."""
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()


def _read_started(started, owners: dict[int, str]) -> dict[int, str]:
    """Move what the workers said into `owners` (pid: its latest job). Read as each job
    ends: unread, some thousand jobs' names fill the pipe and every worker blocks naming
    its next one."""
    while not started.empty():
        label, pid = started.get()
        owners[pid] = label
    return owners


def _killed_workers(pids: dict[int, str], unfinished: list[Job], processes: list) -> list[str]:
    """The workers killed from outside (by a signal the pool never sends: the pool itself
    ends the other workers with SIGTERM), each with the unfinished job it ran (`pids`, from
    `_read_started`): `the worker process of job L (pid N, SIGKILL)`, or, killed while it
    started up or between two jobs, `a worker process (pid N, SIGKILL) that was running no
    job`."""
    wanted = {job.label for job in unfinished}
    killed = []
    for process in processes:
        process.join(5)
        code = process.exitcode
        if code is None or code >= 0 or -code == signal.SIGTERM:
            continue
        how = f"pid {process.pid}, {signal.Signals(-code).name}"
        if pids.get(process.pid) in wanted:
            killed.append(f"the worker process of job {pids[process.pid]} ({how})")
        else:
            killed.append(f"a worker process ({how}) that was running no job")
    return killed


def run_processes(cfg_tree: dict, jobs: list[Job], workers: int,
                  threads: int | None) -> list[dict]:
    """`workers` jobs at once, each in its own spawned process (forking a process that
    holds torch's thread pools can hang) with `threads` torch threads, or an equal share of
    the cores. The first failure stops the jobs not yet started and is raised; finished
    jobs keep their folders, so a rerun does only what is left. Interrupted (Ctrl-C,
    SIGTERM, SIGHUP), every worker is ended at once and no process of the run lives on; a
    worker killed from outside is named with its pid, its signal and its job (`WorkerDied`)."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    # written straight to its pipe (no feeder thread), so a worker killed right after it
    # names its job has named it
    started = context.SimpleQueue()
    results: list[dict | None] = [None] * len(jobs)
    bar = progress(total=len(jobs), desc=f"jobs ({workers} at once)", unit="job")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(threads, started))
    pending = {pool.submit(_run_reporting, cfg_tree, job): i for i, job in enumerate(jobs)}
    processes = list(getattr(pool, "_processes", {}).values())  # started with the jobs
    owners: dict[int, str] = {}
    try:
        for future in as_completed(pending):
            _read_started(started, owners)
            results[pending[future]] = future.result()
            bar.set_postfix_str(jobs[pending[future]].label)
            bar.update(1)
    except BrokenProcessPool:
        unfinished = [jobs[i] for f, i in pending.items() if results[i] is None]
        # the pool's own thread ends the other workers and reaps them all; read their exit
        # codes after it has (reaped at once by two threads, a killed worker's read None)
        pool.shutdown(wait=True, cancel_futures=True)
        killed = _killed_workers(_read_started(started, owners), unfinished, processes)
        if not killed:
            raise WorkerDied("a worker process died before it started a job (see the error "
                             "above); finished jobs are kept: run the same command again"
                             ) from None
        raise WorkerDied(
            f"{'; '.join(killed)} died: killed from outside, most likely by the "
            "out-of-memory killer (each worker holds its own packs; fewer `workers` need "
            "less memory). Finished jobs are kept and the others resume from their last "
            "epoch: run the same command again") from None
    except KeyboardInterrupt:
        _stop(pool)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
        started.close()
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def run_job_with_threads(cfg_tree: dict, job: Job, threads: int,
                         plugins: dict[str, str]) -> dict:
    """A Ray task: the job with torch on its own CPUs only (train.threads wins where set),
    so packed jobs do not fight over a node's cores; the plugin files' source (`plugins`)
    came with it."""
    import torch

    torch.set_num_threads(threads)
    if plugins:
        cfg_tree = {**cfg_tree, "plugins": unship(cfg_tree["plugins"], plugins)}
    return run_job(cfg_tree, job)


def run_ray(cfg_tree: dict, jobs: list[Job]) -> list[dict]:
    import ray

    settings = config_from_dict(cfg_tree).ray
    if not ray.is_initialized():
        ray.init(address=settings.address, log_to_driver=False)
    gpus = settings.gpus_per_job if ray.cluster_resources().get("GPU", 0) else 0
    task = ray.remote(num_cpus=settings.cpus_per_job, num_gpus=gpus,
                      max_retries=settings.max_retries)(run_job_with_threads)
    plugins = ray.put(ship(cfg_tree.get("plugins") or []))
    pending = {task.remote(cfg_tree, job, settings.cpus_per_job, plugins): i
               for i, job in enumerate(jobs)}
    results: list[dict | None] = [None] * len(jobs)
    bar = progress(total=len(jobs), desc="jobs (ray)", unit="job")
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = _result(ray, ref)
                bar.update(1)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: no task of the run lives on
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _result(ray, ref) -> dict:
    """A task's result; its error raised as itself (a plugin's one-line error stays one
    line), chained to Ray's, which holds the task's traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, Exception):
            raise err.cause from err
        raise


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
