"""The keys of kits before content keys (0.1.0 and earlier), kept only to carry finished work
over: packs, participants, jobs and studies made by them are recognised once, by the keys
those kits computed from what is on disk, and re-recorded under the new keys instead of
being remade.

Those kits named a pack by its source folders' paths and its files' paths, sizes and
mtimes; a job by its pack folders' names, the fold assignment (ids and folds only), every
train setting (threads and device included) and the model, with settings added later left
out at their defaults. Work is recognised only where the project has not moved since it
was made (the old keys held absolute paths and mtimes): a moved old project retrains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from taemi.artifacts import read_json, stable_hash, write_json

if TYPE_CHECKING:
    from taemi.config import Config
    from taemi.data import ChallengeData

LEGACY_CACHE_VERSION = 2
LATER_TRAIN_KEYS = {"compile": False, "average": 1}
LATER_MODEL_PARAMS = {"head": "sigmoid"}


def legacy_pack_name(data: ChallengeData, name: str, steps: int, ids: list[str],
                     files: dict[str, Path]) -> str:
    entries = []
    for clip in ids:
        path = files.get(clip)
        if path is None:
            entries.append((clip, None))
        else:
            stat = path.stat()
            entries.append((clip, str(path), stat.st_size, stat.st_mtime_ns))
    source = stable_hash([str(f.resolve()) for f in data.feature_folders(name)], 6)
    fingerprint = stable_hash({"v": LEGACY_CACHE_VERSION, "feature": name, "steps": steps,
                               "files": entries})
    return f"{name}-k{steps}-{source}-{fingerprint}"


def adopt_legacy_pack(data: ChallengeData, name: str, steps: int, cache_root: Path,
                      folder: Path, ids: list[str], files: dict[str, Path], key: str) -> bool:
    """Rename the pack an older kit made of exactly these files to `folder`; True if done."""
    old = cache_root / legacy_pack_name(data, name, steps, ids, files)
    if not (old / "meta.json").is_file():
        return False
    meta = read_json(old / "meta.json")
    if meta.get("ids") != ids or meta.get("steps") != steps:
        return False
    os.replace(old, folder)
    write_json(folder / "meta.json", {**meta, "key": key, "legacy_folder": old.name})
    return True


def legacy_labels_digest(labels: pd.DataFrame) -> str:
    return stable_hash(labels.to_csv(index=False), 16)


def legacy_folds_digest(folds: pd.DataFrame) -> str:
    return stable_hash(list(zip(folds["Filename"], folds["fold"].astype(int), strict=True)), 16)


def legacy_participants_key(legacy_names: list[str | None]) -> str | None:
    if not legacy_names or any(n is None for n in legacy_names):
        return None
    return stable_hash({"packs": sorted(legacy_names), "v": 2})


def _without(settings: dict, later: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in later or v != later[k]}


def legacy_media_digest(data: ChallengeData, audio: bool, text: bool) -> str:
    from taemi.extract.common import find_media

    media = {}
    if audio:
        media = {clip: [path.name, path.stat().st_size, path.stat().st_mtime_ns]
                 for clip, path in find_media(data.root, "audio").items()}
    return stable_hash({"media": media, "texts": data.transcripts if text else {}}, 16)


def legacy_job_fingerprint(cfg: Config, experiment: str, seed: int, fold: int,
                           pack_names: dict[str, str], folds: pd.DataFrame, labels: str,
                           data: ChallengeData) -> str:
    """The fingerprint an older kit's `done.json` holds for this job."""
    exp = cfg.experiments[experiment]
    extra = {}
    if exp.endtoend:
        media = legacy_media_digest(data, bool(exp.endtoend.audio_model),
                                    bool(exp.endtoend.text_model))
        extra = {"endtoend": exp.endtoend.model_dump(mode="json"), "media": media}
    return stable_hash({
        "model": _without(exp.model.resolved(), LATER_MODEL_PARAMS),
        "train": _without(cfg.train_for(experiment).model_dump(mode="json"), LATER_TRAIN_KEYS),
        "packs": dict(sorted(pack_names.items())),
        "folds": legacy_folds_digest(folds), "labels": labels, "seed": seed, "fold": fold,
        **extra,
    })
