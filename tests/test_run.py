"""The end-to-end run: every artifact, and a rerun that redoes only what is missing."""

from __future__ import annotations

import os
from pathlib import Path

from taemi.cli import main
from taemi.config import load_config
from taemi.pipeline import open_data, run_all
from taemi.submission import submission_problems


def files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_makes_every_artifact(demo_run) -> None:
    path, results = demo_run
    cfg = load_config(path)
    work = path.parent
    assert len(list((work / "tune").glob("tinyrun-tiny-taemi-*/best.yaml"))) == 1
    assert results["stack"]["method"] == "lightgbm stack"
    submission = results["submission"]
    assert submission == work / "submissions" / "tiny-stack.csv"
    assert submission_problems(submission, open_data(cfg).test_ids) == []
    entries = [row["entry"] for row in results["leaderboard"]]
    for expected in ("tiny-taemi", "tiny-audio", "mean blend", "ridge stack", "lightgbm stack"):
        assert expected in entries
    assert any(e.startswith("best single") for e in entries)
    assert any(e.startswith("oracle") for e in entries)
    report = results["report"].read_text()
    assert "per_target.png" in report and "robustness_tiny-taemi.png" in report
    assert (work / "models" / "tiny-taemi" / "robustness.csv").is_file()
    assert not (work / "models" / "tiny-audio" / "robustness.csv").exists()  # switched off


def test_report_leaves_out_a_robustness_table_of_other_models(demo_run) -> None:
    """Robustness is current by what it measured (the gathered jobs' keys), not by times:
    a regathering with identical content keeps it, a retrained job drops it from the
    report until it is remade."""
    from taemi.artifacts import read_json, write_json
    from taemi.report import write_report
    from taemi.robustness import robustness_current

    path, _ = demo_run
    cfg = load_config(path)
    folder = cfg.paths.models / "tiny-taemi"
    cv = folder / "cv.json"
    before = cv.stat()
    os.utime(cv, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # same bytes, newer
    assert robustness_current(folder)
    record = read_json(cv)
    try:  # as if one job was retrained after its table was made (robustness switched off)
        first = next(iter(record["jobs"]))
        write_json(cv, {**record, "jobs": {**record["jobs"], first: "0" * 12}})
        assert not robustness_current(folder)
        assert "robustness_tiny-taemi.png" not in write_report(cfg, open_data(cfg)).read_text()
    finally:
        write_json(cv, record)
    assert "robustness_tiny-taemi.png" in write_report(cfg, open_data(cfg)).read_text()


def test_rerun_skips_what_is_current_and_redoes_what_is_lost(demo_run, capsys) -> None:
    path, first = demo_run
    work = path.parent
    watched = [work / "data", work / "cache", work / "models", work / "ensembles",
               work / "submissions", work / "tune"]
    before = {k: v for folder in watched for k, v in files(folder).items()}
    again = run_all(load_config(path))
    after = {k: v for folder in watched for k, v in files(folder).items()}
    changed = [k for k in before if after.get(k) != before[k]]
    assert changed == [], changed[:5]
    assert again["stack"] == first["stack"]

    lost = work / "models" / "tiny-taemi" / "vit-mel" / "seed0" / "fold1" / "done.json"
    lost.unlink()
    (work / "ensembles" / "tiny-stack" / "cv.json").unlink()
    assert main(["run", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "lightgbm stack" in out and "submission:" in out
    after = {k: v for folder in watched for k, v in files(folder).items()}
    redone = sorted({str(Path(k).parent) for k in before if after.get(k) != before[k]})
    job_dirs = [d for d in redone if "/seed" in d and "/fold" in d]
    assert job_dirs == [str(lost.parent)]


def test_train_and_submit_after_run_agree_with_it(demo_run) -> None:
    """`taemi train` after `taemi run` on a config that tunes trains nothing (it uses the
    current study's parameters), and the run's own experiment is current to submit."""
    path, _ = demo_run
    models = path.parent / "models"
    before = files(models)
    assert main(["train", str(path), "-q"]) == 0
    assert files(models) == before
    assert main(["submit", str(path), "-q", "--from", "tiny-taemi", "--name", "exp"]) == 0


def test_the_step_by_step_commands_make_what_run_makes(demo_run, tmp_path: Path) -> None:
    """The README's sequence, command by command, gives byte-identical predictions to
    `taemi run` (in another folder), and `taemi run` after it redoes nothing."""
    import yaml

    from conftest import run_config_tree

    path, _ = demo_run
    config = tmp_path / "tinyrun.yaml"
    config.write_text(yaml.safe_dump(run_config_tree(tmp_path)))
    c = str(config)
    for argv in (["cache", c], ["inspect", c], ["folds", c], ["tune", c], ["train", c],
                 ["robustness", "tiny-taemi", "--models", str(tmp_path / "models")],
                 ["stack", c], ["submit", c, "--from", "tiny-stack", "--name", "tiny-stack"],
                 ["validate", str(tmp_path / "submissions" / "tiny-stack.csv"), "--config", c],
                 ["report", c]):
        assert main([*argv, "-q"]) == 0, argv
    watched = [tmp_path / d for d in ("cache", "models", "ensembles", "submissions", "tune")]
    before = {k: v for folder in watched for k, v in files(folder).items()}
    assert main(["run", c, "-q"]) == 0
    after = {k: v for folder in watched for k, v in files(folder).items()}
    assert [k for k in before if after.get(k) != before[k]] == []
    theirs = path.parent
    for part in ("ensembles/tiny-stack/test.csv", "models/tiny-taemi/test.csv",
                 "models/tiny-audio/oof.csv", "submissions/tiny-stack.csv"):
        assert (tmp_path / part).read_bytes() == (theirs / part).read_bytes(), part


def test_plan_after_run_is_all_current_and_names_what_a_change_remakes(demo_run, capsys
                                                                      ) -> None:
    from taemi.artifacts import read_json

    path, results = demo_run
    record = read_json(results["record"])
    assert record["jobs"]["planned"] == 9 and {"train", "stack", "report"} <= set(record["steps"])
    assert record["plan"] and all(entry["current"] for entry in record["plan"])
    assert "s3cret" not in results["record"].read_text()
    models = path.parent / "models"
    before = files(models)
    assert main(["plan", str(path)]) == 0
    assert "0 to make" in capsys.readouterr().out
    assert main(["plan", str(path), "--set", "train.lr=0.5", "-v"]) == 0
    out = capsys.readouterr().out
    assert "to make  experiment   tiny-audio (3 jobs)" in out and "train" in out
    assert "to make  study" in out  # the study reads the train settings too
    assert "to make  stack" in out and "to train: tiny-audio/vit-w2v/seed0/fold0" in out
    assert files(models) == before  # planning wrote nothing
