"""Whisper transcripts of every clip (`taemi transcribe`): the text anchors of TAEMI.

    taemi transcribe --root DATA                                # large-v3, -> DATA/transcripts.csv
    taemi transcribe --root DATA --model ./whisper-tiny.en-ct2 --device cpu

faster-whisper (CTranslate2) by model name (`large-v3`, `tiny.en`, a Hub id) or a local
CTranslate2 folder. Voice-activity filtering (Silero VAD) drops silence before Whisper
sees it, which keeps Whisper from inventing words for clips with no speech; the VAD
segments of a long clip go through Whisper `--batch-size` at a time (faster-whisper's
batched pipeline). A clip's text is its segments joined by spaces; no speech is an empty
cell, which the data layer reads as a missing text modality.

`transcripts.csv` (Filename,text) is rewritten atomically every `--flush-every` clips
and at the end, keeping the rows already there: a rerun transcribes only the clips with
no row. A clip with no audio track gets an empty row (it has no speech) and a note in
`transcripts_failures.csv`; an unreadable clip gets no row, only the note, so a rerun
tries it again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import write_csv
from taemi.data import ID_COLUMN, read_transcripts
from taemi.extract.common import (
    Checkpoint,
    ExtractError,
    FailureLog,
    Summary,
    find_media,
    load_model,
    prefetch,
    resolve_device,
    resolve_model,
    select,
)
from taemi.extract.media import MediaError, NoAudioTrack, decoded_audio
from taemi.progress import progress

DEFAULT_MODEL = "large-v3"


class Transcriber:
    """A faster-whisper model behind its batched pipeline; `__call__` maps audio to text."""

    def __init__(self, spec: str, device: str = "auto", compute_type: str = "auto",
                 language: str | None = "en", beam_size: int = 5, batch_size: int = 8) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        device = resolve_device(device)
        if compute_type == "auto":
            compute_type = "float16" if device.startswith("cuda") else "int8"
        ref = resolve_model(spec, "Whisper model")
        whisper_device, _, index = device.partition(":")
        model = load_model(ref, "Whisper model", lambda: WhisperModel(
            ref.location, device=whisper_device, device_index=int(index or 0),
            compute_type=compute_type, cpu_threads=os.cpu_count() or 0,
            local_files_only=ref.local_files_only))
        self.pipeline = BatchedInferencePipeline(model)
        self.language = None if language in (None, "", "auto") else language
        self.beam_size, self.batch_size = beam_size, max(1, batch_size)

    def __call__(self, wave: np.ndarray) -> str:
        segments, _ = self.pipeline.transcribe(
            wave, language=self.language, beam_size=self.beam_size,
            batch_size=self.batch_size, vad_filter=True)
        return " ".join(s.text.strip() for s in segments if s.text.strip())


def _write(path: Path, rows: dict[str, str]) -> None:
    ids = sorted(rows)
    write_csv(path, pd.DataFrame({ID_COLUMN: ids, "text": [rows[i] for i in ids]}))


def transcribe(root: str | os.PathLike, model: str = DEFAULT_MODEL,
               out: str = "transcripts.csv", language: str | None = "en",
               device: str = "auto", compute_type: str = "auto", beam_size: int = 5,
               batch_size: int = 8, ids: list[str] | None = None, force: bool = False,
               flush_every: int = 25) -> Summary:
    """Transcribe every clip without a row in `out`; write `out` atomically as it goes."""
    root = Path(root)
    path = Path(out) if Path(out).is_absolute() else root / out
    if path.suffix.lower() != ".csv":
        raise ExtractError(f"--out {out}: expected a .csv file name")
    clips = select(find_media(root, "audio"), ids, "audio or video file")
    existing = read_transcripts(path) if path.is_file() else {}
    rows = {i: t for i, t in existing.items() if not (force and i in clips)}
    todo = [c for c in clips if c not in rows]
    summary = Summary(f"transcribe {model}", path, clips=len(clips),
                      skipped=len(clips) - len(todo))
    if not todo:
        return summary
    started = time.perf_counter()
    whisper = Transcriber(model, device, compute_type, language, beam_size, batch_size)
    summary.load_seconds = time.perf_counter() - started
    failures = FailureLog(path.with_name(f"{path.stem}_failures.csv"))

    def save() -> None:
        _write(path, rows)
        failures.save()

    checkpoint = Checkpoint(save, every=flush_every)
    started = time.perf_counter()
    try:
        with progress(total=len(todo), desc="transcribe", unit="clip") as bar:
            for clip, wave in prefetch(decoded_audio({c: clips[c] for c in todo}), depth=4):
                if isinstance(wave, NoAudioTrack):
                    rows[clip] = ""
                    failures.record(clip, f"{wave} (empty transcript written)")
                    summary.empty += 1
                elif isinstance(wave, MediaError):
                    summary.fail(clip, str(wave), failures)
                else:
                    rows[clip] = whisper(wave)
                    failures.clear(clip)
                    if rows[clip]:
                        summary.written += 1
                    else:
                        summary.empty += 1
                bar.update()
                checkpoint.tick()
    finally:
        summary.seconds = time.perf_counter() - started
        save()
    return summary
