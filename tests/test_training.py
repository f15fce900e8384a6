"""The fold trainer: determinism, early stopping, per-epoch metrics and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from taemi.config import ConfigError, TrainConfig
from taemi.data import labels_matrix
from taemi.experiment import open_packs
from taemi.models import create_model
from taemi.pipeline import ensure_cache, open_data
from taemi.training import ClipInputs, fit_fold, predict, seed_everything, warmup_cosine


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("train")
    cfg = tiny_config(tiny_root, work)
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    ids = data.labels["Filename"].tolist()
    inputs = ClipInputs(open_packs(cfg, data, "vit-w2v"), ids)
    y = labels_matrix(data.labels, ids)
    split = len(ids) * 3 // 4
    return inputs, y, np.arange(split), np.arange(split, len(ids))


def train(setup, workdir: Path, seed: int = 1, on_epoch=None, **overrides):
    inputs, y, tr, va = setup
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 32, "patience": 10, **overrides})
    seed_everything(seed)
    model = create_model("taemi", dims=inputs.dims, d_model=16, heads=2)
    outcome = fit_fold(model, inputs, tr, y[tr], va, y[va], cfg, seed, workdir, "fp",
                       on_epoch=on_epoch)
    return model, outcome


def test_same_seed_same_predictions(setup, tmp_path: Path) -> None:
    inputs, _, _, va = setup
    a, _ = train(setup, tmp_path / "a")
    b, _ = train(setup, tmp_path / "b")
    c, _ = train(setup, tmp_path / "c", seed=2)
    pa, pb = predict(a, inputs, va), predict(b, inputs, va)
    np.testing.assert_array_equal(pa, pb)
    assert not np.allclose(pa, predict(c, inputs, va))


def test_metrics_checkpoint_and_early_stopping(setup, tmp_path: Path) -> None:
    _, outcome = train(setup, tmp_path, epochs=6, patience=2, lr=1e-9, ema=None)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    # nothing improves by min_delta: the first epoch stays best, patience ends the run
    assert outcome.best_epoch == 1 and len(metrics) == outcome.epochs_run == 1 + 2
    assert {"train_loss", "val_loss", "val_mean_pearson", "val_Empathic Pain", "lr"} <= set(
        metrics.columns)
    assert (tmp_path / "model.pt").is_file()


def test_interrupted_fold_resumes_to_the_same_weights(setup, tmp_path: Path) -> None:
    inputs, _, _, va = setup
    whole, _ = train(setup, tmp_path / "whole", epochs=4)

    def stop_after_two(epoch: int, score: float) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(setup, tmp_path / "cut", epochs=4, on_epoch=stop_after_two)
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 2
    resumed, outcome = train(setup, tmp_path / "cut", epochs=4)
    assert outcome.epochs_run == 4
    assert len(pd.read_csv(tmp_path / "cut" / "metrics.csv")) == 4
    np.testing.assert_allclose(predict(resumed, inputs, va), predict(whole, inputs, va),
                               atol=1e-6)


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-9)


def test_dropping_a_modality_at_prediction(setup) -> None:
    inputs, _, _, va = setup
    batch = inputs.batch(torch.as_tensor(va[:4]), drop=("audio",))
    assert batch["audio_missing"].all() and batch["visual"].dtype == torch.float32


def test_gate_loss_needs_a_gate_head(setup, tmp_path: Path) -> None:
    inputs, y, tr, va = setup
    cfg = TrainConfig(epochs=1, batch_size=32, loss={"mse": 1.0, "gate": 0.3})
    plain = create_model("taemi_paper", dims=inputs.dims, d_model=16, heads=2)
    with pytest.raises(ConfigError, match=r"train\.loss\.gate"):
        fit_fold(plain, inputs, tr, y[tr], va, y[va], cfg, 0, tmp_path / "plain")
    runs = []
    for name in ("a", "b"):
        seed_everything(0)
        gated = create_model("taemi_paper", dims=inputs.dims, d_model=16, heads=2, head="gate")
        outcome = fit_fold(gated, inputs, tr, y[tr], va, y[va], cfg, 0, tmp_path / name)
        assert np.isfinite(outcome.best_score)
        runs.append(predict(gated, inputs, va))
    np.testing.assert_array_equal(*runs)  # same seed, same predictions, gate loss included


def test_average_keeps_the_mean_of_the_best_epochs(setup, tmp_path: Path) -> None:
    """`train.average: 2` saves the mean of the two best epochs' weights (by the selection
    rows), snapshots of the others are dropped, and a resumed run ends the same."""
    inputs, _, _, va = setup
    best_each = []

    def record(epoch: int, score: float) -> None:
        best_each.append(score)

    whole, _ = train(setup, tmp_path / "avg", epochs=4, average=2, on_epoch=record)
    kept = sorted(range(1, 5), key=lambda e: (-best_each[e - 1], -e))[:2]
    snapshots = tmp_path / "avg" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == sorted(f"epoch{e}.pt" for e in kept)
    states = [torch.load(snapshots / f"epoch{e}.pt", weights_only=True) for e in kept]
    saved = torch.load(tmp_path / "avg" / "model.pt", weights_only=True)
    for name, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][name] + states[1][name]) / 2)
    assert not torch.equal(saved[next(iter(saved))], states[0][next(iter(saved))])

    def stop_after_two(epoch: int, score: float) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(setup, tmp_path / "cut", epochs=4, average=2, on_epoch=stop_after_two)
    resumed, _ = train(setup, tmp_path / "cut", epochs=4, average=2)
    np.testing.assert_allclose(predict(resumed, inputs, va), predict(whole, inputs, va),
                               atol=1e-6)
