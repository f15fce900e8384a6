"""Scaling out on the real engines: Optuna workers on a PostgreSQL server and on one
machine's cores, and the grid on a Ray cluster of more than one node."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import MODEL, tiny_config
from taemi.data import open_data
from taemi.pipeline import ensure_cache, ensure_folds
from taemi.tuning import FINISHED, current_study, overlay_text, rdb_url

# ----------------------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl/createdb: on PATH, or Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free local port in a temporary folder, stopped
    (and its folder removed) however the test ends. PostgreSQL refuses to run as root, so
    as root the server runs as the `postgres` user."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                    "/usr/lib/postgresql/*/bin; install PostgreSQL to run this test")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="taemi-pg-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "taemi",
           "--no-sync")
        pg(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
           "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
           "start")
        try:
            pg(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "taemi",
               "optuna")
            yield f"postgresql://taemi@127.0.0.1:{port}/optuna"
        finally:
            pg(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tune_config_file(root: Path, work: Path, **tune) -> Path:
    """A tiny tuning config written as YAML (the workers are separate `taemi tune`
    processes); its cache and folds made here first, so the workers only tune."""
    cfg = tiny_config(root, work, train={"epochs": 4, "batch_size": 32},
                      experiments={"t": {"model": MODEL}},
                      tune={"experiment": "t", "folds": [0], "dir": str(work / "tune"),
                            "pruner_startup_trials": 100, **tune})
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    ensure_folds(cfg, data)
    path = work / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg.resolved()))
    return path


def study_of(config: Path):
    """The study a tuning config's inputs make (`taemi.tuning.current_study`)."""
    from taemi.config import load_config

    cfg = load_config(config)
    return current_study(cfg, open_data(cfg))


def tune_process(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taemi.cli", "tune", str(config),
                             "--quiet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def test_two_workers_on_postgres_share_one_study_and_survive_a_killed_worker(
        postgres_url: str, tiny_root: Path, tmp_path: Path) -> None:
    n_trials = 5
    config = tune_config_file(tiny_root, tmp_path, n_trials=n_trials, storage=postgres_url,
                              heartbeat_interval=1, grace_period=3)
    ref = study_of(config)
    first, second = tune_process(config), tune_process(config)
    storage = optuna.storages.RDBStorage(rdb_url(postgres_url))
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline:
            with contextlib.suppress(KeyError):  # the study may not exist yet
                study = optuna.load_study(study_name=ref.name, storage=storage)
                for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                    # mid-trial: its first epoch reported, three more to go
                    if trial.user_attrs.get("pid") == first.pid and \
                            len(trial.intermediate_values) == 1:
                        first.send_signal(signal.SIGKILL)
                        killed = trial.number
            time.sleep(0.05)
        assert killed is not None, "the first worker never reached the middle of a trial"
        first.wait(timeout=30)
        finish(second)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()

    study = optuna.load_study(study_name=ref.name, storage=storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials  # exactly n_trials, across both workers
    victim = trials[killed]
    assert victim.state == optuna.trial.TrialState.FAIL  # failed by the heartbeat
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state in FINISHED
    assert retried[0].params == victim.params  # its parameters were run again, once
    others = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and t is not victim]
    assert all(t.user_attrs.get("surplus") for t in others)  # no other trial was lost
    keys = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(keys)) == len(keys)  # no trial ran twice
    assert {t.user_attrs["pid"] for t in finished} == {second.pid} | (
        {first.pid} if any(t.user_attrs["pid"] == first.pid for t in finished) else set())

    # the overlay is what one worker would write from the same finished trials
    single = optuna.create_study(direction="maximize", study_name=ref.name)
    single.add_trials(finished)
    cfg = tiny_config(tiny_root, tmp_path, experiments={"t": {"model": MODEL}},
                      tune={"experiment": "t", "dir": str(tmp_path / "tune")})
    written = (ref.folder / "best.yaml").read_text()
    expected = overlay_text(cfg, single, ref)
    assert written.splitlines()[1:] == expected.splitlines()[1:]
    assert f"best of {n_trials} trials" in written
    assert f"mean Pearson {study.best_value:.4f}" in written


def test_an_unreachable_database_is_named(tiny_root: Path, tmp_path: Path) -> None:
    config = tune_config_file(tiny_root, tmp_path, n_trials=1,
                              storage=f"postgresql://taemi:secret@127.0.0.1:{free_port()}/x")
    out = subprocess.run([sys.executable, "-m", "taemi.cli", "tune", str(config), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "tune.storage" in out.stderr and "cannot open the study database" in out.stderr
    assert "secret" not in out.stderr  # the password is masked


def test_workers_on_one_machine_split_its_cores(tiny_root: Path, tmp_path: Path) -> None:
    # trials long enough (12 epochs) that the spawned worker, which starts a few seconds
    # after the first, still finds trials to run on an idle machine
    n_trials = 6
    config = tune_config_file(tiny_root, tmp_path, n_trials=n_trials, epochs=12)
    finish(tune_process(config, "--workers", "2"))
    ref = study_of(config)
    journal = ref.folder / "optuna.journal"
    study = optuna.load_study(study_name=ref.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    finished = [t for t in study.get_trials() if t.state in FINISHED]
    assert len(finished) == n_trials
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both workers ran trials
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {t.user_attrs["threads"] for t in finished} == {share}


# ----------------------------------------------------------------------------- compile


def test_compiled_training_step_learns_the_same_model(
        tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamo really traces the training step; its eager backend stands in for inductor,
    whose CPU build of this tiny model takes minutes (the GPU is what compile is for)."""
    import numpy as np
    import torch

    real_compile, traced = torch.compile, []

    def eager_compile(model, **kwargs):
        traced.append(model)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)

    from taemi.config import TrainConfig
    from taemi.data import labels_matrix
    from taemi.experiment import open_packs
    from taemi.models import create_model
    from taemi.training import ClipInputs, fit_fold, predict, seed_everything

    cfg = tiny_config(tiny_root, tmp_path)
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    ids = data.labels["Filename"].tolist()[:128]
    inputs = ClipInputs(open_packs(cfg, data, "vit-w2v"), ids)
    y = labels_matrix(data.labels, ids)
    rows = np.arange(len(ids))
    runs = {}
    for compiled in (False, True):
        seed_everything(3)
        model = create_model("taemi", dims=inputs.dims, d_model=16, heads=2)
        train = TrainConfig(epochs=1, batch_size=64, compile=compiled, ema=None)
        fit_fold(model, inputs, rows, y, rows[:0], y[:0], train, 3, tmp_path / str(compiled),
                 "fp")
        saved = torch.load(tmp_path / str(compiled) / "model.pt", weights_only=True)
        runs[compiled] = (predict(model, inputs, rows), set(saved))
    assert len(traced) == 1  # only the compiled run went through torch.compile
    assert runs[True][1] == runs[False][1]  # weights saved from the model, not the wrapper
    np.testing.assert_allclose(runs[True][0], runs[False][0], atol=1e-5)


# ----------------------------------------------------------------------------- Ray


def test_grid_on_a_two_node_ray_cluster_survives_a_lost_node(
        grid, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A head and a worker node, each its own raylet process on this machine: jobs land on
    both, the worker node is killed mid-grid, its running job is retried on the head and
    resumes, finished jobs are not redone, and the artifacts are the local executor's.
    Each node declares one GPU (a Ray resource; torch finds no CUDA and trains on the
    CPU) and jobs ask for half of one: the fractional setting schedules and is harmless."""
    import threading

    import numpy as np
    import pandas as pd

    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from conftest import grid_config
    from taemi.artifacts import read_json
    from taemi.config import RayConfig
    from taemi.pipeline import train_experiments

    cfg, _ = grid
    work = tmp_path_factory.mktemp("cluster")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    remote = grid_config(Path(cfg.data.root), work, epochs=6).model_copy(
        update={"paths": cfg.paths.model_copy(update={"models": work / "models"}),
                "ray": RayConfig(gpus_per_job=0.5)})
    local = grid_config(Path(cfg.data.root), work, epochs=6).model_copy(
        update={"paths": cfg.paths.model_copy(update={"models": work / "local"})})
    loopback = "127.0.0.1"  # every node and the driver talk over loopback only
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 1, "include_dashboard": False,
        "node_ip_address": loopback})
    worker = cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=loopback)
    head = cluster.head_node.node_id
    ray.init(address=cluster.address, log_to_driver=False, _node_ip_address=loopback)
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["cv"] = train_experiments(remote, executor="ray")["t"]
        except BaseException as err:  # reported by the main thread
            outcome["error"] = err

    def done_jobs() -> dict[str, dict]:
        try:  # the run moves and deletes work folders while this looks
            return {str(p.parent): read_json(p) for p in (work / "models").rglob("done.json")}
        except OSError:
            return {}

    driver = threading.Thread(target=drive)
    try:
        driver.start()
        deadline, before_kill = time.monotonic() + 240, None
        while driver.is_alive() and time.monotonic() < deadline:
            finished = done_jobs()
            if any(j["ran_on"]["ray_node"] == worker.node_id for j in finished.values()):
                cluster.remove_node(worker, allow_graceful=False)  # the node dies mid-grid
                before_kill = finished
                break
            time.sleep(0.1)
        driver.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in outcome, outcome.get("error")
    assert before_kill is not None and len(before_kill) < 6, "the grid ended before the kill"
    after = done_jobs()
    assert len(after) == 6
    assert all(after[job] == summary for job, summary in before_kill.items())  # not redone
    nodes = {j["ran_on"]["ray_node"] for j in after.values()}
    assert nodes == {worker.node_id, head}  # both nodes did jobs
    assert all(j["ran_on"]["gpu_ids"] for j in after.values())  # each had its GPU share

    local_cv = train_experiments(local)["t"]
    assert outcome["cv"]["overall"] == local_cv["overall"]
    for name in ("oof.csv", "test.csv"):
        np.testing.assert_array_equal(pd.read_csv(work / "models" / "t" / name),
                                      pd.read_csv(work / "local" / "t" / name))


# ----------------------------------------------------------------------------- MLflow


def test_experiments_and_stack_are_logged_to_mlflow_once(demo_run) -> None:
    mlflow = pytest.importorskip("mlflow")
    from taemi.config import load_config
    from taemi.tracking import log_experiment

    path, results = demo_run
    cfg = load_config(path)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[cfg.name], output_format="list")
    assert {r.info.run_name: r.data.tags["taemi_kind"] for r in runs} == {
        "tiny-taemi": "experiment", "tiny-audio": "experiment", "tiny-stack": "stack"}
    cv = results["experiments"]["tiny-taemi"]
    taemi = next(r for r in runs if r.info.run_name == "tiny-taemi")
    assert taemi.data.metrics["cv mean"] == pytest.approx(cv["overall"]["mean"])
    assert taemi.data.metrics["cv Joy"] == pytest.approx(cv["overall"]["Joy"])
    assert taemi.data.metrics["test single mean"] == pytest.approx(cv["heldout_test_single"])
    assert taemi.data.params["model.name"] == "taemi"
    assert taemi.data.tags["path.models"] == str(cfg.experiment_dir("tiny-taemi"))
    stack = next(r for r in runs if r.info.run_name == "tiny-stack")
    assert stack.data.metrics["cv mean"] == pytest.approx(results["stack"]["overall"]["mean"])
    # the same result again logs nothing new
    assert log_experiment(cfg, "tiny-taemi", cv) == taemi.info.run_id
    assert len(mlflow.search_runs(experiment_names=[cfg.name], output_format="list")) == 3


def test_torch_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    """Spinning OpenMP threads made a fold 8x slower beside one other busy process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    probe = "import taemi, os; print(os.environ['OMP_WAIT_POLICY'])"
    ours = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, check=True)
    theirs = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, check=True)
    assert (ours.stdout.strip(), theirs.stdout.strip()) == ("PASSIVE", "ACTIVE")
