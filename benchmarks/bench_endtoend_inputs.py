"""End-to-end inputs: clips per second the input pipeline delivers, cached against decoded.

Generates audio clips in the organisers' layout (AAC in mp4, `raw/`) whose lengths mix as
the real data's do: mostly a few seconds (log-normal, median 3 s, at most 30 s) and one of
about 20 minutes. Then, over one epoch in a shuffled order, batches of `--batch` clips
cropped to `--seconds`:

- decoded per batch: what the kit did before the waveform cache: each clip decoded whole
  with PyAV in the training process (`read_audio(path)[:max_samples]`), then cropped;
- cached: the kit's pipeline (`EndToEndInputs.batches`): crops read from the waveform
  cache by `--workers` DataLoader processes, prefetched.

Also the one-time cost of building the cache (per 1,000 clips), and with `--step` a
training step of a tiny random wav2vec2 with a fusion model: the share of the step's time
spent waiting for its inputs, before and after.

    python benchmarks/bench_endtoend_inputs.py --clips 1000 --step
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pandas as pd
import torch
from torch import nn

from taemi.config import EndToEndConfig, ModelSpec
from taemi.data import TARGETS, ChallengeData
from taemi.endtoend import EndToEnd, EndToEndInputs
from taemi.extract.common import find_media
from taemi.extract.media import SAMPLE_RATE, read_audio
from taemi.training import ClipInputs
from taemi.waves import ensure_waves, samples_kept

STEPS = {"text": 4, "visual": 4, "audio": 32}


def write_audio(path: Path, seconds: float, rng: np.random.Generator) -> None:
    """An mp4 holding one AAC track of noise-modulated tones, `seconds` long."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    wave = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) + 0.02 * rng.standard_normal(n)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for start in range(0, n, SAMPLE_RATE * 60):  # a minute per frame
            frame = av.AudioFrame.from_ndarray(
                wave[start:start + SAMPLE_RATE * 60].astype(np.float32).reshape(1, -1),
                format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_data(root: Path, clips: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(3.0), 0.6, clips), 0.5, 30.0)
    seconds[clips // 2] = 20 * 60.0  # the one long clip
    ids = [f"{i:05d}" for i in range(clips)]
    for clip, s in zip(ids, seconds, strict=True):
        write_audio(root / "raw" / f"{clip}.mp4", float(s), rng)
    labels = pd.DataFrame(rng.integers(0, 7, (clips, len(TARGETS))) / 6, columns=list(TARGETS))
    labels.insert(0, "Filename", ids)
    train, valid = int(clips * 0.8), int(clips * 0.9)  # and a tenth for the test list
    labels.iloc[:train].to_csv(root / "train_split.csv", index=False)
    labels.iloc[train:valid].to_csv(root / "valid_split.csv", index=False)
    labels.iloc[valid:, :1].to_csv(root / "test_split.csv", index=False)
    return seconds.tolist()


def epoch_groups(n: int, batch: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch] for i in range(0, n, batch)]


class Decoded:
    """The inputs as the kit read them before the cache: each batch decoded in-process."""

    def __init__(self, ids: list[str], media: dict[str, Path], kept: int, crop: int) -> None:
        self.ids, self.media, self.kept, self.crop = ids, media, kept, crop

    def batches(self, groups, epoch=0):
        rng = np.random.default_rng(epoch)
        for group in groups:
            waves = []
            for row in group.tolist():
                wave = read_audio(self.media[self.ids[row]])[:self.kept]  # decoded whole
                start = int(rng.integers(0, max(1, len(wave) - self.crop + 1)))
                waves.append(torch.from_numpy(wave[start:start + self.crop]))
            yield {"audio_wave": nn.utils.rnn.pad_sequence(waves, batch_first=True),
                   "audio_samples": torch.tensor([len(w) for w in waves]),
                   "audio_missing": torch.zeros(len(waves), dtype=torch.bool)}


def cached_inputs(data: ChallengeData, settings: EndToEndConfig, cache: Path, workers: int):
    packed = ClipInputs({}, data.all_ids, STEPS)
    stand_in = SimpleNamespace(settings=settings, encoders={"audio": None})  # no model needed
    return EndToEndInputs(packed, data, stand_in, cache, seed=0, workers=workers)


def rate(inputs, groups, epoch: int = 0) -> float:
    started = time.perf_counter()
    clips = sum(len(b["audio_samples"]) for b in inputs.batches(groups, epoch=epoch))
    return clips / (time.perf_counter() - started)


def tiny_model(folder: Path, settings: EndToEndConfig) -> EndToEnd:
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, conv_dim=(32,) * 7,
                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    tf.Wav2Vec2Model(config).save_pretrained(folder / "w2v")
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder / "w2v")
    settings = settings.model_copy(update={"audio_model": str(folder / "w2v")})
    return EndToEnd(settings, ModelSpec(name="unimodal_audio", d_model=16, heads=2),
                    {"text": 1, "visual": 1, "audio": 1}, STEPS)


def wait_share(model: EndToEnd, inputs, groups, steps: int) -> dict:
    """Seconds waiting for inputs and computing, over `steps` training steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    waited = computed = 0.0
    groups = groups[:steps + 1]
    batches = iter(inputs.batches(groups, epoch=0))
    for step in range(len(groups)):
        started = time.perf_counter()
        batch = next(batches)
        batch = {**ClipInputs({}, ["x"] * len(batch["audio_samples"]), STEPS).batch(
            torch.zeros(len(batch["audio_samples"]), dtype=torch.long)), **batch}
        ready = time.perf_counter()
        loss = model(batch).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up
            waited += ready - started
            computed += time.perf_counter() - ready
    return {"wait_s": round(waited, 2), "compute_s": round(computed, 2),
            "wait_share": round(waited / (waited + computed), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--max-chunks", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes")
    parser.add_argument("--step", action="store_true", help="also time a tiny training step")
    parser.add_argument("--step-batches", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/endtoend_inputs.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        started = time.perf_counter()
        seconds = make_data(root, args.clips)
        made = time.perf_counter() - started
        data = ChallengeData(root, test_list="test_split.csv", transcripts=None)
        settings = EndToEndConfig(audio_model="stand-in", max_seconds=args.seconds,
                                  max_chunks=args.max_chunks)
        kept = samples_kept(args.seconds, args.max_chunks)
        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        ensure_waves(data, kept, cache)
        build = time.perf_counter() - started
        groups = epoch_groups(len(data.all_ids), args.batch, 0)
        cached = cached_inputs(data, settings, cache, args.workers)
        cached_rate = rate(cached, groups)  # the first epoch starts the workers too
        again = rate(cached, epoch_groups(len(data.all_ids), args.batch, 1), epoch=1)
        cached.close()
        in_process = cached_inputs(data, settings, cache, 0)
        in_process_rate = rate(in_process, groups)
        decoded = Decoded(data.all_ids, find_media(root, "audio"), kept,
                          int(args.seconds * SAMPLE_RATE))
        decoded_rate = rate(decoded, groups)
        row = {"clips": len(data.all_ids), "batch": args.batch, "crop_s": args.seconds,
               "max_chunks": args.max_chunks, "loader_workers": args.workers,
               "cores": len(os.sched_getaffinity(0)),
               "median_clip_s": round(float(np.median(seconds)), 2),
               "longest_clip_s": round(float(np.max(seconds)), 1),
               "generate_s": round(made, 1),
               "cache_build_s": round(build, 1),
               "cache_build_s_per_1000": round(build / len(data.all_ids) * 1000, 1),
               "cached_clips_per_s": round(cached_rate, 1),
               "cached_clips_per_s_second_epoch": round(again, 1),
               "cached_in_process_clips_per_s": round(in_process_rate, 1),
               "decoded_clips_per_s": round(decoded_rate, 1),
               "speedup": round(min(cached_rate, again) / decoded_rate, 1)}
        if args.step:
            model = tiny_model(Path(tmp), settings)
            cached = cached_inputs(data, settings, cache, args.workers)
            row["step_after"] = wait_share(model, cached, groups, args.step_batches)
            cached.close()
            row["step_before"] = wait_share(model, decoded, groups, args.step_batches)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
