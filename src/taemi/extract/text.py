"""Token embeddings of the transcripts (`taemi extract text`): TAEMI's query tokens.

    taemi extract text --root DATA --model sentence-transformers/all-MiniLM-L6-v2
    taemi extract text --root DATA --model ./all-MiniLM-L6-v2 --out text

The model is a sentence-transformers or plain transformers encoder (Hub name or local
folder; a sentence-transformers folder holds the transformer at its top level). Its
tokeniser and transformer are used directly rather than `SentenceTransformer.encode`,
for two reasons: a transcript longer than the model's window (`max_seq_length` of a
sentence-transformers folder, else the tokeniser's limit, at most 512) is cut into
consecutive windows, each wrapped in the model's special tokens, whose token rows are
concatenated instead of being truncated (a 20-minute clip keeps all its words); and the
special tokens ([CLS], [SEP], padding) are dropped, so every row is one word piece of the
transcript. The rows are the last hidden state: for a text within one window, exactly the
`token_embeddings` sentence-transformers gives, less its first and last rows.

Output `<root>/<out>/{id}.pkl`: float32 (L, D), L word pieces. An empty transcript (no
speech) gets no file: that clip's text modality is missing. Transcripts are batched by
length; `--force` recomputes everything (needed after transcripts change, since a done
clip is one with a file).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from taemi.data import read_transcripts
from taemi.extract.common import (
    ExtractError,
    FailureLog,
    ModelRef,
    Summary,
    autocast,
    feature_path,
    load_model,
    pending,
    quiet_model_loading,
    resolve_device,
    resolve_model,
    select,
    write_feature,
)
from taemi.progress import progress

DEFAULT_OUT = "text"


def _sentence_config(ref: ModelRef) -> dict | None:
    name = "sentence_bert_config.json"
    if ref.local:
        path = Path(ref.location) / name
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(ref.location, name,
                                        local_files_only=ref.local_files_only))
        except Exception:  # a plain transformers model has none; that is fine
            return None
    return json.loads(path.read_text()) if path.is_file() else None


class TokenEncoder:
    """Tokeniser + transformer; `__call__` maps texts to per-text (L, D) token arrays."""

    def __init__(self, spec: str, device: str = "auto", max_length: int | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        self.device = resolve_device(device)
        quiet_model_loading()
        ref = resolve_model(spec, "text model")
        self.tokenizer = load_model(ref, "text tokenizer", lambda: AutoTokenizer.from_pretrained(
            ref.location, local_files_only=ref.local_files_only))
        self.model = load_model(ref, "text model", lambda: AutoModel.from_pretrained(
            ref.location, local_files_only=ref.local_files_only)).eval().to(self.device)
        self.max_length = max_length or self._window(ref)
        self.width = int(self.model.config.hidden_size)
        self.prefix, self.suffix = self._specials()

    def _window(self, ref: ModelRef) -> int:
        """The longest window the model was trained on (sentence-transformers says so)."""
        limits = [512, int(getattr(self.model.config, "max_position_embeddings", 512))]
        if self.tokenizer.model_max_length and self.tokenizer.model_max_length < 100_000:
            limits.append(int(self.tokenizer.model_max_length))
        config = _sentence_config(ref)
        if config and config.get("max_seq_length"):
            limits.append(int(config["max_seq_length"]))
        return min(limits)

    def _specials(self) -> tuple[list[int], list[int]]:
        """The ids a single text is wrapped in ([CLS] ... [SEP], <s> ... </s>, ...)."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                return full[:start], full[start + len(bare):]
        raise ExtractError(f"{self.spec}: cannot tell its special tokens from the text")

    def windows(self, texts: list[str]) -> list[tuple[int, list[int]]]:
        """(text index, wrapped ids) per window of at most `max_length` tokens."""
        prefix, suffix = self.prefix, self.suffix
        room = self.max_length - len(prefix) - len(suffix)
        if room < 1:
            raise ExtractError(f"--max-length {self.max_length} leaves no room for text")
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [(i, prefix + row[s:s + room] + suffix)
                for i, row in enumerate(ids) for s in range(0, len(row), room)]

    @torch.inference_mode()
    def __call__(self, texts: list[str], batch_size: int = 32) -> list[np.ndarray]:
        pad = self.tokenizer.pad_token_id or 0
        windows = self.windows(texts)
        pieces: list[list[np.ndarray]] = [[] for _ in texts]
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            width = max(len(ids) for _, ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                mask[row, :len(ids)] = 1
            with autocast(self.device):
                hidden = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=mask.to(self.device)).last_hidden_state
            hidden = hidden.float().cpu().numpy()
            for row, (owner, ids) in enumerate(batch):
                pieces[owner].append(hidden[row, len(self.prefix):len(ids) - len(self.suffix)])
        return [np.concatenate(p) if p else np.zeros((0, self.width), np.float32)
                for p in pieces]


def extract_text(root: str | os.PathLike, model: str, transcripts: str = "transcripts.csv",
                 out: str = DEFAULT_OUT, batch_size: int = 32, max_length: int | None = None,
                 device: str = "auto", ids: list[str] | None = None,
                 force: bool = False) -> Summary:
    """Embed the tokens of every non-empty transcript; an empty one leaves no file."""
    root = Path(root)
    source = Path(transcripts) if Path(transcripts).is_absolute() else root / transcripts
    if not source.is_file():
        raise ExtractError(f"transcripts not found: {source} (make them with "
                           "`taemi transcribe --root ...`)")
    texts = select(read_transcripts(source), ids, "row in " + source.name)
    folder = root / out
    summary = Summary(f"text {model}", folder, clips=len(texts))
    spoken = {i: t for i, t in texts.items() if t}
    for clip in texts.keys() - spoken.keys():  # no speech: no file, even a stale one
        feature_path(folder, clip).unlink(missing_ok=True)
    summary.empty = len(texts) - len(spoken)
    todo = pending(spoken, [folder], force)
    summary.skipped = len(spoken) - len(todo)
    if not todo:
        return summary
    if batch_size < 1:
        raise ExtractError(f"--batch-size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    encoder = TokenEncoder(model, device, max_length)
    summary.load_seconds = time.perf_counter() - started
    folder.mkdir(parents=True, exist_ok=True)
    failures = FailureLog(folder / "_failures.csv")
    todo.sort(key=lambda c: (len(spoken[c]), c))  # similar lengths share a batch: less padding
    started = time.perf_counter()
    try:
        with progress(total=len(todo), desc=f"text {folder.name}", unit="clip") as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                for clip, array in zip(batch, encoder([spoken[c] for c in batch], batch_size),
                                       strict=True):
                    if len(array):
                        write_feature(folder, clip, array)
                        failures.clear(clip)
                        summary.written += 1
                    else:  # text the tokeniser turns into nothing (e.g. only control chars)
                        summary.fail(clip, "transcript has no tokens", failures)
                    bar.update()
    finally:
        summary.seconds = time.perf_counter() - started
        failures.save()
    return summary
