"""Config: typed, validated once, errors that name the key, command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from taemi.config import ConfigError, load_config

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "abaw.yaml", "paper.yaml", "paper_features.yaml",
                                  "endtoend_gpu.yaml", "own_model.yaml", "recipe.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.data.root.name and cfg.packed_features()


def test_overrides_are_typed() -> None:
    cfg = load_config(CONFIGS / "demo.yaml", ["folds.n_splits=3", "cache.steps.audio=48",
                                              "data.root=/tmp/x"])
    assert cfg.folds.n_splits == 3 and cfg.cache.steps["audio"] == 48
    assert str(cfg.data.root) == "/tmp/x"


@pytest.mark.parametrize(("override", "message"), [
    ("folds.n_split=3", r"config key 'folds.n_split': unknown key \(did you mean 'n_splits'"),
    ("folds.n_splits=one", r"config key 'folds.n_splits': .*integer.*'one'"),
    ("folds.scheme=valid", r"config key 'folds.scheme'"),
    ("cache.steps.audio=0", r"config key 'cache.steps.audio': .*greater than 0"),
    ("synth.scale=2", r"config key 'synth.scale'"),
    ("folds", r"expected key.path=value"),
])
def test_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "demo.yaml", [override])


def test_missing_required_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml: invalid config\n  config key 'data'"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_overlays_merge_before_overrides(tmp_path: Path) -> None:
    overlay = tmp_path / "best.yaml"
    overlay.write_text("experiments:\n  demo-taemi:\n    model:\n      dropout: 0.25\n"
                       "      modality_dropout: {text: 0.5}\n")
    cfg = load_config(CONFIGS / "demo.yaml", ["train.epochs=2"], overlays=[overlay])
    params = cfg.experiments["demo-taemi"].model.params()
    assert params == {"dropout": 0.25, "modality_dropout": {"text": 0.5}}
    assert cfg.experiments["demo-taemi"].model.name == "taemi"  # merged, not replaced
    assert cfg.train.epochs == 2


def test_sections_must_name_known_experiments() -> None:
    with pytest.raises(ConfigError, match=r"stack names experiment 'nope'"):
        load_config(CONFIGS / "demo.yaml", ["stack.experiments=[nope]"])
    from taemi.stacking import check_stack

    with pytest.raises(ConfigError, match=r"stack.lightgbm.leaves': LGBMStacker has no "):
        check_stack(load_config(CONFIGS / "demo.yaml", ["stack.lightgbm.leaves=3"]))


def test_robustness_is_measured_for_every_experiment_unless_switched_off() -> None:
    e2e = load_config(CONFIGS / "endtoend_gpu.yaml").experiments["e2e-taemi-paper"]
    assert e2e.robustness  # end-to-end experiments too (tests/test_endtoend.py)
    demo = load_config(CONFIGS / "demo.yaml", ["experiments.demo-audio.robustness=false"])
    assert demo.experiments["demo-taemi"].robustness
    assert not demo.experiments["demo-audio"].robustness
