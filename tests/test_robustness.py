"""Missing-modality robustness of a trained experiment."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taemi.cli import main
from taemi.robustness import CONDITIONS, resolve_experiment, robustness, write_robustness


def test_robustness_table_and_plot(grid) -> None:
    cfg, cv = grid
    table = robustness(cfg, "t")
    assert len(table) == len(CONDITIONS) == 7
    full = table.loc["all modalities"]
    assert full["mean"] == pytest.approx(cv["overall"]["mean"], abs=1e-9)  # same OOF rows
    assert full["loss_vs_all"] == 0
    assert (table["loss_vs_all"].drop("all modalities") != 0).any()
    plot = write_robustness(cfg, "t", table)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = pd.read_csv(plot.with_suffix(".csv"))
    assert saved["condition"].tolist() == table.index.tolist()


def test_experiment_by_folder_or_name(grid, tmp_path: Path, capsys) -> None:
    cfg, _ = grid
    folder = cfg.paths.models / "t"
    assert resolve_experiment(folder)[1] == "t"
    assert resolve_experiment("t", cfg.paths.models)[0].experiments["t"].seeds == [0, 1]
    with pytest.raises(FileNotFoundError, match="taemi train"):
        resolve_experiment(tmp_path / "nothing")
    assert main(["robustness", str(folder), "-q"]) == 0
    assert "without audio" in capsys.readouterr().out
