"""The experiment grid: artifacts at every level, skip, retrain on change, atomic writes.
The Ray executor (on a cluster of two nodes) is tested in test_scale.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import MODEL, grid_config, tiny_config
from taemi.artifacts import atomic_path, read_json, write_json
from taemi.config import ExperimentConfig
from taemi.data import TARGETS
from taemi.experiment import plan_jobs
from taemi.folds import read_folds
from taemi.pipeline import open_data, train_experiments
from taemi.report import leaderboard
from taemi.robustness import robustness_key


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_artifacts_at_every_level(grid) -> None:
    cfg, cv = grid
    exp = cfg.paths.models / "t"
    folds = read_folds(cfg.folds.path)
    data = open_data(cfg)
    for level in (exp, exp / "vit-w2v", exp / "vit-w2v" / "seed1"):
        oof = pd.read_csv(level / "oof.csv", dtype={"Filename": str})
        assert sorted(oof["Filename"]) == sorted(folds["Filename"])  # every CV row once
        assert list(oof.columns) == ["Filename", "fold", *TARGETS]
        merged = oof.merge(folds, on="Filename", suffixes=("", "_file"))
        assert (merged["fold"] == merged["fold_file"]).all()
        test = pd.read_csv(level / "test.csv", dtype={"Filename": str})
        assert test["Filename"].tolist() == data.test_ids
    seed_dir = exp / "vit-w2v" / "seed0"
    fold_tests = [pd.read_csv(seed_dir / f"fold{f}" / "test.csv")[list(TARGETS)] for f in
                  range(3)]
    np.testing.assert_allclose(pd.read_csv(seed_dir / "test.csv")[list(TARGETS)],
                               np.mean(fold_tests, axis=0))
    for f in range(3):
        job = seed_dir / f"fold{f}"
        assert {"model.pt", "metrics.csv", "done.json"} <= {p.name for p in job.iterdir()}
        assert not (job / "last.pt").exists()
    saved = read_json(exp / "cv.json")
    assert saved["overall"]["mean"] == pytest.approx(cv["overall"]["mean"])
    assert set(saved["per_seed"]) == {"vit-w2v/seed0", "vit-w2v/seed1"}
    assert len(saved["per_fold"]) == 6 and saved["heldout_test"] is not None
    assert saved["folds_digest"] and read_json(exp / "config.json")["experiment"] == "t"


def test_finished_jobs_are_skipped(grid) -> None:
    cfg, cv = grid
    before = mtimes(cfg.paths.models / "t" / "vit-w2v")
    again = train_experiments(cfg)["t"]
    after = mtimes(cfg.paths.models / "t" / "vit-w2v")
    jobs = {k: v for k, v in after.items() if "/fold" in k}
    assert jobs == {k: before[k] for k in jobs}  # no job file was rewritten
    assert again["overall"] == cv["overall"]


def test_jobs_in_parallel_processes_give_the_same_predictions(grid, tmp_path: Path) -> None:
    """`workers: 2` runs two fold jobs at once in spawned processes: bitwise the sequential
    grid's predictions; a failing job is raised with its cause, the finished ones kept."""
    cfg, _ = grid
    parallel = cfg.model_copy(update={"workers": 2, "paths": cfg.paths.model_copy(
        update={"models": tmp_path / "models"})})
    train_experiments(parallel)
    for name in ("oof.csv", "test.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(cfg.paths.models / "t" / name),
                                      pd.read_csv(tmp_path / "models" / "t" / name))
    bad = ExperimentConfig(model={**MODEL, "d_model": 15})  # 2 heads: fails in the worker
    with pytest.raises(AssertionError, match="divisible"):
        train_experiments(parallel.model_copy(update={"experiments": {"bad": bad}}))


def test_a_lost_job_is_redone_alone_and_a_change_retrains(grid, tiny_root: Path,
                                                          tmp_path: Path) -> None:
    cfg, cv = grid
    seed_dir = cfg.paths.models / "t" / "vit-w2v" / "seed1"
    (seed_dir / "fold2" / "done.json").unlink()  # as if the run died inside this job
    others = {k: v for k, v in mtimes(seed_dir).items() if "fold2" not in k and "/fold" in k}
    again = train_experiments(cfg)["t"]
    assert {k: v for k, v in mtimes(seed_dir).items() if k in others} == others
    assert (seed_dir / "fold2" / "done.json").is_file()
    assert again["overall"]["mean"] == pytest.approx(cv["overall"]["mean"], abs=1e-9)

    copy = tmp_path / "models"
    shutil.copytree(cfg.paths.models, copy)
    changed = grid_config(tiny_root, cfg.paths.models.parent, lr=0.003).model_copy(
        update={"paths": cfg.paths.model_copy(update={"models": copy})})
    done = copy / "t" / "vit-w2v" / "seed1" / "fold0" / "done.json"
    stamp = done.stat().st_mtime_ns
    train_experiments(changed)
    assert done.stat().st_mtime_ns != stamp


def test_atomic_writes_leave_old_file_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "cv.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"a": 1}
    assert os.listdir(tmp_path) == ["cv.json"]


def test_fold_subset_and_unknown_fold(grid, tiny_root: Path, tmp_path: Path) -> None:
    cfg, _ = grid
    folds = read_folds(cfg.folds.path)
    sub = tiny_config(tiny_root, tmp_path, experiments={"s": {"model": MODEL, "folds": [1]}})
    assert [j.fold for j in plan_jobs(sub, "s", folds)] == [1]
    bad = tiny_config(tiny_root, tmp_path, experiments={"s": {"model": MODEL, "folds": [7]}})
    with pytest.raises(ValueError, match=r"folds \[7\] do not exist"):
        plan_jobs(bad, "s", folds)


def test_validation_kept_as_holdout(tiny_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_root, tmp_path, train={"epochs": 1, "batch_size": 32},
                      folds={"path": str(tmp_path / "folds.csv"), "n_splits": 2,
                             "scheme": "train"},
                      experiments={"h": {"model": MODEL}},
                      paths={"models": str(tmp_path / "models")})
    cv = train_experiments(cfg)["h"]
    data = open_data(cfg)
    holdout = pd.read_csv(tmp_path / "models" / "h" / "holdout.csv", dtype={"Filename": str})
    assert holdout["Filename"].tolist() == data.valid["Filename"].tolist()
    oof = pd.read_csv(tmp_path / "models" / "h" / "oof.csv", dtype={"Filename": str})
    assert set(oof["Filename"]) == set(data.train["Filename"])  # validation never in CV
    assert cv["holdout"] is not None and "mean" in cv["holdout"]


def test_participant_normalised_cache_trains_its_own_jobs(tiny_root: Path, tmp_path: Path
                                                          ) -> None:
    """A backbone with `normalise: participant` (the default) gets visual and audio packs
    standardised per participant (the text pack stays raw) and so jobs of their own;
    `normalise: none` reads the raw packs."""
    from taemi.experiment import open_packs
    from taemi.pipeline import ensure_cache

    normalised = grid_config(tiny_root, tmp_path, epochs=1)
    assert normalised.backbones["vit-w2v"].normalise == "participant"
    cfg = normalised.model_copy(update={"backbones": {"vit-w2v": normalised.backbones[
        "vit-w2v"].model_copy(update={"normalise": "none"})}})
    data = open_data(cfg)
    ensure_cache(normalised, data, report=False)
    raw, packs = open_packs(cfg, data, "vit-w2v"), open_packs(normalised, data, "vit-w2v")
    assert packs["text"].folder == raw["text"].folder
    for role in ("visual", "audio"):
        assert packs[role].folder.name.startswith(f"pnorm-{raw[role].folder.name}-")
        assert packs[role].meta["normalised"]["by"] == "participant"
    one = normalised.model_copy(update={"experiments": {"t": normalised.experiments["t"]
                                                        .model_copy(update={"seeds": [0]})}})
    cv = train_experiments(one)["t"]
    assert np.isfinite(cv["overall"]["mean"])


def test_few_clip_participants_are_flagged() -> None:
    """Test clips of people with few clips get weak normalisation statistics: the note
    says so when they are many, and stays quiet otherwise."""
    from taemi.participants import Participants
    from taemi.pipeline import few_clip_note

    ids = [f"{i:05d}" for i in range(60)]
    many = Participants(ids, np.repeat(np.arange(3), 20), "inferred")
    assert few_clip_note(many, ids[40:]) is None
    labels = np.concatenate([np.repeat([0, 1], 20), np.arange(2, 22)])  # 20 singletons
    note = few_clip_note(Participants(ids, labels, "inferred"), ids[30:])
    assert note is not None and "67% of the test clips" in note and "normalise: none" in note


def test_refit_predicts_the_test_in_the_fold_models_place(grid, tmp_path: Path) -> None:
    """`refit: true`: one model a seed on every CV row, for the median of its fold models'
    best epochs, once they are done; it writes the test, the fold models' mean moves to
    test_folds.csv, the OOF rows stay the fold models'; nothing is trained twice, and a
    lost refit model is the only job redone."""
    from taemi.experiment import stale_reason
    from taemi.plan import describe

    cfg, cv = grid
    models = tmp_path / "models"
    shutil.copytree(cfg.paths.models, models)
    exp = cfg.experiments["t"].model_copy(update={"refit": True})
    refit = cfg.model_copy(update={"experiments": {"t": exp}, "paths": cfg.paths.model_copy(
        update={"models": models})})
    record: dict = {}
    again = train_experiments(refit, record=record)["t"]
    assert record["trained"] == ["t/vit-w2v/seed0/refit", "t/vit-w2v/seed1/refit"]
    assert again["overall"] == cv["overall"]  # the CV is the fold models'
    seed_dir = models / "t" / "vit-w2v" / "seed0"
    best = [read_json(seed_dir / f"fold{f}" / "done.json")["best_epoch"] for f in range(3)]
    done = read_json(seed_dir / "refit" / "done.json")
    assert done["job"]["epochs"] == round(float(np.median(best)))
    assert done["selection"] == "fixed" and done["selection_rows"] == 0
    assert len(pd.read_csv(seed_dir / "refit" / "metrics.csv")) == done["job"]["epochs"]
    for level in (seed_dir, models / "t"):
        pd.testing.assert_frame_equal(pd.read_csv(level / "oof.csv"),
                                      pd.read_csv(cfg.paths.models / "t" / level.relative_to(
                                          models / "t") / "oof.csv"))
        pd.testing.assert_frame_equal(pd.read_csv(level / "test_folds.csv"),
                                      pd.read_csv(cfg.paths.models / "t" / level.relative_to(
                                          models / "t") / "test.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(seed_dir / "test.csv"),
                                  pd.read_csv(seed_dir / "refit" / "test.csv"))
    assert again["refit"]["used"] and again["refit"]["why"] == "refit: true"
    assert set(again["refit"]["epochs"]) == {"t/vit-w2v/seed0/refit", "t/vit-w2v/seed1/refit"}
    assert again["heldout_test_folds"] == cv["heldout_test"]
    # robustness scores the fold models: still current
    assert robustness_key(models / "t") == robustness_key(cfg.paths.models / "t")
    assert again["heldout_test"] != cv["heldout_test"]
    data = open_data(refit)
    assert stale_reason(refit, "t", data, read_folds(cfg.folds.path)) is None
    row = leaderboard(refit, data).set_index("entry").loc["t"]
    assert row["status"] == "test mean: refit models (refit: true)"
    assert row["test mean"] == again["heldout_test"]["mean"]
    assert train_experiments(refit, record=record) and record["trained"] == []
    # another epoch rule that gives the same epochs (tiny data: auto is the median)
    # retrains nothing, and cv.json names the rule now in force
    median = refit.model_copy(update={"experiments": {"t": exp.model_copy(
        update={"refit_epochs": "median"})}})
    relabelled = train_experiments(median, record=record)["t"]
    assert record["trained"] == [] and relabelled["refit"]["epochs"] == again["refit"]["epochs"]
    assert again["refit"]["epochs_rule"]["rule"] == "auto"
    assert relabelled["refit"]["epochs_rule"]["rule"] == "median"
    (models / "t" / "vit-w2v" / "seed1" / "refit" / "done.json").unlink()
    assert "seed1/refit" in stale_reason(refit, "t", data, read_folds(cfg.folds.path))
    entry = next(e for e in describe(refit, data) if e.kind == "experiment")
    assert not entry.current and entry.details["to_train"] == ["t/vit-w2v/seed1/refit"]
    train_experiments(refit, record=record)
    assert record["trained"] == ["t/vit-w2v/seed1/refit"]
    off = refit.model_copy(update={"experiments": {"t": exp.model_copy(
        update={"refit": False})}})
    assert not train_experiments(off)["t"]["refit"]["used"]  # gathered again, no training
    assert not list(models.rglob("test_folds.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(models / "t" / "test.csv"),
                                  pd.read_csv(cfg.paths.models / "t" / "test.csv"))


def test_refit_auto_where_purged_folds_leave_the_fold_models_few_rows(grid) -> None:
    """auto refits where a fold model learns from under half the CV rows: plain folds
    (two thirds of them, with three folds) do not; folds purging shared groups do."""
    from taemi.experiment import refit_decision

    cfg, _ = grid
    folds = read_folds(cfg.folds.path)
    plain = refit_decision(cfg, "t", folds)
    assert not plain["used"] and plain["training_share"] == pytest.approx(2 / 3, abs=0.02)
    assert "auto" in plain["why"]
    # a purge group joins each row of fold 0 with rows of folds 1 and 2
    purge = np.arange(len(folds)) % (len(folds) // 3)
    purged = refit_decision(cfg, "t", folds.assign(purge=purge))
    assert purged["used"] and purged["training_share"] < 0.5
    off = cfg.experiments["t"].model_copy(update={"refit": False})
    never = cfg.model_copy(update={"experiments": {"t": off}})
    assert not refit_decision(never, "t", folds.assign(purge=purge))["used"]


def test_refit_epochs_shrink_by_the_rule_and_only_refit_jobs_change(
        grid, monkeypatch, tmp_path: Path) -> None:
    """A refit runs its fold models' median best epoch times share ** exponent: 0 for
    `median`, 1/2 for `sqrt`, and for `auto` from 0 at few CV rows to 1/2 at many, but 0
    where that epoch is the cap; the rule is in the refit jobs' keys (their epochs), never
    in a fold job's."""
    import taemi.experiment
    from taemi.experiment import (
        REFIT_MEDIAN_ROWS,
        REFIT_SQRT_ROWS,
        job_key_parts,
        refit_decision,
        refit_epochs,
        refit_exponent,
        refit_jobs,
    )

    assert refit_exponent("median", 50_000) == 0.0
    assert refit_exponent("sqrt", 100) == 0.5
    autos = [refit_exponent("auto", rows) for rows in
             (100, REFIT_MEDIAN_ROWS, 4_000, 8_000, REFIT_SQRT_ROWS, 50_000)]
    assert autos[0] == autos[1] == 0.0 and autos[-2] == autos[-1] == 0.5
    assert 0.0 < autos[2] < autos[3] < 0.5
    sqrt_rule = {"rule": "sqrt", "factor": 0.35 ** 0.5, "cap": 20}
    assert refit_epochs(20, sqrt_rule) == 12
    assert refit_epochs(1, {**sqrt_rule, "factor": 0.1}) == 1
    assert refit_epochs(20, {**sqrt_rule, "rule": "auto"}) == 20  # at the cap: the median
    assert refit_epochs(19, {**sqrt_rule, "rule": "auto"}) == 11

    cfg, _ = grid
    folds = read_folds(cfg.folds.path)
    folds = folds.assign(purge=np.arange(len(folds)) % (len(folds) // 3))

    def with_rule(rule: str):
        exp = cfg.experiments["t"].model_copy(update={"refit_epochs": rule})
        return cfg.model_copy(update={"experiments": {"t": exp}})

    median, sqrt = with_rule("median"), with_rule("sqrt")
    decision = refit_decision(sqrt, "t", folds)
    share = decision["training_share"]
    assert decision["epochs_rule"]["factor"] == pytest.approx(share ** 0.5, abs=1e-3)
    assert "sqrt" in decision["epochs_rule"]["why"]
    seed_dir = cfg.paths.models / "t" / "vit-w2v" / "seed0"
    best = np.median([read_json(seed_dir / f"fold{f}" / "done.json")["best_epoch"]
                      for f in range(3)])
    by_rule = {rule: refit_jobs(c, "t", folds)[0] for rule, c in
               (("median", median), ("sqrt", sqrt))}
    assert by_rule["median"].epochs == round(best)
    assert by_rule["sqrt"].epochs == refit_epochs(best, decision["epochs_rule"]) == \
        max(1, round(best * decision["epochs_rule"]["factor"]))
    fold_job = plan_jobs(cfg, "t", folds)[0]
    assert job_key_parts(median, fold_job, {}, "d", "l") == \
        job_key_parts(sqrt, fold_job, {}, "d", "l")
    keyed = {rule: job_key_parts(c, by_rule[rule], {}, "d", "l")["train"]["epochs"]
             for rule, c in (("median", median), ("sqrt", sqrt))}
    assert keyed == {rule: job.epochs for rule, job in by_rule.items()}

    # auto where the tiny data count as many rows, the fold models' best epochs set to 10:
    # the cap decides whether it shrinks
    monkeypatch.setattr(taemi.experiment, "REFIT_MEDIAN_ROWS", 1)
    monkeypatch.setattr(taemi.experiment, "REFIT_SQRT_ROWS", 2)
    models = tmp_path / "models"
    shutil.copytree(cfg.paths.models, models)
    for done_file in models.rglob("fold*/done.json"):
        write_json(done_file, {**read_json(done_file), "best_epoch": 10})

    def auto_with_cap(cap: int):
        exp = cfg.experiments["t"].model_copy(update={"refit_epochs": "auto"})
        return cfg.model_copy(update={
            "experiments": {"t": exp}, "train": cfg.train.model_copy(update={"epochs": cap}),
            "paths": cfg.paths.model_copy(update={"models": models})})

    uncapped = auto_with_cap(50)
    assert refit_decision(uncapped, "t", folds)["epochs_rule"]["exponent"] == 0.5
    assert refit_jobs(uncapped, "t", folds)[0].epochs == round(10 * share ** 0.5) < 10
    assert refit_jobs(auto_with_cap(10), "t", folds)[0].epochs == 10
