"""Decoding with PyAV: video frames at a fixed rate, audio as 16 kHz mono float32.

Every way a clip can be unreadable (not a media file, truncated, no such track, nothing
decodable) raises `MediaError` naming the file; the extractors record it and move on, so
one bad clip is a missing modality, never a failed run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from taemi.data import DataError

SAMPLE_RATE = 16_000
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, UnicodeDecodeError)


class MediaError(DataError):
    """A clip that cannot be decoded; the message names the file and the reason."""


class NoAudioTrack(MediaError):
    """A video without sound: its audio is missing, which is not a decoding fault."""


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except _DECODE_ERRORS as err:
        raise MediaError(f"{path}: cannot open as media ({_reason(err)})") from err


def _reason(err: BaseException) -> str:
    """FFmpeg's words without the path (the message names the file once already)."""
    return str(getattr(err, "strerror", None) or err).strip() or type(err).__name__


def iter_frames(path: str | os.PathLike, fps: float | None) -> Iterator[Image.Image]:
    """Yield RGB frames sampled at `fps` per second (every frame when `fps` is None/0).

    A frame is kept when its timestamp reaches the next sample time, so a clip yields
    about duration x fps frames, and never more frames than the video holds.
    """
    path = Path(path)
    container = _open(path)
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        start, next_time, count = None, 0.0, 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / rate
                start = t if start is None else start
                t -= start
                if fps and t + 1e-6 < next_time:
                    continue
                if fps:
                    next_time = (math.floor(t * fps + 1e-6) + 1) / fps
                count += 1
                yield frame.to_image()
        except _DECODE_ERRORS as err:
            raise MediaError(f"{path}: decoding failed after {count} frames "
                             f"({_reason(err)})") from err
        if count == 0:
            raise MediaError(f"{path}: no video frames could be decoded")


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
               max_samples: int | None = None) -> np.ndarray:
    """The first audio track as mono float32 at `sample_rate` Hz, shape (samples,); with
    `max_samples`, only that many, the decoder stopping there (a 20-minute clip read for
    its first seconds costs those seconds)."""
    path = Path(path)
    container = _open(path)
    chunks: list[np.ndarray] = []
    have = 0
    with container:
        if not container.streams.audio:
            raise NoAudioTrack(f"{path}: no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resample by sample count; odd timestamps must not matter
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have += len(chunks[-1])
                if max_samples is not None and have >= max_samples:
                    break
            else:
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except _DECODE_ERRORS as err:
            raise MediaError(f"{path}: audio decoding failed ({_reason(err)})") from err
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0)
    if samples.size == 0:
        raise MediaError(f"{path}: no audio samples could be decoded")
    return samples[:max_samples]


def decoded_audio(clips: dict[str, Path]) -> Iterator[tuple[str, np.ndarray | MediaError]]:
    """Each clip's 16 kHz waveform, or the error that kept it from being read."""
    for clip, path in clips.items():
        try:
            yield clip, read_audio(path)
        except MediaError as err:
            yield clip, err
