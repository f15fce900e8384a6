"""Who is in each clip: participant clusters inferred from face and voice.

The organisers' splits are subject-independent (no test participant appears in train or
valid), but the files carry no participant column. A person's face and voice do: each
clip's mean visual and mean audio feature sit close to that person's other clips and far
from everyone else's. So, per modality, clips are linked to their nearest neighbours when
the cosine distance is below a threshold halfway (geometrically) between the typical
nearest-neighbour distance and the typical distance of two random clips; a link must hold
in every modality the two clips both have; linked clips form one participant.

Only unlabelled inputs are used (features of every clip, test clips included; never a
label), so the clusters can shape folds and per-participant statistics legitimately. A
team that knows the true participant ids gives them as a file (`folds.participants`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from taemi.artifacts import read_json, stable_hash, write_csv, write_json
from taemi.cache import PackedFeature, build_packed
from taemi.data import ID_COLUMN, ChallengeData, DataError, check_ids
from taemi.folds import linked_groups
from taemi.legacy import legacy_participants_key

if TYPE_CHECKING:
    from taemi.config import Config

MIN_SEPARATION = 1.5  # random-pair over nearest-neighbour distance: identity is decodable


@dataclass
class ModalityIdentity:
    """How well one modality tells people apart."""

    name: str
    clips: int
    nearest: float  # median cosine distance to the nearest other clip
    random: float  # median cosine distance of two random clips
    threshold: float
    used: bool

    @property
    def separation(self) -> float:
        return self.random / max(self.nearest, 1e-12)


@dataclass
class Participants:
    """One participant label per clip (ids in the order given) and how they were found."""

    ids: list[str]
    labels: np.ndarray
    source: str  # "inferred" or the file the true ids came from
    modalities: list[ModalityIdentity] = field(default_factory=list)

    @property
    def identifiable(self) -> bool:
        return self.source != "inferred" or any(m.used for m in self.modalities)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({ID_COLUMN: self.ids, "participant": self.labels})

    def of(self, ids: list[str]) -> np.ndarray:
        lookup = dict(zip(self.ids, self.labels, strict=True))
        return np.array([lookup[i] for i in ids])


def clip_means(pack: PackedFeature, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's mean over its valid steps (float32), and whether it has the modality."""
    rows = pack.rows(ids)
    means = np.zeros((len(rows), pack.width), np.float32)
    counts = np.zeros(len(rows), np.int64)
    for start in range(0, len(rows), 1024):  # in chunks: a whole pack in float32 is GBs
        chunk = np.sort(rows[start:start + 1024])
        order = np.argsort(np.argsort(rows[start:start + 1024]))
        x = pack.x[chunk].astype(np.float32)
        valid = pack.valid[chunk]
        n = valid.sum(1)
        sums = np.einsum("nkd,nk->nd", x, valid.astype(np.float32))
        means[start:start + len(chunk)] = (sums / np.maximum(n, 1)[:, None])[order]
        counts[start:start + len(chunk)] = n[order]
    present = ~pack.missing[rows] & (counts > 0)
    return means, present


def _embed(means: np.ndarray, max_dims: int = 1024, seed: int = 0) -> np.ndarray:
    """Centred and unit-length, so cosine distance is a dot product. Not reduced below
    `max_dims`: the top principal components are what varies most between clips (shared
    nuisance such as recording conditions), not who is speaking, and keeping only them
    merges people (measured: 14% wrong links for wav2vec2 at 48 dimensions, none at 768)."""
    centred = means - means.mean(0)
    reduced = (PCA(max_dims, random_state=seed).fit_transform(centred)
               if centred.shape[1] > max_dims and len(centred) > max_dims else centred)
    norm = np.linalg.norm(reduced, axis=1, keepdims=True)
    return reduced / np.maximum(norm, 1e-12)


def _modality_links(name: str, emb: np.ndarray, k: int, seed: int
                    ) -> tuple[ModalityIdentity, np.ndarray]:
    """Nearest-neighbour pairs (rows into emb) and this modality's identity threshold."""
    n = len(emb)
    k = min(k, n - 1)
    dist, nbr = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    dist = dist[:, 1:] ** 2 / 2  # Euclidean on unit vectors -> cosine distance
    nbr = nbr[:, 1:]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, size=(2, min(20_000, n * 10)))
    keep = a != b
    random = np.median(1 - (emb[a[keep]] * emb[b[keep]]).sum(1))
    nearest = float(np.median(dist[:, 0]))
    threshold = float(np.sqrt(max(nearest, 1e-12) * random))
    info = ModalityIdentity(name, n, nearest, float(random), threshold, False)
    info.used = info.separation >= MIN_SEPARATION
    close = dist < threshold
    pairs = np.stack([np.repeat(np.arange(n), k)[close.ravel()], nbr[close]], axis=1)
    return info, pairs


def infer_participants(ids: list[str], packs: dict[str, PackedFeature], k: int = 10,
                       seed: int = 0) -> Participants:
    """Cluster clips into participants from each pack's clip means (visual, audio, ...)."""
    n = len(ids)
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    infos, candidate_pairs = [], []
    for name, pack in packs.items():
        means, present = clip_means(pack, ids)
        if present.sum() < 3:
            continue
        where = np.flatnonzero(present)
        emb_present = _embed(means[present], seed=seed)
        emb = np.zeros((n, emb_present.shape[1]), np.float32)
        emb[where] = emb_present
        info, pairs = _modality_links(name, emb_present, k, seed)
        infos.append(info)
        if info.used:
            embeddings[name] = (emb, present)
            candidate_pairs.append(where[pairs])
    if not embeddings:  # nobody can be told apart: every clip stands alone
        return Participants(list(ids), np.arange(n), "inferred", infos)
    pairs = np.unique(np.sort(np.concatenate(candidate_pairs), axis=1), axis=0)
    keep = np.ones(len(pairs), bool)
    shared = np.zeros(len(pairs), bool)
    threshold = {i.name: i.threshold for i in infos}
    for name, (emb, present) in embeddings.items():
        both = present[pairs[:, 0]] & present[pairs[:, 1]]
        distance = 1 - (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)
        keep &= ~both | (distance < threshold[name])  # every shared modality must agree
        shared |= both
    pairs = pairs[keep & shared]
    labels = linked_groups(n, pairs[:, 0], pairs[:, 1])
    return Participants(list(ids), _renumber(labels), "inferred", infos)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Participants numbered by first appearance: the same clusters, the same numbers."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse.ravel()]


def read_participants(path: str | os.PathLike, ids: list[str]) -> Participants:
    """True participant ids from a `Filename,participant` file; every id must be there."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"participants file not found: {path} (folds.participants: a CSV "
                        "with columns Filename,participant)")
    frame = pd.read_csv(path, dtype={ID_COLUMN: str, "participant": str})
    for column in (ID_COLUMN, "participant"):
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r}; expected header "
                            "Filename,participant")
    known = dict(zip(check_ids(frame[ID_COLUMN], path), frame["participant"], strict=True))
    missing = [i for i in ids if i not in known or pd.isna(known[i])]
    if missing:
        raise DataError(f"{path}: no participant for ids {missing[:5]} ({len(missing)} in all)")
    codes = pd.factorize(pd.Series([known[i] for i in ids]))[0]
    return Participants(list(ids), _renumber(codes), str(path))


# ----------------------------------------------------------------- kept beside folds.csv

PARTICIPANTS_VERSION = 2


def identity_features(cfg: Config) -> dict[str, int]:
    """The features participants are told apart by, and their step counts:
    `folds.identity_features`, or the first backbone's visual and audio features (packed at
    their roles' steps)."""
    first = next(iter(cfg.backbones.values()))
    names = cfg.folds.identity_features or [f for f in (first.visual, first.audio) if f]
    steps = {feature: cfg.cache.steps_for(role) for b in cfg.backbones.values()
             for role, feature in b.features().items()}
    return {name: steps.get(name, 32) for name in names}


def identity_packs(cfg: Config, data: ChallengeData) -> dict[str, PackedFeature]:
    return {name: build_packed(data, name, steps, cfg.cache.dir, cfg.cache.workers)
            for name, steps in identity_features(cfg).items()}


def participants_key(packs: dict[str, PackedFeature]) -> str:
    """What inferred participants are made of: the identity packs' content keys."""
    return stable_hash({"packs": sorted(p.key for p in packs.values()),
                        "v": PARTICIPANTS_VERSION})


def participants_files(cfg: Config) -> tuple[Path, Path]:
    folder = Path(cfg.folds.path).parent
    return folder / "participants.csv", folder / "participants.json"


def current_participants(cfg: Config, packs: dict, carry: bool = False
                         ) -> Participants | None:
    """participants.csv as inferred from these identity packs (anything with `key` and
    `legacy_name`), or None when it was made from others. `carry`: re-key a file an older
    kit inferred from these very packs."""
    key = participants_key(packs)
    table, meta = participants_files(cfg)
    info = read_json(meta) if table.is_file() and meta.is_file() else {}
    old = legacy_participants_key([p.legacy_name for p in packs.values()])
    if info and info.get("key") != key and old is not None and info.get("key") == old:
        if not carry:
            return None
        info["key"] = key  # made by a kit before content keys from these very packs
        write_json(meta, info)
    if info.get("key") != key:
        return None
    frame = pd.read_csv(table, dtype={ID_COLUMN: str})
    return Participants(frame[ID_COLUMN].tolist(), frame["participant"].to_numpy(),
                        "inferred", [ModalityIdentity(**m) for m in info["modalities"]])


def ensure_participants(cfg: Config, data: ChallengeData) -> Participants:
    """Every clip's participant (labelled and test): the true ids of `folds.participants`,
    or clusters inferred from face and voice, kept in participants.csv beside folds.csv
    and redone only when their inputs' contents change."""
    if cfg.folds.participants is not None:
        return read_participants(cfg.folds.participants, data.all_ids)
    packs = identity_packs(cfg, data)
    found = current_participants(cfg, packs, carry=True)
    if found is not None:
        return found
    found = infer_participants(data.all_ids, packs)
    table, meta = participants_files(cfg)
    key = participants_key(packs)
    write_csv(table, found.frame())
    write_json(meta, {"key": key, "modalities": [asdict(m) for m in found.modalities]})
    return found
