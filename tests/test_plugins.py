"""A team's own model in a file of its own (`plugins:`): trained through the grid here, in
`workers` processes and on a two-node Ray cluster, stacked and submitted; keyed by its
code; every way of getting it wrong is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from taemi.artifacts import read_json
from taemi.cli import main
from taemi.config import load_config
from taemi.pipeline import open_data
from taemi.submission import submission_problems

MLP = '''\
"""A team's model: each role's valid steps averaged, one hidden layer, six sigmoids."""
import torch
from torch import nn

from taemi.models import register_model


class MeanMLP(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int) -> None:
        super().__init__()
        self.roles = sorted(dims)
        width = sum(dims.values()) + len(dims)  # each role's mean, and its missing flag
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 6))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for role in self.roles:
            valid = batch[role + "_valid"].unsqueeze(-1).float()
            mean = (batch[role] * valid).sum(1) / valid.sum(1).clamp(min=1)
            parts += [mean, batch[role + "_missing"].float().unsqueeze(-1)]
        return torch.sigmoid(self.net(torch.cat(parts, -1)))


@register_model
def team_mlp(dims: dict[str, int], hidden: int = 32) -> nn.Module:
    return MeanMLP(dims, hidden)
'''

LINEAR = '''\
import torch
from torch import nn

from taemi.models import register_model


class LastAudio(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.out = nn.Linear(width, 6)

    def forward(self, batch):
        return torch.sigmoid(self.out(batch["audio"].mean(1)))


@register_model(requires=("audio",))
def team_linear(dims):
    return LastAudio(dims["audio"])
'''


def project_tree(root: Path, work: Path) -> dict:
    tree = tiny_config(root, work, train={"epochs": 2, "batch_size": 32, "threads": 1},
                       paths={d: str(work / d) for d in
                              ("models", "ensembles", "submissions", "reports", "runs")},
                       ).resolved()
    return {**tree, "name": "team",
            "plugins": ["team/mlp.py", "team/linear.py"],  # relative to the config file
            "experiments": {"mlp": {"model": {"name": "team_mlp", "hidden": 16}},
                            "lin": {"model": {"name": "team_linear"}, "robustness": False},
                            "audio": {"model": {"name": "linear_audio"}, "robustness": False}},
            "stack": {"name": "team-stack", "experiments": ["mlp", "lin", "audio"],
                      "lightgbm": {"n_estimators": 50}},
            "submit": {"name": "team-stack", "source": "team-stack"}}


def write_project(root: Path, work: Path, **changes) -> Path:
    (work / "team").mkdir(parents=True, exist_ok=True)
    (work / "team" / "mlp.py").write_text(MLP)
    (work / "team" / "linear.py").write_text(LINEAR)
    tree = {**project_tree(root, work), **changes}
    config = work / "team.yaml"
    config.write_text(yaml.safe_dump(tree))
    return config


@pytest.fixture(scope="module")
def project(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose models live in two files beside its config, after `taemi run`."""
    config = write_project(tiny_root, tmp_path_factory.mktemp("plugins"))
    assert main(["run", str(config), "-q"]) == 0
    return config


def done_jobs(models: Path, experiment: str) -> dict[str, dict]:
    return {str(p.parent.relative_to(models)): read_json(p)
            for p in sorted((models / experiment).rglob("done.json"))}


def test_a_model_in_a_file_is_trained_measured_stacked_and_submitted(project: Path) -> None:
    work = project.parent
    cfg = load_config(project)
    assert cfg.plugins == [str(work / "team" / "mlp.py"), str(work / "team" / "linear.py")]
    assert len(done_jobs(work / "models", "mlp")) == 3  # one backbone, one seed, 3 folds
    assert read_json(work / "models" / "mlp" / "cv.json")["overall"]["mean"] > 0
    assert (work / "models" / "mlp" / "robustness.csv").is_file()  # like any built-in
    assert (work / "ensembles" / "team-stack" / "test.csv").is_file()
    submission = work / "submissions" / "team-stack.csv"
    assert submission_problems(submission, open_data(cfg).test_ids) == []
    board = read_json(work / "reports" / "team" / "leaderboard.json")
    assert {"mlp", "lin", "audio"} <= {row["entry"] for row in board}
    # the robustness command rebuilds the model from the experiment's own config.json
    assert main(["robustness", "mlp", "--models", str(work / "models"), "-q"]) == 0


def test_two_workers_and_one_process_train_the_same_plugin_models(
        project: Path, tmp_path: Path) -> None:
    """Spawned workers know nothing of the parent's imports: they import the plugins from
    the config they are given, and make the same predictions."""
    models = tmp_path / "models"
    assert main(["train", str(project), "--set", "workers=2", "--set",
                 f"paths.models={models}", "-q"]) == 0
    theirs = project.parent / "models"
    for name in ("mlp/oof.csv", "mlp/test.csv", "lin/oof.csv"):
        assert (models / name).read_bytes() == (theirs / name).read_bytes(), name


def test_editing_a_plugin_retrains_its_jobs_only(project: Path, tiny_root: Path,
                                                  tmp_path: Path) -> None:
    work = tmp_path / "copy"
    shutil.copytree(project.parent, work)
    config = write_project(tiny_root, work)
    models = work / "models"
    before = {e: done_jobs(models, e) for e in ("mlp", "lin", "audio")}

    def retrained() -> dict[str, int]:
        assert main(["train", str(config), "-q"]) == 0
        now = {e: done_jobs(models, e) for e in before}
        changed = {e: sum(now[e][j] != before[e][j] for j in now[e]) for e in now}
        before.update(now)
        return changed

    assert retrained() == {"mlp": 0, "lin": 0, "audio": 0}  # a copied project is current
    linear = work / "team" / "linear.py"
    linear.write_text(LINEAR.replace("batch[\"audio\"].mean(1)", "batch[\"audio\"].amax(1)"))
    assert retrained() == {"mlp": 0, "lin": 3, "audio": 0}
    mlp = work / "team" / "mlp.py"
    mlp.write_text("# a comment changes no code\n" + MLP)
    assert retrained() == {"mlp": 0, "lin": 0, "audio": 0}
    mlp.write_text(MLP.replace("nn.GELU()", "nn.ReLU()"))  # the same process, new code
    assert retrained() == {"mlp": 3, "lin": 0, "audio": 0}


BAD_OUTPUT = '''\
import torch
from torch import nn

from taemi.models import register_model


class Bad(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.out = nn.Linear(width, {outputs})

    def forward(self, batch):
        return self.out(batch["audio"].mean(1)){end}


@register_model
def {name}(dims):
    return Bad(dims["audio"])
'''

ERRORS = {
    "missing file": ({}, ["team/absent.py"],
                     r"plugin file not found: \S+/team/absent\.py"),
    "import error": ({"broken.py": "import torch\n\nWIDTH = 3\nimport not_a_module_xyz\n"},
                     ["broken.py"], r"plugin \S+/broken\.py, line 4: ModuleNotFoundError: "
                                    r"No module named 'not_a_module_xyz'"),
    "syntax error": ({"typo.py": "import torch\n\ndef f(:\n    pass\n"}, ["typo.py"],
                     r"plugin \S+/typo\.py, line 3: SyntaxError"),
    "no module": ({}, ["team_models_not_installed"],
                  r"plugin module 'team_models_not_installed' cannot be imported"),
    "built-in clash": ({"clash.py": "from taemi.models import register_model\n\n\n"
                                    "@register_model\ndef taemi(dims):\n    pass\n"},
                       ["clash.py"], r"plugin \S+/clash\.py, line 4: model 'taemi' is "
                                     r"already registered, by the built-in model in \S+/taemi\.py"),
    "plugin clash": ({"a.py": "from taemi.models import register_model\n\n\n"
                              "@register_model\ndef team_twin(dims):\n    pass\n",
                      "b.py": "from taemi.models import register_model\n\n\n"
                              "@register_model\ndef team_twin(dims):\n    pass\n"},
                     ["a.py", "b.py"], r"plugin \S+/b\.py, line 4: model 'team_twin' is "
                                       r"already registered, by plugin \S+/a\.py"),
    "no dims": ({"nodims.py": "from taemi.models import register_model\n\n\n"
                              "@register_model\ndef team_nodims(width=3):\n    pass\n"},
                ["nodims.py"], r"plugin \S+/nodims\.py, line 4: TypeError: model "
                               r"'team_nodims' takes no `dims` argument"),
    "nothing registered": ({"empty.py": "X = 1\n"}, ["empty.py"],
                           r"plugin \S+/empty\.py registers no model"),
    "many-line error": ({"lines.py": "raise ValueError('first line\\n  second line')\n"},
                        ["lines.py"], r"plugin \S+/lines\.py, line 1: ValueError: first "
                                      r"line second line$"),
    "output shape": ({"shape.py": BAD_OUTPUT.format(outputs=5, end=".sigmoid()",
                                                    name="team_five")},
                     ["shape.py"], r"model 'team_five' \(plugin \S+/shape\.py\) returned "
                                   r"shape \(32, 5\) on its first batch; a model returns a "
                                   r"\(32, 6\) tensor of values in \[0, 1\]"),
    "output range": ({"range.py": BAD_OUTPUT.format(outputs=6, end="", name="team_raw")},
                     ["range.py"], r"model 'team_raw' \(plugin \S+/range\.py\) returned "
                                   r"values from \S+ to \S+ on its first batch.*sigmoid"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_plugin_mistake_is_one_line(case: str, project: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    files, plugins, expected = ERRORS[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    tree = yaml.safe_load(project.read_text())
    model = {"output shape": "team_five", "output range": "team_raw"}.get(case, "linear_audio")
    tree.update(plugins=plugins, experiments={"bad": {"model": {"name": model}}},
                paths={**tree["paths"], "models": str(tmp_path / "models")})
    tree.pop("stack"), tree.pop("submit")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(tree))
    capsys.readouterr()
    assert main(["train", str(config), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("taemi train: error: ")
    assert re.search(expected, err), err


def test_shipped_plugin_source_builds_the_same_model_where_the_file_is_absent(
        tmp_path: Path) -> None:
    """What a Ray task on a node without the file does: the source came with the task."""
    from taemi.config import config_from_dict
    from taemi.models import model_code_digest
    from taemi.plugins import ship, unship

    plugin = tmp_path / "elsewhere" / "mlp.py"
    plugin.parent.mkdir()
    plugin.write_text(MLP.replace("team_mlp", "team_shipped"))
    tree = {"plugins": [str(plugin)], "data": {"root": str(tmp_path)},
            "experiments": {"s": {"model": {"name": "team_shipped", "hidden": 4}}}}
    config_from_dict(tree)
    key = model_code_digest("team_shipped")
    shipped = ship(tree["plugins"])
    shutil.rmtree(plugin.parent)  # the node has no such file
    script = textwrap.dedent("""
        import json, sys
        from taemi.config import config_from_dict
        from taemi.models import create_model, model_code_digest
        from taemi.plugins import unship
        tree = json.loads(sys.argv[1])
        tree["plugins"] = unship(tree["plugins"], json.loads(sys.argv[2]))
        config_from_dict(tree)
        create_model("team_shipped", dims={"text": 2, "visual": 2, "audio": 2}, hidden=4)
        print(model_code_digest("team_shipped"))
    """)
    out = subprocess.run([sys.executable, "-c", script, json.dumps(tree), json.dumps(shipped)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == key
    assert unship(tree["plugins"], shipped) != tree["plugins"]


def test_an_installed_package_offers_models_through_its_entry_point(tmp_path: Path) -> None:
    """A package with `[project.entry-points."taemi.models"]`: its models are known by
    name to a config that does not list it, and a clash in it is one line."""
    site = tmp_path / "site"
    (site / "team_pkg-0.1.dist-info").mkdir(parents=True)
    (site / "team_pkg-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: team-pkg\nVersion: 0.1\n")
    (site / "team_pkg-0.1.dist-info" / "entry_points.txt").write_text(
        "[taemi.models]\nteam = team_pkg\n")
    (site / "team_pkg.py").write_text(MLP.replace("team_mlp", "team_installed"))
    script = textwrap.dedent("""
        import sys
        from taemi.config import config_from_dict
        from taemi.models import model_origin
        cfg = config_from_dict({"data": {"root": "."}, "experiments": {
            "e": {"model": {"name": "team_installed", "hidden": 4}}}})
        print(cfg.experiments["e"].model.resolved()["hidden"], model_origin("team_installed"))
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "plugin", str(site / "team_pkg.py")]

    (site / "team_pkg.py").write_text(MLP.replace("team_mlp", "fusion"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode != 0
    assert "entry point 'team' = 'team_pkg' of package 'team-pkg'" in out.stderr
    assert "model 'fusion' is already registered, by the built-in model" in out.stderr


def test_plugin_models_train_on_a_two_node_ray_cluster(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each task imports the plugin from the source shipped with it; jobs land on both
    nodes and predict what the local executor predicted."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from taemi.pipeline import train_experiments

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    models = tmp_path / "models"
    cfg = load_config(project, [f"paths.models={models}", "executor=ray",
                                "stack=null", "submit=null"])
    cfg = cfg.model_copy(update={"experiments": {"mlp": cfg.experiments["mlp"]}})
    loopback = "127.0.0.1"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": loopback})
    cluster.add_node(num_cpus=1, node_ip_address=loopback)
    ray.init(address=cluster.address, log_to_driver=False, _node_ip_address=loopback)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "the second node never joined"
        train_experiments(cfg, executor="ray")
    finally:
        ray.shutdown()
        cluster.shutdown()
    jobs = done_jobs(models, "mlp")
    assert len(jobs) == 3
    assert len({j["ran_on"]["ray_node"] for j in jobs.values()}) == 2  # both nodes did jobs
    theirs = project.parent / "models"
    for name in ("mlp/oof.csv", "mlp/test.csv"):
        assert (models / name).read_bytes() == (theirs / name).read_bytes(), name


def test_the_readme_example_is_the_shipped_plugin_and_its_config_adds_to_the_demo() -> None:
    repo = Path(__file__).parents[1]
    readme = (repo / "README.md").read_text()
    plugin = (repo / "configs" / "own_model.py").read_text()
    assert f"```python\n{plugin.rstrip()}\n```" in readme
    own = load_config(repo / "configs" / "own_model.yaml")
    demo = load_config(repo / "configs" / "demo.yaml")
    assert own.plugins == [str(repo / "configs" / "own_model.py")]
    assert own.experiments["own-mlp"].model.name == "mean_mlp"
    for name, experiment in demo.experiments.items():  # the demo's jobs stay current
        assert own.experiments[name] == experiment
    assert own.train == demo.train and own.folds == demo.folds and own.cache == demo.cache


def test_a_plugin_fixed_after_a_failed_edit_loads_again(tmp_path: Path) -> None:
    from taemi.config import config_from_dict
    from taemi.models import list_models
    from taemi.plugins import PluginError

    plugin = tmp_path / "mine.py"
    good = MLP.replace("team_mlp", "team_fixed")
    tree = {"plugins": [str(plugin)], "data": {"root": str(tmp_path)},
            "experiments": {"e": {"model": {"name": "team_fixed"}}}}
    plugin.write_text(good)
    config_from_dict(tree)
    plugin.write_text(good + "\nraise RuntimeError('half-way through an edit')\n")
    with pytest.raises(PluginError, match="half-way through an edit"):
        config_from_dict(tree)
    assert "team_fixed" not in list_models()
    plugin.write_text(good)  # put back as it was
    assert config_from_dict(tree).experiments["e"].model.name == "team_fixed"
