"""Command-line entry points for feature extraction from raw media.

    taemi extract video --root DATA --backbone NAME [--weights FILE] [--fps 6.4] [--out NAME]
    taemi extract audio --root DATA [--model NAME|DIR] [--out NAME] [--emotion-scores] [--logmel]
    taemi transcribe    --root DATA [--model large-v3|DIR] [--out transcripts.csv]
    taemi extract text  --root DATA --model NAME|DIR [--transcripts transcripts.csv] [--out text]

Every one of them takes the data root with `--root` (the folder in the organisers'
layout: raw/, audio/, test_data/...; the same folder as a config's `data.root`), writes
into it (`<root>/<out>/{id}.pkl`, or `<root>/transcripts.csv`), and also takes `--ids`
(comma-separated ids, or a file of them), `--device auto|cpu|cuda`, `--batch-size`,
`--force` (redo clips already done) and `--quiet`. A rerun skips the clips already done.
Models are local paths or Hub names; with HF_HUB_OFFLINE=1 only local paths and the
Hugging Face cache are used. A new feature folder becomes a backbone of the training grid:
`backbones: {mine: {visual: <out>, audio: ..., text: ...}}` in the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from taemi.progress import echo


def _common(p: argparse.ArgumentParser, batch_size: int, quiet: bool = True) -> None:
    p.add_argument("--root", required=True,
                   help="data root in the organisers' layout (a config's data.root)")
    p.add_argument("--ids", default=None,
                   help="only these clips: comma-separated ids, or a file of ids")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"model batch size (default {batch_size})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="redo clips that are already done")
    if quiet:  # SUPPRESS: `taemi extract --quiet video` must not be reset to False here
        p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars")


def _ids(args: argparse.Namespace) -> list[str] | None:
    from taemi.extract.common import parse_ids

    return parse_ids(args.ids)


def cmd_video(args: argparse.Namespace) -> None:
    from taemi.extract.video import extract_video

    fps = args.fps if args.fps > 0 else None
    print(extract_video(args.root, args.backbone, args.out, args.weights, fps,
                        args.batch_size, args.device, _ids(args), args.force).line())


def cmd_audio(args: argparse.Namespace) -> None:
    from taemi.extract.audio import extract_audio

    for summary in extract_audio(args.root, args.model, args.out, args.logmel, args.logmel_out,
                                 args.layer, args.chunk_seconds, args.batch_size, args.device,
                                 _ids(args), args.force, args.emotion_scores):
        print(summary.line())


def cmd_text(args: argparse.Namespace) -> None:
    from taemi.extract.text import extract_text

    print(extract_text(args.root, args.model, args.transcripts, args.out, args.batch_size,
                       args.max_length, args.device, _ids(args), args.force).line())


def cmd_transcribe(args: argparse.Namespace) -> None:
    from taemi.extract.transcribe import transcribe

    print(transcribe(args.root, args.model, args.out, args.language, args.device,
                     args.compute_type, args.beam_size, args.batch_size, _ids(args),
                     args.force, args.flush_every).line())


def _no_kind(args: argparse.Namespace) -> None:  # argparse requires a kind; kept for safety
    echo("taemi extract: give one of video, audio, text")


def add_commands(command: Callable[..., argparse.ArgumentParser],
                 with_config: Callable[..., argparse.ArgumentParser]) -> None:
    """Register `taemi extract video|audio|text` and `taemi transcribe` on the parser.

    They take `--root` rather than a CONFIG (`with_config` is unused): extraction needs
    only the media folder, and runs before any training config exists.
    """
    extract = command("extract", _no_kind, "features from raw media (video, audio, text)")
    extract.description = __doc__.split("\n\n")[0]
    kinds = extract.add_subparsers(dest="kind", required=True, metavar="{video,audio,text}")

    p = kinds.add_parser("video", help="frame embeddings with a timm backbone",
                         description="Embed video frames with a timm backbone; writes "
                         "<root>/<out>/{id}.pkl, float32 (frames, width).")
    p.set_defaults(handler=cmd_video)
    p.add_argument("--backbone", required=True,
                   help="timm model name, e.g. vit_small_patch16_224.augreg_in21k")
    p.add_argument("--weights", default=None,
                   help="weights file (state dict) instead of the backbone's pretrained ones")
    p.add_argument("--fps", type=float, default=6.4,
                   help="frames sampled per second (default 6.4; 0: every frame)")
    p.add_argument("--out", default=None, help="feature folder name (default: the backbone)")
    _common(p, batch_size=32)

    p = kinds.add_parser("audio", help="wav2vec2-family hidden states and/or log-mel",
                         description="Audio features from audio/{id}.* (or the video's "
                         "track) at 16 kHz mono; one decode feeds every output.")
    p.set_defaults(handler=cmd_audio)
    p.add_argument("--model", default=None,
                   help="wav2vec2-family model: Hub name or local folder")
    p.add_argument("--out", default=None, help="its feature folder (default: the model name)")
    p.add_argument("--layer", type=int, default=-1,
                   help="hidden state to keep (0: CNN features, -1: last; default -1)")
    p.add_argument("--emotion-scores", action="store_true",
                   help="append the model's emotion regression head outputs to each step "
                   "(audeering wav2vec2-large-robust-12-ft-emotion-msp-dim: 1024 + 3)")
    p.add_argument("--chunk-seconds", type=float, default=30.0,
                   help="longer clips run in chunks of this length (default 30)")
    p.add_argument("--logmel", action="store_true",
                   help="also write 64-band log-mel (25 ms / 10 ms; no weights)")
    p.add_argument("--logmel-out", default="logmel", help="log-mel folder (default logmel)")
    _common(p, batch_size=4)

    p = kinds.add_parser("text", help="token embeddings of the transcripts",
                         description="Token embeddings of transcripts.csv with a "
                         "sentence-transformers/transformers encoder; no file for an empty "
                         "transcript.")
    p.set_defaults(handler=cmd_text)
    p.add_argument("--model", required=True,
                   help="text encoder: Hub name or local folder (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--transcripts", default="transcripts.csv",
                   help="Filename,text CSV, relative to --root (default transcripts.csv)")
    p.add_argument("--out", default="text", help="feature folder name (default text)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per window (default: the model's own limit)")
    _common(p, batch_size=32)

    p = command("transcribe", cmd_transcribe, "Whisper transcripts of every clip")
    p.description = ("Transcribe every clip with faster-whisper (VAD-filtered) into "
                     "<root>/transcripts.csv (Filename,text; empty when no speech).")
    p.add_argument("--model", default="large-v3",
                   help="faster-whisper model name or local CTranslate2 folder "
                        "(default large-v3)")
    p.add_argument("--out", default="transcripts.csv",
                   help="CSV to write, relative to --root (default transcripts.csv)")
    p.add_argument("--language", default="en", help="spoken language, or auto (default en)")
    p.add_argument("--compute-type", default="auto",
                   help="CTranslate2 compute type (auto: float16 on GPU, int8 on CPU)")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--flush-every", type=int, default=25,
                   help="rewrite the CSV every this many clips (default 25)")
    _common(p, batch_size=8, quiet=False)  # top-level commands carry --quiet already
