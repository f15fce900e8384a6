"""The fold trainer: one model, one fold, from the packed cache to its best checkpoint.

AdamW with linear warm-up and cosine decay, gradient clipping, an optional EMA of the
weights, optional bf16 autocast, early stopping on the fold's validation mean Pearson with
the best checkpoint kept, full seeding, CUDA when present. Every epoch is appended to
`metrics.csv` and its state to `last.pt`, so an interrupted fold resumes at the epoch it
stopped on and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from taemi.artifacts import atomic_path, write_csv
from taemi.cache import PackedFeature
from taemi.config import ROLES, ConfigError, TrainConfig
from taemi.data import TARGETS
from taemi.losses import MixedLoss
from taemi.metrics import score_table
from taemi.models import check_output
from taemi.models.layers import has_gate_head, take_gate_logits
from taemi.progress import progress

EpochCallback = Callable[[int, float], None]
SNAPSHOTS = "snapshots"  # the work folder's weights of the epochs `train.average` keeps


class TrainingDiverged(RuntimeError):
    """The loss or the predictions stopped being finite: the run cannot go on."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device': cuda, but torch sees no GPU here "
                          "(use auto or cpu)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class ClipInputs:
    """Every clip's cached inputs for one backbone, held in memory as float16 tensors.

    Each role's pack is read whole (a plain read, not a memory map, so its pages are not
    counted twice) in the pack's own row order; `ids` only map to rows. A batch is a gather
    on the device, so data loading costs next to nothing beside the model step. A role the
    backbone lacks has width 1 and is missing for every clip.
    """

    def __init__(self, packs: dict[str, PackedFeature | None], ids: list[str],
                 steps: dict[str, int] | None = None) -> None:
        self.ids = list(ids)
        self.tensors: dict[str, Tensor] = {}
        self.rows: dict[str, Tensor] = {}  # role -> row of each of `ids` in its tensors
        for role in ROLES:
            pack = packs.get(role)
            if pack is None:
                k = (steps or {}).get(role, 1)
                self.tensors[role] = torch.zeros(1, k, 1, dtype=torch.float16)
                self.tensors[f"{role}_valid"] = torch.ones(1, k, dtype=torch.bool)
                self.tensors[f"{role}_missing"] = torch.ones(1, dtype=torch.bool)
                self.rows[role] = torch.zeros(len(self.ids), dtype=torch.long)
                continue
            x, valid = pack.read()
            self.tensors[role] = torch.from_numpy(x)
            self.tensors[f"{role}_valid"] = torch.from_numpy(valid)
            self.tensors[f"{role}_missing"] = torch.from_numpy(pack.missing.copy())
            self.rows[role] = torch.from_numpy(pack.rows(self.ids))

    @property
    def dims(self) -> dict[str, int]:
        return {role: int(self.tensors[role].shape[-1]) for role in ROLES}

    def to(self, device: torch.device) -> ClipInputs:
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        self.rows = {k: v.to(device) for k, v in self.rows.items()}
        return self

    def batch(self, index: Tensor, drop: tuple[str, ...] = ()) -> dict[str, Tensor]:
        """Clips `ids[index]` as model inputs (float32); roles in `drop` are marked missing."""
        index = index.to(self.rows["text"].device)
        out = {}
        for role in ROLES:
            rows = self.rows[role].index_select(0, index)
            out[role] = self.tensors[role].index_select(0, rows).float()
            out[f"{role}_valid"] = self.tensors[f"{role}_valid"].index_select(0, rows)
            out[f"{role}_missing"] = self.tensors[f"{role}_missing"].index_select(0, rows)
        for role in drop:
            out[f"{role}_missing"] = torch.ones_like(out[f"{role}_missing"])
        return out

    def batches(self, groups: list[Tensor], epoch: int | None = None,
                drop: tuple[str, ...] = ()) -> Iterator[dict[str, Tensor]]:
        """The batches of `groups` in order; `epoch`: which training pass (None when
        predicting). What the trainer iterates: end-to-end inputs read theirs in a
        DataLoader's workers (`taemi.endtoend.EndToEndInputs`)."""
        for index in groups:
            yield self.batch(index, drop)

    def prediction_order(self, index: np.ndarray) -> np.ndarray:
        """The positions of `index` in the order to predict them (end-to-end inputs group
        like lengths); here, as given."""
        return np.arange(len(index))

    def close(self) -> None:
        """Release what reading batches holds (here: nothing)."""


class EMA:
    """Exponential moving average of a model's weights, with the usual early warm-up."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


@torch.no_grad()
def predict(model: nn.Module, inputs: ClipInputs, index: np.ndarray, batch_size: int = 512,
            drop: tuple[str, ...] = ()) -> np.ndarray:
    """Predictions (N, 6) for rows `index`, in that order; `drop` removes modalities."""
    model.eval()
    if not len(index):
        return np.zeros((0, len(TARGETS)))
    index = np.asarray(index)
    order = inputs.prediction_order(index)
    index_t = torch.as_tensor(index[order], dtype=torch.long)
    groups = [index_t[start:start + batch_size] for start in range(0, len(index_t), batch_size)]
    out = [model(batch).float().cpu() for batch in inputs.batches(groups, drop=drop)]
    pred = np.empty((len(index), len(TARGETS)))
    pred[order] = torch.cat(out).numpy().astype(np.float64)  # back in the order asked for
    return pred


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    return factor


@dataclass
class FoldOutcome:
    best_epoch: int
    best_score: float
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)


LOW_SPACE = 64 << 20  # bytes: below this free, a failed write is taken for a full disk


def save_weights(obj: object, path: Path) -> None:
    """`torch.save`, atomically. A failed write is an OSError naming `path` (ENOSPC when
    the disk is all but full): torch reports a full disk as a RuntimeError of its zip
    writer, which would end the run in a traceback."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            if "write" not in str(err).lower() and "inline_container" not in str(err):
                raise
            code = errno.ENOSPC if shutil.disk_usage(path.parent).free < LOW_SPACE \
                else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from err


def keep_snapshot(judge: nn.Module, folder: Path, state: dict, epoch: int, score: float,
                  k: int) -> None:
    """Keep this epoch's weights if they are among the `k` best so far (`state["kept"]`,
    [score, epoch] pairs, saved with the rest of the state so a resumed run agrees)."""
    kept = sorted([*state["kept"], [score, epoch]], key=lambda pair: (-pair[0], -pair[1]))
    if [score, epoch] in kept[:k]:
        folder.mkdir(exist_ok=True)
        save_weights(judge.state_dict(), folder / f"epoch{epoch}.pt")
    for _, dropped in kept[k:]:
        (folder / f"epoch{dropped}.pt").unlink(missing_ok=True)
    state["kept"] = kept[:k]


def average_snapshots(folder: Path, kept: list, device: torch.device) -> dict[str, Tensor]:
    """The mean of the kept epochs' weights (integer buffers from the best of them)."""
    states = [torch.load(folder / f"epoch{epoch}.pt", map_location=device, weights_only=True)
              for _, epoch in kept]
    return {name: torch.stack([s[name] for s in states]).mean(dim=0)
            if value.is_floating_point() else value for name, value in states[0].items()}


@dataclass
class _Fit:
    """What one fold's training holds between epochs (`fit_fold`)."""

    model: nn.Module
    forward: nn.Module  # `model`, compiled on request; weights are saved from `model`
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    loss_fn: MixedLoss
    device: torch.device
    steps_per_epoch: int

    @property
    def judge(self) -> nn.Module:
        """The weights that are scored and kept: the EMA's, where there is one."""
        return self.ema.model if self.ema is not None else self.model


def _start(model: nn.Module, inputs: ClipInputs, n_train: int, cfg: TrainConfig) -> _Fit:
    """Model and inputs on the device; the optimiser, schedule, EMA and loss."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    model.to(device)
    inputs.to(device)
    if cfg.loss.get("gate") and not has_gate_head(model):
        raise ConfigError("config key 'train.loss.gate': the model has no gate x intensity "
                          "head to teach (give the model head: gate, or drop the gate loss)")
    # a model may give its own parameter groups (layer-wise rates: `taemi.endtoend`)
    params = model.param_groups(cfg.lr) if hasattr(model, "param_groups") else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch))
    return _Fit(model, torch.compile(model) if cfg.compile else model, optimizer, scheduler,
                EMA(model, cfg.ema) if cfg.ema else None, MixedLoss(cfg.loss), device,
                steps_per_epoch)


def _resume(fit: _Fit, last: Path, fingerprint: str) -> dict | None:
    """The loop's state from `last.pt` when it belongs to this run (its fingerprint), with
    the weights, optimiser, schedule, EMA and random state put back; else None."""
    if not last.is_file():
        return None
    saved = torch.load(last, map_location=fit.device, weights_only=True)
    if saved.get("fingerprint") != fingerprint:
        return None
    fit.model.load_state_dict(saved["model"])
    fit.optimizer.load_state_dict(saved["optimizer"])
    fit.scheduler.load_state_dict(saved["scheduler"])
    if fit.ema is not None:
        fit.ema.model.load_state_dict(saved["ema"])
        fit.ema.updates = saved["ema_updates"]
    torch.set_rng_state(saved["rng"])
    if fit.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"])
    if saved.get("numpy_rng") is not None:
        _set_host_rng(saved["numpy_rng"], saved["python_rng"])
    return {"kept": [], **saved["state"]}


def _host_rng() -> tuple[dict, list]:
    """numpy's and Python's global random states, in types `torch.load(weights_only=True)`
    reads back (wav2vec2's time masking draws from numpy's, so a resumed end-to-end fold
    needs it to end with the same weights)."""
    state = np.random.get_state(legacy=False)
    mt = {"key": torch.from_numpy(state["state"]["key"].astype(np.int64)),
          "pos": int(state["state"]["pos"]), "has_gauss": int(state["has_gauss"]),
          "gauss": float(state["gauss"])}
    version, words, gauss = random.getstate()
    return mt, [version, list(words), gauss]


def _set_host_rng(mt: dict, python: list) -> None:
    np.random.set_state({"bit_generator": "MT19937", "state": {
        "key": mt["key"].numpy().astype(np.uint32), "pos": mt["pos"]},
        "has_gauss": mt["has_gauss"], "gauss": mt["gauss"]})
    random.setstate((python[0], tuple(python[1]), python[2]))


def _save_state(fit: _Fit, last: Path, fingerprint: str, state: dict) -> None:
    save_weights({
        "fingerprint": fingerprint, "state": state, "model": fit.model.state_dict(),
        "optimizer": fit.optimizer.state_dict(), "scheduler": fit.scheduler.state_dict(),
        "ema": fit.ema.model.state_dict() if fit.ema is not None else None,
        "ema_updates": fit.ema.updates if fit.ema is not None else 0,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if fit.device.type == "cuda" else None,
        **dict(zip(("numpy_rng", "python_rng"), _host_rng(), strict=True)),
    }, last)


def _train_epoch(fit: _Fit, inputs: ClipInputs, train_t: Tensor, y_train_t: Tensor,
                 cfg: TrainConfig, seed: int, epoch: int, desc: str) -> tuple[float, int]:
    """One pass over the training rows in an order seeded by (seed, epoch): the summed
    loss and the rows seen."""
    fit.model.train()
    if hasattr(fit.model, "start_epoch"):  # e.g. encoders frozen for the first epochs
        fit.model.start_epoch(epoch)
    order = torch.randperm(len(train_t), generator=torch.Generator().manual_seed(
        seed * 100_003 + epoch))
    autocast = torch.autocast(fit.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    total, seen = 0.0, 0
    steps = [order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
             for step in range(fit.steps_per_epoch)]
    batches = inputs.batches([train_t[rows] for rows in steps], epoch=epoch)
    bar = progress(zip(steps, batches, strict=True), total=len(steps),
                   desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False, unit="batch")
    for step, (rows, batch) in enumerate(bar):
        with autocast:
            pred = fit.forward(batch)
        if step == 0:  # a model breaking the batch contract stops here, in one line
            check_output(fit.model, pred, len(rows))
        loss = fit.loss_fn(pred, y_train_t[rows.to(fit.device)], take_gate_logits(fit.model))
        fit.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(fit.model.parameters(), cfg.grad_clip)
        fit.optimizer.step()
        fit.scheduler.step()
        if fit.ema is not None:
            fit.ema.update(fit.model)
        total += loss.detach().item() * len(rows)
        seen += len(rows)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    if not math.isfinite(total):
        raise TrainingDiverged(f"{desc}: the training loss is no longer finite at epoch "
                               f"{epoch + 1} (lower train.lr, or check the features for "
                               "extreme values)")
    return total, seen


def _judge_epoch(fit: _Fit, inputs: ClipInputs, val_index: np.ndarray, y_val: np.ndarray,
                 cfg: TrainConfig, epoch: int, desc: str) -> tuple[dict, float]:
    """The selection rows' per-target Pearson and loss (NaN where there are none)."""
    if not len(val_index):  # no selection rows: every epoch runs, the last one is kept
        return {"mean": math.nan, **{t: math.nan for t in TARGETS}}, math.nan
    val_pred = predict(fit.judge, inputs, val_index, cfg.eval_batch_size)
    if not np.isfinite(val_pred).all():
        raise TrainingDiverged(f"{desc}: predictions are no longer finite at epoch "
                               f"{epoch + 1} (lower train.lr, or check the features "
                               "for extreme values)")
    val_loss = float(fit.loss_fn(torch.from_numpy(val_pred), torch.from_numpy(y_val)))
    return score_table(y_val, val_pred), val_loss


def fit_fold(
    model: nn.Module,
    inputs: ClipInputs,
    train_index: np.ndarray,
    y_train: np.ndarray,
    val_index: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    workdir: str | os.PathLike,
    fingerprint: str = "",
    on_epoch: EpochCallback | None = None,
    desc: str = "train",
) -> FoldOutcome:
    """Train `model` on `train_index`; the chosen weights end in `workdir/model.pt` and in
    `model`.

    `val_index` are the selection rows: the epoch with the best mean Pearson on them is
    kept and training stops after `cfg.patience` epochs without a better one. They must
    not be rows the model is then scored on (`taemi.folds.selection_split`). With no
    selection rows every epoch runs and the last weights are kept. With `cfg.average` k > 1
    the kept weights are the mean of the k best epochs' (the last k without selection rows).
    `on_epoch(epoch, val_mean_pearson)` is called after every epoch (Optuna's pruner
    raises from it). State is saved after every epoch to `workdir/last.pt`; a `last.pt`
    with the same `fingerprint` is resumed, anything else starts afresh. A loss or score
    that is no longer finite stops the run with `TrainingDiverged`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    fit = _start(model, inputs, len(train_index), cfg)
    y_train_t = torch.as_tensor(y_train, dtype=torch.float32, device=fit.device)
    train_t = torch.as_tensor(train_index, dtype=torch.long)
    last = workdir / "last.pt"
    state = _resume(fit, last, fingerprint) or {
        "epoch": 0, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0,
        "history": [], "seconds": 0.0, "kept": []}

    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        started = time.perf_counter()
        total, seen = _train_epoch(fit, inputs, train_t, y_train_t, cfg, seed, epoch, desc)
        scores, val_loss = _judge_epoch(fit, inputs, val_index, y_val, cfg, epoch, desc)
        state["seconds"] += time.perf_counter() - started
        state["history"].append({
            "epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss,
            "val_mean_pearson": scores["mean"], **{f"val_{t}": scores[t] for t in TARGETS},
            "lr": fit.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started})
        if not len(val_index) or scores["mean"] > state["best_score"] + cfg.min_delta:
            state.update(best_score=scores["mean"], best_epoch=epoch + 1, bad_epochs=0)
            save_weights(fit.judge.state_dict(), workdir / "model.pt")
        else:
            state["bad_epochs"] += 1
        if cfg.average > 1:
            keep_snapshot(fit.judge, workdir / SNAPSHOTS, state, epoch + 1,
                          scores["mean"] if len(val_index) else float(epoch), cfg.average)
        state["epoch"] = epoch + 1
        write_csv(workdir / "metrics.csv", pd.DataFrame(state["history"]))
        _save_state(fit, last, fingerprint, state)
        if on_epoch is not None:
            on_epoch(epoch, scores["mean"])

    if cfg.average > 1:
        save_weights(average_snapshots(workdir / SNAPSHOTS, state["kept"], fit.device),
                     workdir / "model.pt")
    model.load_state_dict(torch.load(workdir / "model.pt", map_location=fit.device,
                                     weights_only=True))
    return FoldOutcome(best_epoch=state["best_epoch"], best_score=state["best_score"],
                       epochs_run=state["epoch"], seconds=state["seconds"],
                       history=state["history"])
