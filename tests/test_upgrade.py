"""Work finished by the kit before content keys is carried over, not redone: the last
release's code (from git) runs a tiny project, then today's kit runs it again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MODEL, tiny_config
from taemi.artifacts import read_json
from taemi.config import load_config
from taemi.pipeline import run_all

LEGACY_COMMIT = "8a2d575"  # the last kit that keyed artifacts by paths and mtimes
REPO = Path(__file__).resolve().parents[1]

OLD_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
import taemi
assert taemi.__file__.startswith(sys.argv[1]), taemi.__file__
from taemi.config import load_config
from taemi.pipeline import run_all
from taemi.progress import set_quiet
set_quiet(True)
run_all(load_config(sys.argv[2]))
"""


def legacy_source(target: Path) -> Path:
    """The package as it was at LEGACY_COMMIT, unpacked under `target`."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", LEGACY_COMMIT, "src"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the kit's git history (commit {LEGACY_COMMIT}) is not here")
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def test_a_project_of_the_previous_kit_is_carried_over(tiny_root: Path,
                                                       tmp_path: Path) -> None:
    old_src = legacy_source(tmp_path / "legacy")
    work = tmp_path / "project"
    cfg = tiny_config(tiny_root, work, train={"epochs": 1, "batch_size": 32, "threads": 1},
                      experiments={"t": {"model": MODEL, "robustness": False}},
                      tune={"experiment": "t", "n_trials": 1, "folds": [0],
                            "dir": str(work / "tune")},
                      paths={"models": str(work / "models"), "reports": str(work / "reports")})
    path = work / "run.yaml"
    work.mkdir(parents=True, exist_ok=True)
    tree = cfg.resolved()
    del tree["paths"]["runs"], tree["plugins"]  # keys the previous kit did not know
    for key in ("choices", "minutes", "share", "start"):
        del tree["tune"][key]
    del tree["experiments"]["t"]["refit"], tree["experiments"]["t"]["refit_epochs"]
    path.write_text(yaml.safe_dump(tree))
    old = subprocess.run([sys.executable, "-c", OLD_RUN, str(old_src), str(path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert old.returncode == 0, old.stderr[-3000:]
    models = work / "models" / "t"
    trained = {p: p.stat().st_mtime_ns for p in models.rglob("model.pt")}
    arrays = sorted(p.stat().st_mtime_ns for p in (work / "cache").glob("*/x.npy"))
    people = (work / "folds" / "participants.csv").stat().st_mtime_ns
    assert len(trained) == 3 and not any("files.json" in str(p) for p in
                                         (work / "cache").rglob("*"))

    run_all(load_config(path, [f"paths.runs={work / 'runs'}"]))
    assert {p: p.stat().st_mtime_ns for p in models.rglob("model.pt")} == trained
    done = [read_json(p.with_name("done.json")) for p in trained]
    assert all("carried_from" in d for d in done)  # re-keyed, not retrained
    packs = list((work / "cache").glob("*/x.npy"))
    assert sorted(p.stat().st_mtime_ns for p in packs) == arrays  # renamed, not rebuilt
    assert all((p.parent / "files.json").is_file() for p in packs if "pnorm" not in str(p))
    assert (work / "folds" / "participants.csv").stat().st_mtime_ns == people
    studies = [p for p in (work / "tune").iterdir() if p.is_dir()]
    carried = [s for s in studies if (s / "study.json").is_file()]
    assert len(carried) == 1 and read_json(carried[0] / "study.json")["finished"] == 1
    assert not [p for p in carried[0].glob("trial*") if p.is_dir()]  # no trial ran again


KEYED_COMMIT = "8973a8c"  # the last kit before plugins, the waveform cache, recipe choices


def test_jobs_and_studies_of_the_last_kit_keep_their_keys(tmp_path: Path) -> None:
    """What later rounds added (the registry's checks, plugins, new config keys with their
    defaults, new models in their own modules) changes no earlier built-in model's code
    digest and no study's tune part."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", KEYED_COMMIT, "src"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the kit's git history (commit {KEYED_COMMIT}) is not here")
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True)
    script = """
import sys
sys.path.insert(0, sys.argv[1])
from taemi.artifacts import stable_hash
from taemi.config import config_from_dict
from taemi.models import list_models, model_code_digest
from taemi.tuning import UNKEYED_TUNE_KEYS
cfg = config_from_dict({"data": {"root": "."}, "experiments": {"t": {}},
                        "tune": {"experiment": "t"}})
dump = cfg.tune.model_dump(mode="json", exclude=UNKEYED_TUNE_KEYS | {"choices", "start"})
print(json.dumps({"models": {n: model_code_digest(n) for n in list_models()},
                  "tune": stable_hash(dump)}))
"""
    runs = [subprocess.run([sys.executable, "-c", "import json\n" + script, str(src)],
                           capture_output=True, text=True, timeout=120)
            for src in (tmp_path / "src", REPO / "src")]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    old, new = (json.loads(r.stdout) for r in runs)
    assert old["tune"] == new["tune"]
    # every model of the last kit keeps its digest; a model added since is new, not changed
    assert {n: new["models"].get(n) for n in old["models"]} == old["models"]
    assert "taemi" in old["models"] and len(new["models"]) > len(old["models"])
