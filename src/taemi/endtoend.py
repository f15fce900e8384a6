"""End-to-end training: the audio and text encoders learn with the fusion model.

An experiment with an `endtoend` section trains, in place of the packed features of
audio and text, a wav2vec2-family audio encoder reading raw 16 kHz audio (PyAV, as
`taemi extract audio` decodes it) and a transformers text encoder reading the
transcripts; the visual role (and any role without an encoder) still comes from the
backbone's packs. Both encoders and the fusion model (any registered model) are one
`nn.Module`, trained by the kit's fold trainer through the same grid (folds, seeds, OOF
and test predictions, resume), so the results stack with everything else:

    experiments:
      e2e-paper:
        model: {name: taemi_paper}
        backbones: [vit-raw]     # backbones: {vit-raw: {text: null, visual: vit, audio: null}}
        endtoend: {audio_model: ./wav2vec2-large-robust-12-ft-emotion-msp-dim,
                   text_model: ./gte-base, emotion_scores: true}

Why it is built this way:
- Training crops each clip to `max_seconds` (a random window, or the first seconds as the
  TAEMI authors do); prediction reads up to `max_chunks` windows of that length, runs them
  through the encoder as one batch and joins their steps, so a long clip is heard whole
  without one long attention span.
- The encoders' hidden states are pooled to the role's `cache.steps` by the packed
  cache's own rule (`pool_steps`), so the fusion model sees the same shapes as from
  features; a step count at least as long as the clip keeps every step.
- Layer-wise learning rates: the encoders' top layer learns at `encoder_lr`, each layer
  below at `layer_decay` times the one above; the fusion model at `train.lr`. Encoders
  can stay frozen for the first `freeze_epochs` epochs (the fusion model settles first);
  wav2vec2's convolutional front end stays frozen throughout by default.
- `emotion_scores` reads an emotion-finetuned wav2vec2 with a regression head (the
  audeering checkpoints: `classifier.dense`, `classifier.out_proj`) and appends its
  per-step scores to the hidden states (1024 + 3 = 1027 wide for wav2vec2-large), as the
  TAEMI authors do.
- Gradient checkpointing (`gradient_checkpointing`) and bf16 autocast (`train.bf16`) are
  what make a large encoder fit a GPU; both also run on the CPU, where the tests use tiny
  models built from a config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from taemi.artifacts import stable_hash
from taemi.config import ConfigError, EndToEndConfig, ModelSpec
from taemi.data import ChallengeData
from taemi.extract.audio import emotion_model_class
from taemi.extract.common import find_media, load_model, quiet_model_loading, resolve_model
from taemi.extract.media import SAMPLE_RATE
from taemi.identity import digest_files, folder_digest
from taemi.models import create_model
from taemi.training import ClipInputs
from taemi.waves import SCALE, WAVES_VERSION, WaveCache, ensure_waves, samples_kept

ENCODED = ("audio", "text")
MIN_SAMPLES = 400  # one wav2vec2 receptive field (25 ms)


# ----------------------------------------------------------------------------- pooling


def pool_steps(h: Tensor, valid: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """(B, T, D) with (B, T) valid -> (B, K, D) and its valid mask, by the rule of
    `taemi.cache.pool_steps` (differentiable): a clip of n >= K valid steps is averaged
    in K adaptive bins, a shorter one keeps its n steps and the rest is padding. Valid
    steps come first in every clip (padding only at the end)."""
    t = h.shape[1]
    n = valid.sum(dim=1)  # (B,)
    i = torch.arange(steps, device=h.device)
    k = torch.tensor(steps, device=h.device)
    start = (i[None] * n[:, None]) // k
    end = ((i[None] + 1) * n[:, None] + k - 1) // k
    pos = torch.arange(t, device=h.device)
    bins = (pos[None, None] >= start[..., None]) & (pos[None, None] < end[..., None])
    short = n < steps  # keep the steps themselves: step j in slot j
    bins = torch.where(short[:, None, None], pos[None, None] == i[None, :, None], bins)
    bins = bins & valid[:, None, :]
    weight = bins.to(h.dtype)
    counts = weight.sum(dim=-1)
    pooled = weight @ h / counts.clamp(min=1)[..., None]
    return pooled, counts > 0


# ----------------------------------------------------------------------------- encoders


def pretrained(spec: str, what: str, cls, **kwargs):
    """`cls.from_pretrained` on a local folder or Hub name; failures say what to do."""
    quiet_model_loading()
    ref = resolve_model(spec, what)
    return load_model(ref, what, lambda: cls.from_pretrained(
        ref.location, local_files_only=ref.local_files_only, **kwargs))


class AudioEncoder(nn.Module):
    """A wav2vec2-family model over raw 16 kHz audio: crops in training, chunks otherwise."""

    def __init__(self, settings: EndToEndConfig) -> None:
        super().__init__()
        from transformers import AutoFeatureExtractor, AutoModel

        spec = settings.audio_model
        extractor = pretrained(spec, "audio feature extractor", AutoFeatureExtractor)
        self.normalize = bool(getattr(extractor, "do_normalize", True))
        self.use_mask = bool(getattr(extractor, "return_attention_mask", False))
        self.emotion = settings.emotion_scores
        if self.emotion:
            model, info = pretrained(spec, "audio model", emotion_model_class(),
                                     output_loading_info=True)
            absent = [k for k in info["missing_keys"] if k.startswith("classifier.")]
            if absent:
                raise ConfigError(f"endtoend.emotion_scores: {settings.audio_model} has no "
                                  f"emotion regression head ({', '.join(absent)} missing)")
            self.model, backbone = model, model.wav2vec2
        else:
            self.model = backbone = pretrained(spec, "audio model", AutoModel)
        self.backbone = backbone
        self.width = int(backbone.config.hidden_size) + (
            int(self.model.config.num_labels) if self.emotion else 0)
        self.layers = int(backbone.config.num_hidden_layers)
        self.chunk = int(settings.max_seconds * SAMPLE_RATE)
        self.freeze_front = settings.freeze_feature_encoder
        if settings.gradient_checkpointing:
            checkpointing(self.model)

    def trainable(self, on: bool) -> None:
        self.model.requires_grad_(on)
        if self.freeze_front and hasattr(self.backbone, "feature_extractor"):
            self.backbone.feature_extractor.requires_grad_(False)

    def _pieces(self, wave: Tensor, samples: Tensor) -> tuple[list[Tensor], list[int]]:
        """Each clip's windows: one crop in training, consecutive chunks otherwise."""
        pieces, owners = [], []
        for b, n in enumerate(samples.tolist()):
            n = max(int(n), 1)
            if self.training:  # the loader cropped it already (`ClipMedia`): at most a crop
                spans = [(0, min(n, self.chunk))]
            else:
                spans = [(s, min(n, s + self.chunk)) for s in range(0, n, self.chunk)]
                if len(spans) > 1 and spans[-1][1] - spans[-1][0] < SAMPLE_RATE:
                    spans[-2:] = [(spans[-2][0], n)]  # a tail under 1 s joins the last chunk
            for s, e in spans:
                piece = wave[b, s:e]
                if len(piece) < MIN_SAMPLES:
                    piece = nn.functional.pad(piece, (0, MIN_SAMPLES - len(piece)))
                pieces.append(piece)
                owners.append(b)
        return pieces, owners

    def forward(self, wave: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) waveforms with (B,) sample counts -> (B, T, width) and (B, T) valid.
        int16 waveforms (the waveform cache's, moved as stored) become floats here."""
        if wave.dtype == torch.int16:
            wave = wave.float() / SCALE
        pieces, owners = self._pieces(wave, samples)
        lengths = torch.tensor([len(p) for p in pieces], device=wave.device)
        batch = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        mask = torch.arange(batch.shape[1], device=wave.device)[None] < lengths[:, None]
        if self.normalize:  # zero mean, unit variance over each window's own samples
            m = mask.to(batch.dtype)
            mean = (batch * m).sum(1, keepdim=True) / lengths[:, None]
            var = (((batch - mean) * m) ** 2).sum(1, keepdim=True) / lengths[:, None]
            batch = (batch - mean) / torch.sqrt(var + 1e-7) * m
        kwargs = {"attention_mask": mask.long()} if self.use_mask else {}
        out = self.model(batch, **kwargs)
        hidden = torch.cat([out[0], out[1]], dim=-1) if self.emotion else out.last_hidden_state
        steps = self.backbone._get_feat_extract_output_lengths(lengths).clamp(max=hidden.shape[1])
        per_clip: list[list[Tensor]] = [[] for _ in range(wave.shape[0])]
        for row, owner in enumerate(owners):
            per_clip[owner].append(hidden[row, :int(steps[row])])
        joined = [torch.cat(parts) for parts in per_clip]
        valid = torch.zeros(len(joined), max(len(j) for j in joined), dtype=torch.bool,
                            device=wave.device)
        for b, j in enumerate(joined):
            valid[b, :len(j)] = True
        return nn.utils.rnn.pad_sequence(joined, batch_first=True), valid


class TextEncoder(nn.Module):
    """A transformers text encoder over tokenised transcripts; every token state is a step."""

    def __init__(self, settings: EndToEndConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = pretrained(settings.text_model, "text tokenizer", AutoTokenizer)
        self.model = pretrained(settings.text_model, "text model", AutoModel)
        self.width = int(self.model.config.hidden_size)
        self.layers = int(self.model.config.num_hidden_layers)
        self.max_tokens = settings.max_tokens
        if settings.gradient_checkpointing:
            checkpointing(self.model)

    def trainable(self, on: bool) -> None:
        self.model.requires_grad_(on)

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's token ids (special tokens included, at most `max_tokens`)."""
        out = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)
        return [np.asarray(ids, np.int64) for ids in out["input_ids"]]

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state, mask


def checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass (transformers' own switch)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or \
        model.gradient_checkpointing_enable
    enable()


def layer_depth(name: str, layers: int) -> int:
    """0 for the embeddings / front end, i + 1 for transformer layer i, layers + 1 above."""
    match = re.search(r"\.layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if re.search(r"embed|feature_|masked_spec", name):
        return 0
    return layers + 1


class EndToEnd(nn.Module):
    """Encoders for the audio and/or text roles, then any registered fusion model."""

    def __init__(self, settings: EndToEndConfig, spec: ModelSpec, pack_dims: dict[str, int],
                 steps: dict[str, int]) -> None:
        super().__init__()
        self.settings, self.steps = settings, dict(steps)
        self.encoders = nn.ModuleDict()
        if settings.audio_model:
            self.encoders["audio"] = AudioEncoder(settings)
        if settings.text_model:
            self.encoders["text"] = TextEncoder(settings)
        dims = {**pack_dims, **{r: e.width for r, e in self.encoders.items()}}
        self.fusion = create_model(spec.name, dims=dims, **spec.params())

    def param_groups(self, lr: float) -> list[dict]:
        """The fusion model at `lr`; encoder layers at `encoder_lr` x decay ** depth."""
        groups = [{"params": list(self.fusion.parameters()), "lr": lr}]
        s = self.settings
        for encoder in self.encoders.values():
            by_depth: dict[int, list] = {}
            for name, p in encoder.named_parameters():
                by_depth.setdefault(layer_depth(name, encoder.layers), []).append(p)
            for depth, params in sorted(by_depth.items()):
                groups.append({"params": params,
                               "lr": s.encoder_lr * s.layer_decay ** (encoder.layers + 1 - depth)})
        return groups

    def start_epoch(self, epoch: int) -> None:
        """Encoders learn from epoch `freeze_epochs` on (0-based)."""
        for encoder in self.encoders.values():
            encoder.trainable(epoch >= self.settings.freeze_epochs)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        batch = dict(batch)
        if "audio" in self.encoders:
            h, valid = self.encoders["audio"](batch.pop("audio_wave"), batch.pop("audio_samples"))
            batch["audio"], batch["audio_valid"] = pool_steps(h, valid, self.steps["audio"])
        if "text" in self.encoders:
            h, valid = self.encoders["text"](batch.pop("text_ids"), batch.pop("text_mask"))
            batch["text"], batch["text_valid"] = pool_steps(h, valid, self.steps["text"])
        return self.fusion(batch)


# ----------------------------------------------------------------------------- inputs


class ClipMedia(torch.utils.data.Dataset):
    """What the encoders read of each clip, by input row: its waveform from the cache (a
    training crop, or every chunk prediction reads) and its transcript's token ids.

    An item is (epoch, row): epoch >= 0 asks for a training crop, drawn from a generator
    seeded by (seed, epoch, row), so a crop is the same whichever worker reads it and
    after a resume; epoch -1 asks for the first `max_samples`."""

    def __init__(self, waves: WaveCache | None, rows: np.ndarray, tokens: list[np.ndarray],
                 crop: int, random_crop: bool, seed: int = 0) -> None:
        self.waves, self.rows, self.tokens = waves, rows, tokens
        self.crop, self.random_crop, self.seed = crop, random_crop, seed

    def __len__(self) -> int:
        return len(self.rows)

    def crop_start(self, epoch: int, row: int, length: int) -> int:
        if not self.random_crop or length <= self.crop:
            return 0
        rng = np.random.default_rng([self.seed, epoch, row])
        return int(rng.integers(0, length - self.crop + 1))

    def __getitem__(self, item: tuple[int, int]) -> tuple[int, np.ndarray | None,
                                                           np.ndarray | None]:
        epoch, row = item
        wave = None
        if self.waves is not None:  # no samples (length 0): the clip's audio is missing
            at = int(self.rows[row])
            length = int(self.waves.lengths[at]) if at >= 0 else 0
            if not length:
                wave = np.zeros(0, np.int16)
            elif epoch >= 0:
                wave = self.waves.read_int16(at, self.crop_start(epoch, row, length),
                                             self.crop)
            else:
                wave = self.waves.read_int16(at)
        return row, wave, self.tokens[row] if self.tokens else None


def collate_media(items: list, pad_id: int = 0) -> dict[str, Tensor]:
    """A batch of `ClipMedia` items: waveforms padded, with their sample counts and
    missing flags; token ids padded, with their mask."""
    out = {"row": torch.tensor([row for row, _, _ in items])}
    waves = [w for _, w, _ in items]
    if waves and waves[0] is not None:
        filled = [w if len(w) else np.zeros(MIN_SAMPLES, w.dtype) for w in waves]
        out["audio_samples"] = torch.tensor([len(w) for w in filled])
        out["audio_wave"] = nn.utils.rnn.pad_sequence(
            [torch.from_numpy(np.ascontiguousarray(w)) for w in filled], batch_first=True)
        out["audio_missing"] = torch.tensor([not len(w) for w in waves])
    tokens = [t for _, _, t in items]
    if tokens and tokens[0] is not None:
        ids = nn.utils.rnn.pad_sequence([torch.from_numpy(t) for t in tokens],
                                        batch_first=True, padding_value=pad_id)
        lengths = torch.tensor([len(t) for t in tokens])
        out["text_ids"] = ids
        out["text_mask"] = torch.arange(ids.shape[1])[None] < lengths[:, None]
    return out


class _Groups(torch.utils.data.Sampler):
    """The batches of the next pass, set before each (a persistent loader's sampler)."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)


class EndToEndInputs:
    """The packs' inputs (`ClipInputs`) plus what the encoders read, delivered by a
    DataLoader: worker processes read waveform crops from the waveform cache
    (`taemi.waves`), batches are prefetched and, on a GPU, pinned; transcripts are
    tokenised once per clip, here.

    A clip whose audio cannot be read, or that has no audio, has its audio missing (the
    fusion model's missing token), as `taemi extract audio` would leave it; an empty
    transcript has its text missing. Prediction batches are grouped by length
    (`prediction_order`), so short clips are not padded to a long one's length.
    """

    def __init__(self, packed: ClipInputs, data: ChallengeData, model: EndToEnd,
                 cache_dir: str | Path = "cache", seed: int = 0,
                 workers: int | None = None) -> None:
        self.packed, self.ids = packed, packed.ids
        self.device = torch.device("cpu")
        settings = model.settings
        max_samples = samples_kept(settings.max_seconds, settings.max_chunks)
        self.waves = ensure_waves(data, max_samples, cache_dir) \
            if "audio" in model.encoders else None
        rows = np.full(len(self.ids), -1, np.int64)
        if self.waves is not None:
            rows = np.array([self.waves.row_of.get(c, -1) for c in self.ids], np.int64)
        tokens, self.pad_id = [], 0
        self.text_missing = torch.zeros(len(self.ids), dtype=torch.bool)
        if "text" in model.encoders:
            encoder = model.encoders["text"]
            texts = [data.transcripts.get(c, "") for c in self.ids]
            tokens = encoder.token_ids(texts)
            self.pad_id = int(encoder.tokenizer.pad_token_id or 0)
            self.text_missing = torch.tensor([not t.strip() for t in texts])
        self.media = ClipMedia(self.waves, rows, tokens, int(settings.max_seconds * SAMPLE_RATE),
                               settings.random_crop, seed)
        if workers is None:
            workers = settings.loader_workers
        if workers is None:  # this process's share of the cores (a `workers:` process, a
            workers = min(4, max(0, torch.get_num_threads() - 1))  # Ray task), less one
        self.workers = workers
        self._loader: torch.utils.data.DataLoader | None = None

    @property
    def dims(self) -> dict[str, int]:
        return self.packed.dims

    def to(self, device: torch.device) -> EndToEndInputs:
        self.packed.to(device)
        self.device = torch.device(device)
        return self

    def _make_loader(self, sampler: _Groups, prefetch: int,
                     persistent: bool) -> torch.utils.data.DataLoader:
        extra = {"prefetch_factor": prefetch, "persistent_workers": persistent} \
            if self.workers else {}
        return torch.utils.data.DataLoader(
            self.media, batch_sampler=sampler, num_workers=self.workers,
            collate_fn=partial(collate_media, pad_id=self.pad_id),
            pin_memory=self.device.type == "cuda", generator=torch.Generator(), **extra)

    def batches(self, groups: list[Tensor], epoch: int | None = None,
                drop: tuple[str, ...] = ()) -> Iterator[dict[str, Tensor]]:
        """The batches of `groups` (input rows) in order: training crops of `epoch`, read
        by one loader whose workers persist from epoch to epoch and prefetch 4 batches
        each; or, with epoch None, what prediction reads (whole clips, up to
        `max_chunks`: one batch ahead a worker, so memory stays a few batches)."""
        sampler = _Groups()
        tag = -1 if epoch is None else epoch
        sampler.groups = [[(tag, int(r)) for r in group.tolist()] for group in groups]
        if epoch is None:
            loader = self._make_loader(sampler, 1, False)
        else:
            if self._loader is None:
                self._sampler = _Groups()
                self._loader = self._make_loader(self._sampler, 4, True)
            self._sampler.groups, loader = sampler.groups, self._loader
        for index, media in zip(groups, loader, strict=True):
            yield self._join(index, media, drop)

    def batch(self, index: Tensor, drop: tuple[str, ...] = ()) -> dict[str, Tensor]:
        """One prediction batch, read here (no workers)."""
        media = collate_media([self.media[(-1, int(r))] for r in index.tolist()], self.pad_id)
        return self._join(index, media, drop)

    def _join(self, index: Tensor, media: dict[str, Tensor],
              drop: tuple[str, ...]) -> dict[str, Tensor]:
        out = self.packed.batch(index, drop)
        media.pop("row")
        for name, value in media.items():
            out[name] = value.to(self.device, non_blocking=True)
        if "audio_missing" in out and "audio" in drop:
            out["audio_missing"] = torch.ones_like(out["audio_missing"])
        if "text_ids" in out:
            missing = self.text_missing[index.cpu()] | ("text" in drop)
            out["text_missing"] = missing.to(self.device)
        return out

    def prediction_order(self, index: np.ndarray) -> np.ndarray:
        """The positions of `index` by waveform length, longest first: batches of like
        lengths, padded little."""
        if self.waves is None:
            return np.arange(len(index))
        rows = self.media.rows[np.asarray(index)]
        lengths = np.where(rows >= 0, self.waves.lengths[np.maximum(rows, 0)], 0)
        return np.argsort(-lengths, kind="stable")

    def close(self) -> None:
        """End the loader's worker processes."""
        if self._loader is not None:
            iterator = getattr(self._loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
            self._loader = None


def check_backbone(experiment: str, backbone: str, features: dict[str, str],
                   settings: EndToEndConfig) -> None:
    """An encoded role must not also come from a pack: one source per role."""
    for role in ENCODED:
        if getattr(settings, f"{role}_model") and role in features:
            raise ConfigError(
                f"experiment {experiment!r} trains its {role} encoder end to end "
                f"(endtoend.{role}_model), but backbone {backbone!r} also feeds {role} from "
                f"the {features[role]!r} pack: give that backbone {role}: null")


def media_digest(data: ChallengeData, settings: EndToEndConfig,
                 cache_dir: str | Path = "cache") -> str:
    """What the raw inputs are, by content: the audio files, the transcripts, and each
    encoder given as a local folder (by its files; a Hub name by its name). File digests
    are quick-checked against manifests in the cache folder (`taemi.identity`)."""
    cache_dir = Path(cache_dir)
    media = {}
    if settings.audio_model:
        media = digest_files(find_media(data.root, "audio"), cache_dir / "digests-audio.json")
    encoders = {}
    for role, model in (("audio", settings.audio_model), ("text", settings.text_model)):
        if model and Path(model).is_dir():
            encoders[role] = folder_digest(Path(model),
                                           cache_dir / f"digests-{role}-encoder.json")
    texts = data.transcripts if settings.text_model else {}
    return stable_hash({"media": media, "texts": texts, "encoders": encoders,
                        "waves": WAVES_VERSION if settings.audio_model else None}, 16)
