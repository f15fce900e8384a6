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
from taemi.tuning import FINISHED, overlay_text, rdb_url

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
    first, second = tune_process(config), tune_process(config)
    storage = optuna.storages.RDBStorage(rdb_url(postgres_url))
    killed = None
    try:
        deadline = time.monotonic() + 180
        while killed is None and time.monotonic() < deadline:
            with contextlib.suppress(KeyError):  # the study may not exist yet
                study = optuna.load_study(study_name="tiny-t", storage=storage)
                for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
                    # mid-trial: its first epoch reported, three more to go
                    if trial.user_attrs.get("pid") == first.pid and trial.intermediate_values:
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

    study = optuna.load_study(study_name="tiny-t", storage=storage)
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
    single = optuna.create_study(direction="maximize", study_name="tiny-t")
    single.add_trials(finished)
    cfg = tiny_config(tiny_root, tmp_path, experiments={"t": {"model": MODEL}},
                      tune={"experiment": "t", "dir": str(tmp_path / "tune")})
    written = (tmp_path / "tune" / "tiny-t" / "best.yaml").read_text()
    expected = overlay_text(cfg, single)
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
    n_trials = 4
    config = tune_config_file(tiny_root, tmp_path, n_trials=n_trials)
    finish(tune_process(config, "--workers", "2"))
    journal = tmp_path / "tune" / "tiny-t" / "optuna.journal"
    study = optuna.load_study(study_name="tiny-t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    finished = [t for t in study.get_trials() if t.state in FINISHED]
    assert len(finished) == n_trials
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both workers ran trials
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {t.user_attrs["threads"] for t in finished} == {share}
