"""The command line over the foundation steps, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from taemi.cli import main


def test_synth_cache_folds_from_the_command_line(tmp_path: Path, monkeypatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "data/x", "--scale", "0.01", "--workers", "1", "-q"]) == 0
    assert "oracle test mean Pearson" in capsys.readouterr().out
    config = {"name": "x", "data": {"root": "data/x", "test_list": "test_split.csv"},
              "cache": {"steps": {"text": 4, "visual": 4, "audio": 4}, "workers": 1},
              "folds": {"path": "folds/x.csv", "n_splits": 3}}
    Path("x.yaml").write_text(yaml.safe_dump(config))
    assert main(["cache", "x.yaml"]) == 0
    out = capsys.readouterr().out
    assert "data report:" in out and "wav2vec2:" in out and "transcripts:" in out
    assert main(["folds", "x.yaml", "--set", "folds.n_splits=2", "-q"]) == 0
    assert set(pd.read_csv("folds/x.csv")["fold"]) == {0, 1}


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, monkeypatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x.yaml").write_text(yaml.safe_dump({"data": {"root": "nowhere"}}))
    assert main(["folds", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "taemi folds: error: data root nowhere does not exist" in err
    assert main(["cache", "x.yaml", "--set", "cache.step=3"]) == 2
    assert "config key 'cache.step': unknown key" in capsys.readouterr().err


def test_submit_needs_a_source(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x.yaml").write_text(yaml.safe_dump({"data": {"root": "nowhere"}}))
    assert main(["submit", "x.yaml"]) == 2
    assert "give --from SOURCE and --name NAME" in capsys.readouterr().err
    assert main(["submit", "x.yaml", "--from", "ghost", "--name", "a"]) == 2
    assert "no ensemble or experiment 'ghost'" in capsys.readouterr().err
