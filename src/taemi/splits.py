"""The folds a config makes (`taemi folds`): grouped as the evidence says, written once.

    folds/<name>/folds.csv    Filename, fold, group (and purge): what every model shares
                 folds.json   the grouping chosen and why, and the key of what made it

`planned_folds` computes the assignment and its record without writing anything (what
`taemi plan` shows); `ensure_folds` writes them when the key (`folds_key`: settings,
labels, transcripts and participants, never the file's path) changed. A folds file a team
made is used as it is with `folds.given: true`, after `check_given_folds`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from taemi.artifacts import read_json, stable_hash, write_json
from taemi.config import Config
from taemi.data import ChallengeData, DataError, open_data
from taemi.evidence import Evidence, choose_group_by, fold_groups, gather_evidence
from taemi.folds import (
    check_given_folds,
    folds_digest,
    make_folds,
    purged,
    read_folds,
    write_folds,
)
from taemi.identity import table_digest
from taemi.participants import Participants, ensure_participants
from taemi.progress import echo


def needs_participants(cfg: Config) -> bool:
    return not cfg.folds.given and cfg.folds.group_by in ("auto", "participant", "both")


def inspect_data(cfg: Config, data: ChallengeData, participants: Participants | None = None
                 ) -> tuple[Evidence, str, str]:
    """The evidence on participants and seed videos, and the `group_by` it supports."""
    participants = participants or ensure_participants(cfg, data)
    evidence = gather_evidence(data, participants)
    choice, reason = choose_group_by(evidence)
    return evidence, choice, reason


def folds_key_parts(cfg: Config, data: ChallengeData, participants: Participants | None
                    ) -> dict[str, str]:
    """What folds.csv is made of, each part by its digest: the folds settings (not where
    the file lies), the labels, the transcripts and the participants."""
    settings = cfg.folds.model_dump(mode="json", exclude={"path", "participants", "given"})
    return {"settings": stable_hash(settings), "labels": table_digest(data.labels),
            "transcripts": stable_hash(sorted(data.transcripts.items())),
            "participants": None if participants is None
            else table_digest(participants.frame())}


def folds_key(cfg: Config, data: ChallengeData, participants: Participants | None) -> str:
    return stable_hash(folds_key_parts(cfg, data, participants))


def current_folds(cfg: Config, key: str) -> pd.DataFrame | None:
    """folds.csv as written for `key`, or None when it was made from other inputs."""
    path = Path(cfg.folds.path)
    record = path.with_name("folds.json")
    if path.is_file() and record.is_file() and read_json(record).get("key") == key:
        folds = read_folds(path)
        if read_json(record).get("digest") == folds_digest(folds):
            return folds
    return None


def planned_folds(cfg: Config, data: ChallengeData, participants: Participants | None
                  ) -> tuple[pd.DataFrame, dict]:
    """The assignment these inputs make, and the record folds.json keeps of it."""
    f = cfg.folds
    reason, evidence = "set in the config", None
    group_by = f.group_by
    if group_by == "auto":
        evidence, group_by, reason = inspect_data(cfg, data, participants)
    groups, purge = fold_groups(data, group_by, participants, f.n_splits)
    folds = make_folds(data.labels, f.n_splits, f.scheme, f.seed, f.n_bins, groups=groups,
                       purge=purge)
    if purge is not None:
        reason += ("; participants and seed videos cross too much for folds to keep both "
                   "whole: folds keep participants, and each fold's training rows leave out "
                   "its seed videos (" + ", ".join(
                       f"fold {k}: {share:.0%} purged" for k, share in purged(folds)) + ")")
    parts = folds_key_parts(cfg, data, participants)
    record = {"key": stable_hash(parts), "parts": parts, "group_by": f.group_by,
              "chosen": group_by, "reason": reason, "digest": folds_digest(folds),
              "n_splits": f.n_splits, "scheme": f.scheme,
              "evidence": asdict(evidence) if evidence is not None else None}
    return folds, record


def ensure_folds(cfg: Config, data: ChallengeData | None = None) -> pd.DataFrame:
    """Make folds.csv from the config (same config and data, same file) and return it.

    Beside it, folds.json records the grouping used and why. A folds file that the config
    would not make and that taemi did not write (one made with true ids, say) is never
    replaced: `folds.given: true` uses it, otherwise the run stops with one line.
    """
    path = Path(cfg.folds.path)
    data = data or open_data(cfg)
    if cfg.folds.given:
        return check_given_folds(read_folds(path), path, data)
    participants = ensure_participants(cfg, data) if needs_participants(cfg) else None
    made = current_folds(cfg, folds_key(cfg, data, participants))
    if made is not None:
        return made  # made from these inputs: nothing to redo
    folds, record = planned_folds(cfg, data, participants)
    info = path.with_name("folds.json")
    if path.is_file():
        existing = read_folds(path)
        made_here = info.is_file() and read_json(info).get("digest") == folds_digest(existing)
        if not existing.equals(folds):
            if not made_here:
                raise DataError(
                    f"{path} differs from the folds this config makes and was not written by "
                    "taemi: set folds.given: true to use it as it is, or move it away")
            echo(f"folds: {path} remade (group_by {record['chosen']}): its models will "
                 "retrain")
    write_folds(folds, path)
    write_json(info, record)
    return read_folds(path)
