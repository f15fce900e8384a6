"""Stopped from outside: SIGTERM and SIGHUP end every process of a run and it resumes;
a worker killed by the out-of-memory killer is named; a full disk while saving a model is
one line."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

from conftest import MODEL, tiny_config
from taemi.cli import main
from taemi.executors import _killed_workers, _read_started


def train_config(root: Path, work: Path, epochs: int = 8, **sections) -> Path:
    cfg = tiny_config(root, work, train={"epochs": epochs, "batch_size": 32, "threads": 1,
                                         "patience": epochs},
                      experiments={"t": {"model": MODEL, "seeds": [0, 1]}},
                      paths={"models": str(work / "models")}, workers=2, **sections)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.resolved()))
    return path


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taemi.cli", *argv, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def mid_training(work: Path, jobs: int = 1, before_epoch: int | None = None) -> bool:
    """At least `jobs` jobs are between two saved epochs (with `before_epoch`: and every
    running job has saved fewer epochs than that, so none ends before a kill lands)."""
    try:  # the run moves and deletes work folders while this looks
        folders = [p.parent for p in work.glob("models/**/.work-*/last.pt")]
        epochs = [len((f / "metrics.csv").read_text().splitlines()) - 1 for f in folders]
    except OSError:
        return False
    return len(folders) >= jobs and (before_epoch is None or max(epochs) < before_epoch)


def workers_of(process: subprocess.Popen) -> list[psutil.Process]:
    """The spawned worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(process.pid).children(recursive=True)
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def test_sigterm_ends_every_worker_and_a_rerun_resumes_to_the_same_predictions(
        tiny_root: Path, tmp_path: Path) -> None:
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    config = train_config(tiny_root, stopped)
    run = start("train", str(config))
    wait_for(lambda: mid_training(stopped) and len(workers_of(run)) == 2)
    pids = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM
    assert ("taemi train: stopped by SIGTERM; run the same command again to resume where "
            "it stopped") in err.splitlines() and "Traceback" not in err
    wait_for(lambda: gone(pids), timeout=15)  # no process of the run lives on

    assert main(["train", str(config), "-q"]) == 0  # resumes
    assert main(["train", str(train_config(tiny_root, whole)), "-q"]) == 0
    for part in ("test.csv", "oof.csv"):
        assert (stopped / "models" / "t" / part).read_bytes() == \
            (whole / "models" / "t" / part).read_bytes()


def test_sighup_ends_the_tuning_workers(tiny_root: Path, tmp_path: Path) -> None:
    config = train_config(tiny_root, tmp_path, epochs=12,
                          tune={"experiment": "t", "n_trials": 6, "folds": [0], "workers": 2,
                                "dir": str(tmp_path / "tune")})
    run = start("tune", str(config))
    wait_for(lambda: len(workers_of(run)) == 1 and any(tmp_path.glob("tune/*/trial*")))
    pids = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    run.send_signal(signal.SIGHUP)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGHUP and "stopped by SIGHUP" in err
    wait_for(lambda: gone(pids), timeout=15)


def test_a_worker_killed_from_outside_is_named_and_the_rest_resumes(
        tiny_root: Path, tmp_path: Path) -> None:
    # jobs of 30 epochs (about 50 ms each here), so that a kill early in a job lands well
    # before it ends: killed as its job ended, the victim would be named as running none
    config = train_config(tiny_root, tmp_path, epochs=30)
    run = start("train", str(config))
    # both workers in a job (one may still be importing torch when the other has saved
    # epochs: a worker killed then is named as running no job, the unit test below), and
    # both in the first half of it
    wait_for(lambda: mid_training(tmp_path, jobs=2, before_epoch=15) and
             len(workers_of(run)) == 2)
    victim = workers_of(run)[0]
    victim.kill()  # what the out-of-memory killer does
    _, err = run.communicate(timeout=60)
    last = next(line for line in err.splitlines() if line.startswith("taemi train:"))
    assert run.returncode == 2 and "Traceback" not in err
    assert "taemi train: error: the worker process of job t/vit-w2v/seed" in last
    assert f"(pid {victim.pid}, SIGKILL) died" in last and "out-of-memory killer" in last
    assert main(["train", str(config), "-q"]) == 0  # the rest is resumed


class ExitedProcess:
    """What `_killed_workers` reads of a pool's worker: its pid and how it ended."""

    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid, self.exitcode = pid, exitcode

    def join(self, timeout: float | None = None) -> None:
        pass


def test_a_killed_worker_is_named_with_its_job_or_as_running_none() -> None:
    started = multiprocessing.get_context("spawn").SimpleQueue()
    for label, pid in [("t/a/seed0/fold0", 11), ("t/a/seed0/fold1", 12),
                       ("t/a/seed0/fold2", 11), ("t/a/seed0/fold3", 13)]:
        started.put((label, pid))
    unfinished = [SimpleNamespace(label=f"t/a/seed0/fold{i}") for i in (1, 2, 3)]
    processes = [ExitedProcess(11, -signal.SIGKILL),  # killed in its second job
                 ExitedProcess(12, -signal.SIGKILL),  # in its job, still unfinished
                 ExitedProcess(13, -signal.SIGTERM),  # ended by the pool itself
                 ExitedProcess(14, -signal.SIGKILL),  # killed before its first job
                 ExitedProcess(15, 1), ExitedProcess(16, None)]
    owners = _read_started(started, {})
    assert owners == {11: "t/a/seed0/fold2", 12: "t/a/seed0/fold1", 13: "t/a/seed0/fold3"}
    assert _killed_workers(owners, unfinished, processes) == [
        "the worker process of job t/a/seed0/fold2 (pid 11, SIGKILL)",
        "the worker process of job t/a/seed0/fold1 (pid 12, SIGKILL)",
        "a worker process (pid 14, SIGKILL) that was running no job"]
    started.put(("t/a/seed0/fold0", 17))  # its job finished: killed between two jobs
    assert _killed_workers(_read_started(started, owners), unfinished,
                           [ExitedProcess(17, -signal.SIGKILL)]) == [
        "a worker process (pid 17, SIGKILL) that was running no job"]


def test_a_full_disk_while_saving_a_model_is_one_line(
        tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import taemi.training

    def failing_save(obj, path, *args, **kwargs):  # what torch's zip writer raises
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 320 "
                           "vs 206: PytorchStreamWriter failed writing file data/0")

    class Full:
        free = 1024

    monkeypatch.setattr(taemi.training.torch, "save", failing_save)
    monkeypatch.setattr(taemi.training.shutil, "disk_usage", lambda path: Full())
    config = train_config(tiny_root, tmp_path, epochs=1)
    tree = yaml.safe_load(config.read_text())
    tree["workers"] = 1
    config.write_text(yaml.safe_dump(tree))
    assert main(["train", str(config), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("taemi train: error: disk full: ")
    assert err.endswith(".pt") and ".tmp" not in err and os.sep + "models" + os.sep in err
