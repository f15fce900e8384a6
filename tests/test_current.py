"""One notion of "current": keys by content, not paths or times; the same plan for every
command; given folds checked; no import cycle."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import MODEL, grid_config, tiny_config
from taemi.artifacts import read_json, write_csv
from taemi.config import ConfigError
from taemi.data import DataError
from taemi.experiment import is_done, job_fingerprints
from taemi.folds import folds_digest, read_folds
from taemi.pipeline import ensure_folds, open_data, train_experiments

SRC = Path(__file__).resolve().parents[1] / "src" / "taemi"


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_with_new_times(source: Path, target: Path) -> None:
    """`cp -r`: the same bytes at another path, every mtime new."""
    shutil.copytree(source, target, copy_function=shutil.copyfile)


@pytest.fixture(scope="module")
def copied(grid, tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The trained grid and its data copied to other absolute paths with new mtimes."""
    cfg, _ = grid
    work = tmp_path_factory.mktemp("copied")
    copy_with_new_times(tiny_root, work / "data")
    old_work = cfg.paths.models.parent
    for part in ("cache", "folds", "models"):
        copy_with_new_times(old_work / part, work / part)
    return grid_config(work / "data", work)


def test_a_copied_project_retrains_no_job_and_rebuilds_no_pack(copied) -> None:
    cfg = copied
    work = cfg.paths.models.parent
    packs_before = sorted(p.name for p in (work / "cache").iterdir())
    arrays = {p: p.stat().st_mtime_ns for p in (work / "cache").glob("*/x.npy")}
    models_before = mtimes(work / "models" / "t" / "vit-w2v")
    train_experiments(cfg)
    assert sorted(p.name for p in (work / "cache").iterdir()) == packs_before
    assert {p: p.stat().st_mtime_ns for p in (work / "cache").glob("*/x.npy")} == arrays
    after = mtimes(work / "models" / "t" / "vit-w2v")
    done = [k for k in models_before if k.endswith("done.json") or k.endswith("model.pt")]
    assert done and all(after[k] == models_before[k] for k in done)


def test_thread_count_device_and_prediction_batch_are_in_no_key(copied) -> None:
    cfg = copied
    data, folds = open_data(cfg), read_folds(cfg.folds.path)
    base = job_fingerprints(cfg, "t", data, folds)
    other = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"threads": 2, "device": "cpu", "eval_batch_size": 7})})
    assert job_fingerprints(other, "t", data, folds) == base
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.5})})
    assert set(job_fingerprints(changed, "t", data, folds).values()).isdisjoint(base.values())


def test_changed_fold_groups_with_the_same_fold_numbers_retrain(copied, tmp_path) -> None:
    cfg = copied
    data = open_data(cfg)
    folds = read_folds(cfg.folds.path)
    regrouped = folds.copy()
    regrouped["group"] = regrouped["group"].to_numpy()[::-1]  # same folds, other groups
    assert folds_digest(regrouped) != folds_digest(folds)
    path = tmp_path / "folds.csv"
    write_csv(path, regrouped)
    given = cfg.model_copy(update={"folds": cfg.folds.model_copy(
        update={"path": path, "given": True})})
    planned = job_fingerprints(given, "t", data, ensure_folds(given, data))
    assert not any(is_done(job.folder(cfg.paths.models), key) for job, key in planned.items())


def test_a_changed_model_source_retrains_its_jobs(copied, monkeypatch) -> None:
    import taemi.models

    cfg = copied
    data, folds = open_data(cfg), read_folds(cfg.folds.path)
    planned = job_fingerprints(cfg, "t", data, folds)
    assert all(is_done(job.folder(cfg.paths.models), key) for job, key in planned.items())
    real = taemi.models.model_code_digest
    monkeypatch.setattr(taemi.models, "model_code_digest",
                        lambda name: real(name) + "-edited" if name == "taemi" else real(name))
    edited = job_fingerprints(cfg, "t", data, folds)
    assert not any(is_done(job.folder(cfg.paths.models), key) for job, key in edited.items())


def test_code_digest_follows_statements_not_comments(tmp_path: Path) -> None:
    from taemi.identity import source_files_digest

    path = tmp_path / "model.py"
    path.write_text("def f(x):\n    return x + 1\n")
    first = source_files_digest([path])
    path.write_text("# a comment\ndef f(x):\n\n    return x + 1  # same\n")
    assert source_files_digest([path]) == first
    path.write_text("def f(x):\n    return x + 2\n")  # same size, maybe the same mtime
    assert source_files_digest([path]) != first


# ------------------------------------------------------------------ given folds files


@pytest.fixture
def given(tiny_root: Path, tmp_path: Path):
    cfg = tiny_config(tiny_root, tmp_path / "made")
    folds = ensure_folds(cfg)
    path = tmp_path / "given.csv"
    given_cfg = tiny_config(tiny_root, tmp_path, folds={"path": str(path), "given": True})
    return given_cfg, folds, path


def test_a_given_folds_file_must_hold_every_labelled_clip(given) -> None:
    cfg, folds, path = given
    dropped = folds["Filename"].iloc[4]
    write_csv(path, folds.drop(index=4))
    with pytest.raises(DataError, match=rf"{path}: labelled clip {dropped} is in no fold"):
        ensure_folds(cfg)


def test_a_given_folds_file_needs_two_folds(given) -> None:
    cfg, folds, path = given
    write_csv(path, folds.assign(fold=0))
    with pytest.raises(DataError, match=rf"{path}: 1 cross-validation fold"):
        ensure_folds(cfg)


def test_a_given_folds_file_names_a_test_or_unknown_id(given) -> None:
    cfg, folds, path = given
    test_id = open_data(cfg).test_ids[0]
    extra = pd.DataFrame({"Filename": [test_id], "fold": [0]})
    write_csv(path, pd.concat([folds[["Filename", "fold"]], extra]))
    with pytest.raises(DataError, match=rf"{path}: id {test_id} is a test clip"):
        ensure_folds(cfg)
    extra["Filename"] = "99999"
    write_csv(path, pd.concat([folds[["Filename", "fold"]], extra]))
    with pytest.raises(DataError, match=rf"{path}: id 99999 is not a known clip"):
        ensure_folds(cfg)
    write_csv(path, folds)
    assert ensure_folds(cfg).equals(folds)  # a complete file is used as it is


# ------------------------------------------------------------------------- studies


def tune_config(root: Path, work: Path, **tune) -> Path:
    cfg = tiny_config(root, work, train={"epochs": 1, "batch_size": 32, "threads": 1},
                      experiments={"t": {"model": MODEL}},
                      tune={"experiment": "t", "n_trials": 1, "folds": [0],
                            "dir": str(work / "tune"), **tune},
                      paths={"models": str(work / "models")})
    path = work / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg.resolved()))
    return path


def test_a_changed_range_is_a_new_study_and_the_old_best_is_never_applied(
        tiny_root: Path, tmp_path: Path) -> None:
    from taemi.config import load_config
    from taemi.pipeline import ensure_tuning
    from taemi.plan import run_config
    from taemi.tuning import current_study

    path = tune_config(tiny_root, tmp_path)
    cfg = load_config(path)
    overlay = ensure_tuning(cfg)
    data = open_data(cfg)
    tuned = run_config(cfg, data)
    assert tuned.experiments["t"].model.params()["modality_dropout"] == yaml.safe_load(
        overlay.read_text())["experiments"]["t"]["model"]["modality_dropout"]
    assert run_config(tuned, data) == tuned  # resolving twice changes nothing
    assert "chosen on rows of CV folds [1, 2]" in overlay.read_text()
    narrower = load_config(path, ["tune.ranges.dropout=[0.0, 0.1]"])
    assert current_study(narrower, data).name != current_study(cfg, data).name
    with pytest.raises(ConfigError, match="has not finished 1 trials: run `taemi tune"):
        run_config(narrower, data)
    more = load_config(path, ["tune.n_trials=2", "tune.workers=1"])
    assert current_study(more, data) == current_study(cfg, data)  # more trials: resumed


def test_train_after_tune_uses_the_tuned_parameters(tiny_root: Path, tmp_path: Path) -> None:
    from taemi.cli import main
    from taemi.config import load_config

    path = tune_config(tiny_root, tmp_path)
    assert main(["train", str(path), "-q"]) == 2  # no study yet: one line, exit 2
    assert main(["tune", str(path), "-q"]) == 0
    assert main(["train", str(path), "-q"]) == 0
    saved = read_json(tmp_path / "models" / "t" / "config.json")
    overlay = next((tmp_path / "tune").glob("*/best.yaml"))
    tuned = yaml.safe_load(overlay.read_text())["experiments"]["t"]["model"]
    assert saved["experiments"]["t"]["model"]["dropout"] == tuned["dropout"]
    cfg = load_config(path)
    assert cfg.experiments["t"].model.params().get("dropout") != tuned["dropout"]


# ------------------------------------------------------------------------- layering


def module_imports() -> dict[str, set[str]]:
    """Every taemi module and the taemi modules it imports, at any depth of the file
    (imports inside functions count)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)  # and `from taemi import catalog`: a module too
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle_among_the_package_modules() -> None:
    graph = module_imports()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 20  # the walk saw the package


# ------------------------------------------------------------- stacks and submissions


def test_a_stale_stack_is_never_submitted_and_the_report_marks_it(copied, tmp_path) -> None:
    from taemi.config import StackConfig
    from taemi.pipeline import ensure_stack, ensure_submission
    from taemi.report import write_report

    work = tmp_path / "p"
    copy_with_new_times(copied.paths.models.parent, work)
    base = grid_config(work / "data", work)
    cfg = base.model_copy(update={
        "stack": StackConfig(name="s", experiments=["t"], method="ridge",
                             meta_features=["transcript_length"]),
        "paths": base.paths.model_copy(update={"ensembles": work / "ensembles",
                                               "submissions": work / "submissions",
                                               "reports": work / "reports"})})
    ensure_stack(cfg)
    assert ensure_submission(cfg, "s", "first").is_file()

    def statuses(config) -> dict[str, str]:
        board = read_json(write_report(config, open_data(config)).with_suffix(".json"))
        return {row["entry"]: row["status"] for row in board}

    assert not any(statuses(cfg).values())
    retrained = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.5})})
    with pytest.raises(DataError, match=r"stale: member 't'"):
        ensure_submission(retrained, "s", "other-settings")
    marks = statuses(retrained)
    assert marks["t"].startswith("stale") and marks["ridge stack"].startswith("stale")

    texts = work / "data" / "transcripts.csv"
    frame = pd.read_csv(texts, dtype={"Filename": str}, keep_default_na=False)
    frame.loc[0, frame.columns[1]] = "a transcript redone by another whisper"
    frame.to_csv(texts, index=False)
    with pytest.raises(DataError, match=r"stale: its members, folds, labels or meta-feature"):
        ensure_submission(cfg, "s", "new-transcripts")
    marks = statuses(cfg)
    assert marks["ridge stack"].startswith("stale") and not marks["t"]


# ------------------------------------------------------------------ smaller promises


def test_an_error_while_writing_names_the_file_not_its_temporary(tmp_path: Path) -> None:
    import errno

    from taemi.artifacts import atomic_path

    target = tmp_path / "participants.csv"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert caught.value.filename == str(target) and not target.exists()
    assert not list(tmp_path.iterdir())  # the temporary is gone too


def test_temporaries_a_kill_left_beside_robustness_plots_are_removed(tmp_path: Path) -> None:
    from taemi.artifacts import _host_tag
    from taemi.robustness import write_robustness

    cfg = tiny_config(tmp_path, tmp_path, experiments={"t": {"model": MODEL}},
                      paths={"models": str(tmp_path / "models")})
    folder = cfg.paths.models / "t"
    folder.mkdir(parents=True)
    dead = folder / f".robustness.png.{_host_tag()}-{2**31 - 2}-abc_12.png.tmp"
    mine = folder / f".robustness.csv.{_host_tag()}-{__import__('os').getpid()}-abc_12.tmp"
    live_plot = folder / f".robustness.png.{_host_tag()}-{__import__('os').getpid()}-x_1.png.tmp"
    for path, text in ((dead, b"half a png"), (mine, b"being written"), (live_plot, b"png")):
        path.write_bytes(text)
    table = pd.DataFrame({"mean": [0.5], "loss_vs_all": [0.0]},
                         index=pd.Index(["all modalities"], name="condition"))
    write_robustness(cfg, "t", table)
    assert not dead.exists() and mine.exists() and live_plot.exists()  # the live ones stay
    assert (folder / "robustness.png").is_file()


def test_a_tracking_uri_that_cannot_be_used_stops_before_any_training(
        tiny_root: Path, tmp_path: Path) -> None:
    from conftest import grid_config

    base = grid_config(tiny_root, tmp_path)
    (tmp_path / "a-file").write_text("")  # a database beneath a file cannot be made
    cfg = base.model_copy(update={"tracking": base.tracking.model_copy(
        update={"uri": f"sqlite:///{tmp_path}/a-file/mlruns.db"})})
    with pytest.raises(ConfigError, match=r"tracking\.uri"):
        train_experiments(cfg)
    assert not (tmp_path / "models").exists()
