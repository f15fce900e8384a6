"""Audio features: wav2vec2-family hidden states and log-mel spectrograms (`taemi extract audio`).

    taemi extract audio --root DATA --model facebook/wav2vec2-base          # -> wav2vec2-base/
    taemi extract audio --root DATA --logmel                               # -> logmel/
    taemi extract audio --root DATA --model ./w2v --out w2v --logmel       # both, one decode

Each clip is decoded once (PyAV, 16 kHz mono; `audio/{id}.mp3`, else the video's own
track) and feeds every requested output.

wav2vec2 (any `transformers` audio encoder with a feature extractor, by Hub name or local
folder): the hidden states of one layer (`--layer`, default the last), about 50 steps/s.
A clip runs whole up to `--chunk-seconds` (default 30 s); a longer one is cut into chunks
of that length whose outputs are concatenated, the equal-length chunks going through the
model `--batch-size` at a time, so a 20-minute clip costs no more memory than 30 s.
Short clips are not padded into batches together: zero padding changes the features of
wav2vec2-base-style models (group-normalised convolutions, no attention mask).

log-mel (no weights): 25 ms Hann windows every 10 ms (100 steps/s), 512-point FFT, 64
HTK-mel bands from 0 to 8 kHz, power, natural log of (mel + 1e-6); frames are centred
(zero padding at both ends), so a clip of n samples has 1 + n // 160 steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taemi.extract.common import (
    ExtractError,
    FailureLog,
    Summary,
    autocast,
    default_feature_name,
    feature_path,
    find_media,
    load_model,
    pending,
    prefetch,
    quiet_model_loading,
    resolve_device,
    resolve_model,
    select,
    write_feature,
)
from taemi.extract.media import SAMPLE_RATE, MediaError, decoded_audio
from taemi.progress import progress

LOGMEL = "logmel"
MIN_SAMPLES = 400  # one wav2vec2 receptive field (25 ms): shorter audio is zero-padded


# ----------------------------------------------------------------------------- log-mel


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = 64, n_fft: int = 512, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_fft // 2 + 1, n_mels), peaks of height 1."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)),
                                   n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


@dataclass(frozen=True)
class LogMel:
    """Log-mel settings; `__call__` maps a 16 kHz waveform to (T, n_mels) float32."""

    n_mels: int = 64
    win: int = 400  # 25 ms
    hop: int = 160  # 10 ms
    n_fft: int = 512
    chunk_frames: int = 6000  # a minute per STFT call: long clips stay small in memory

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        bank = torch.from_numpy(mel_filterbank(self.n_mels, self.n_fft))
        window = torch.hann_window(self.win)
        half = self.n_fft // 2
        padded = torch.nn.functional.pad(torch.from_numpy(wave).float(), (half, half))
        frames = 1 + len(wave) // self.hop
        out = []
        for first in range(0, frames, self.chunk_frames):
            last = min(frames, first + self.chunk_frames)
            piece = padded[first * self.hop:(last - 1) * self.hop + self.n_fft]
            spec = torch.stft(piece, self.n_fft, hop_length=self.hop, win_length=self.win,
                              window=window, center=False, return_complex=True)
            power = spec.abs().square()  # (freq, frames)
            out.append(torch.log(power.T @ bank + 1e-6))
        return torch.cat(out).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- wav2vec2


def emotion_model_class():
    """wav2vec2 with the audeering regression head (`classifier.dense`, `classifier.out_proj`:
    the emotion-finetuned checkpoints the TAEMI authors use); it returns the hidden states
    and the per-step scores. Built on call: transformers is imported only when needed."""
    from transformers import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    class RegressionHead(torch.nn.Module):
        def __init__(self, config) -> None:
            super().__init__()
            self.dense = torch.nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = torch.nn.Dropout(config.final_dropout)
            self.out_proj = torch.nn.Linear(config.hidden_size, config.num_labels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))

    class EmotionWav2Vec2(Wav2Vec2PreTrainedModel):
        def __init__(self, config) -> None:
            super().__init__(config)
            self.wav2vec2 = Wav2Vec2Model(config)
            self.classifier = RegressionHead(config)
            self.post_init()

        def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
            hidden = self.wav2vec2(input_values, attention_mask=attention_mask)[0]
            return hidden, self.classifier(hidden)

    return EmotionWav2Vec2


@dataclass
class AudioEncoder:
    """A transformers audio model, its feature extractor, and how to run it."""

    name: str
    model: torch.nn.Module
    extractor: object
    device: str
    layer: int
    chunk: int  # samples per chunk
    batch_size: int
    emotion: bool = False  # the model is `emotion_model_class`: hidden states + scores

    @torch.inference_mode()
    def _run(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        inputs = self.extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with autocast(self.device):
            if self.emotion:
                hidden = torch.cat(self.model(**inputs), dim=-1)
            elif self.layer == -1:
                hidden = self.model(**inputs).last_hidden_state
            else:
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[
                    self.layer]
        return list(hidden.float().cpu().numpy())

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """(T, D) for one clip, chunked when longer than `chunk` samples."""
        if len(wave) < MIN_SAMPLES:
            wave = np.pad(wave, (0, MIN_SAMPLES - len(wave)))
        if len(wave) <= self.chunk:
            return self._run([wave])[0]
        full = len(wave) // self.chunk
        if len(wave) - full * self.chunk < SAMPLE_RATE:  # a tail under 1 s joins the last chunk
            full -= 1
        pieces = [wave[i * self.chunk:(i + 1) * self.chunk] for i in range(full)]
        outputs: list[np.ndarray] = []
        for start in range(0, full, self.batch_size):
            outputs += self._run(pieces[start:start + self.batch_size])
        outputs += self._run([wave[full * self.chunk:]])
        return np.concatenate(outputs)


def load_encoder(spec: str, device: str = "auto", layer: int = -1, chunk_seconds: float = 30.0,
                 batch_size: int = 4, emotion_scores: bool = False) -> AudioEncoder:
    """Load a wav2vec2-family model and its feature extractor (local path or Hub name);
    `emotion_scores`: the model's emotion regression head outputs follow each step's
    last hidden state (1024 + 3 for the audeering wav2vec2-large checkpoints)."""
    from transformers import AutoFeatureExtractor, AutoModel

    device = resolve_device(device)
    quiet_model_loading()
    ref = resolve_model(spec, "audio model")
    if emotion_scores and layer != -1:
        raise ExtractError("--emotion-scores reads the last hidden state: leave --layer at -1")
    cls = emotion_model_class() if emotion_scores else AutoModel
    model, info = load_model(ref, "audio model", lambda: cls.from_pretrained(
        ref.location, local_files_only=ref.local_files_only, output_loading_info=True))
    head = [k for k in info["missing_keys"] if k.startswith("classifier.")]
    if emotion_scores and head:
        raise ExtractError(f"--emotion-scores: {spec} has no emotion regression head "
                           f"({', '.join(head)} missing)")
    extractor = load_model(ref, "audio feature extractor", lambda: AutoFeatureExtractor
                           .from_pretrained(ref.location, local_files_only=ref.local_files_only))
    layers = int(getattr(model.config, "num_hidden_layers", 0))
    if layer != -1 and not 0 <= layer <= layers:
        raise ExtractError(f"--layer {layer}: {spec} has hidden states 0..{layers} (-1: last)")
    if chunk_seconds < 1:
        raise ExtractError(f"--chunk-seconds must be at least 1, got {chunk_seconds}")
    model.eval().to(device)
    return AudioEncoder(spec, model, extractor, device, layer,
                        int(chunk_seconds * SAMPLE_RATE), max(1, batch_size), emotion_scores)


# ----------------------------------------------------------------------------- the run


def extract_audio(root: str | os.PathLike, model: str | None = None, out: str | None = None,
                  logmel: bool = False, logmel_out: str = LOGMEL, layer: int = -1,
                  chunk_seconds: float = 30.0, batch_size: int = 4, device: str = "auto",
                  ids: list[str] | None = None, force: bool = False,
                  emotion_scores: bool = False) -> list[Summary]:
    """Write wav2vec2 and/or log-mel features for every clip; one summary per output."""
    if not model and not logmel:
        raise ExtractError("nothing to extract: give --model (a wav2vec2-family model) "
                           "and/or --logmel")
    model_out = (out or default_feature_name(model)) if model else None
    names = [n for n in (model_out, logmel_out if logmel else None) if n]
    if len(set(names)) < len(names):
        raise ExtractError(f"--out and --logmel-out are both {logmel_out!r}: give two folders")
    root = Path(root)
    clips = select(find_media(root, "audio"), ids, "audio or video file")
    folders = {name: root / name for name in names}
    summaries = {name: Summary(f"audio {model if name == model_out else LOGMEL}",
                               folders[name], clips=len(clips)) for name in names}
    todo = pending(clips, folders.values(), force)
    for name in names:
        summaries[name].skipped = len(clips) - len(todo)
    if not todo:
        return list(summaries.values())
    outputs: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if model_out:
        started = time.perf_counter()
        outputs[model_out] = load_encoder(model, device, layer, chunk_seconds, batch_size,
                                          emotion_scores)
        summaries[model_out].load_seconds = time.perf_counter() - started
    if logmel:
        outputs[logmel_out] = LogMel()
    logs = {}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        logs[name] = FailureLog(folder / "_failures.csv")
    started = time.perf_counter()
    try:
        with progress(total=len(todo), desc="audio", unit="clip") as bar:
            for clip, wave in prefetch(decoded_audio({c: clips[c] for c in todo}), depth=4):
                for name, fn in outputs.items():
                    summary = summaries[name]
                    if not force and feature_path(folders[name], clip).is_file():
                        summary.skipped += 1  # the other output was the one missing
                    elif isinstance(wave, MediaError):
                        summary.fail(clip, str(wave), logs[name])
                    else:
                        write_feature(folders[name], clip, fn(wave))
                        logs[name].clear(clip)
                        summary.written += 1
                bar.update()
    finally:
        elapsed = time.perf_counter() - started
        for name in outputs:
            summaries[name].seconds = elapsed
            logs[name].save()
    return list(summaries.values())
