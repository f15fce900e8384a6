"""What the data says about the test, and so which folds match it (`taemi inspect`).

Two things decide whether a CV predicts the challenge's test:
* are the test's participants new? (inferred participants: how many test clips look like
  a labelled participant, and whether participants cross the official train/valid split);
* are the test's seed videos new? (how often a test clip's transcript nearly repeats a
  labelled clip's, against how often labelled clips repeat each other's; label vectors
  recurring across train/valid where there are no transcripts).
Only labels, transcripts and unlabelled features are read: never a test label.
`choose_group_by` turns the evidence into a `folds.group_by` and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from taemi.data import ID_COLUMN, TARGETS, ChallengeData
from taemi.folds import label_groups, near_duplicates, seed_groups, union_groups
from taemi.participants import Participants

KNOWN_PERSON = 0.5  # share of test clips matching a labelled participant: "known people"
SHARED_SEEDS = 0.5  # test repeat rate over labelled repeat rate: "seed videos shared"
MIN_SPEECH = 20  # test clips with speech needed to judge by transcripts


@dataclass
class Evidence:
    """The numbers `taemi inspect` prints; shares are fractions of clips."""

    clips_labelled: int
    clips_test: int
    participants: int
    participant_source: str
    participants_identifiable: bool  # true ids, or a modality that tells people apart
    identity: list[dict]  # per modality: separation of random over nearest distances
    participant_median_clips: float
    participant_largest: int
    participants_crossing_train_valid: int
    labelled_in_crossing_participants: float
    test_with_known_participant: float
    label_vectors_recurring: float  # labelled clips whose non-zero vector recurs
    label_all_zero: float
    valid_vector_in_train: float
    transcripts_with_speech: float
    transcripts_recurring_labelled: float
    transcripts_valid_in_train: float
    transcripts_test_in_labelled: float
    test_with_speech: int

    def lines(self) -> list[str]:
        pct = "{:.1%}".format
        ident = ", ".join(f"{m['name']} {m['separation']:.2f}x"
                          f"{'' if m['used'] else ' (not used)'}" for m in self.identity)
        return [
            f"clips: {self.clips_labelled:,} labelled, {self.clips_test:,} test",
            f"participants ({self.participant_source}): {self.participants:,}, median "
            f"{self.participant_median_clips:.0f} clips, largest {self.participant_largest:,}"
            + (f"; identity separation {ident}" if ident else ""),
            f"  crossing the official train/valid split: "
            f"{self.participants_crossing_train_valid:,} participants, holding "
            f"{pct(self.labelled_in_crossing_participants)} of labelled clips",
            f"  test clips that look like a labelled participant: "
            f"{pct(self.test_with_known_participant)}",
            f"label vectors: {pct(self.label_vectors_recurring)} of labelled clips share a "
            f"non-zero vector with another; {pct(self.label_all_zero)} are all zero (never "
            f"one group); valid clips whose vector occurs in train: "
            f"{pct(self.valid_vector_in_train)}",
            f"transcripts: {pct(self.transcripts_with_speech)} with speech; near-repeats "
            f"within labelled {pct(self.transcripts_recurring_labelled)}, valid in train "
            f"{pct(self.transcripts_valid_in_train)}, test in labelled "
            f"{pct(self.transcripts_test_in_labelled)} ({self.test_with_speech:,} test clips "
            "with speech)",
        ]


def _share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else 0.0


def _repeats(queries: list[str], references: list[str], same: bool = False) -> float:
    spoken = [bool(t.strip()) for t in queries]
    if not any(spoken):
        return 0.0
    hits = near_duplicates(queries, references, same=same)
    return _share(np.array([len(h) > 0 for h, s in zip(hits, spoken, strict=True) if s]))


def gather_evidence(data: ChallengeData, participants: Participants) -> Evidence:
    labels = data.labels
    ids = labels[ID_COLUMN].tolist()
    split = labels["split"].to_numpy()
    y = labels[list(TARGETS)].to_numpy()
    texts = data.transcripts
    text_of = [texts.get(i, "") for i in ids]
    test_texts = [texts.get(i, "") for i in data.test_ids]

    person = participants.of(ids)
    test_person = participants.of(data.test_ids)
    sizes = pd.Series(participants.labels).value_counts()
    crossing = pd.Series(split).groupby(person).nunique()
    crossing_people = crossing.index[crossing > 1]
    groups = label_groups(y)
    zero = ~y.any(axis=1)
    counts = pd.Series(groups).map(pd.Series(groups).value_counts()).to_numpy()
    train_vectors = {tuple(np.round(v, 6)) for v in y[split == "train"] if v.any()}
    valid_rows = (split == "valid") & ~zero
    train_texts = [t for t, s in zip(text_of, split, strict=True) if s == "train"]
    valid_texts = [t for t, s in zip(text_of, split, strict=True) if s == "valid"]
    return Evidence(
        clips_labelled=len(ids),
        clips_test=len(data.test_ids),
        participants=len(sizes),
        participant_source=participants.source,
        participants_identifiable=participants.identifiable,
        identity=[{**asdict(m), "separation": m.separation} for m in participants.modalities],
        participant_median_clips=float(sizes.median()),
        participant_largest=int(sizes.max()),
        participants_crossing_train_valid=len(crossing_people),
        labelled_in_crossing_participants=_share(np.isin(person, crossing_people)),
        test_with_known_participant=_share(np.isin(test_person, person)),
        label_vectors_recurring=_share((counts > 1) & ~zero),
        label_all_zero=_share(zero),
        valid_vector_in_train=_share(np.array(
            [tuple(np.round(v, 6)) in train_vectors for v in y[valid_rows]])),
        transcripts_with_speech=_share(np.array([bool(t) for t in text_of + test_texts])),
        transcripts_recurring_labelled=_repeats(text_of, text_of, same=True),
        transcripts_valid_in_train=_repeats(valid_texts, train_texts),
        transcripts_test_in_labelled=_repeats(test_texts, text_of),
        test_with_speech=sum(bool(t) for t in test_texts),
    )


def choose_group_by(evidence: Evidence) -> tuple[str, str]:
    """The `group_by` the evidence supports (participant, seed, both or none), and why."""
    e = evidence
    reasons = []
    if not e.participants_identifiable:
        by_person = False
        reasons.append("participants cannot be told apart from the features")
    elif e.test_with_known_participant >= KNOWN_PERSON:
        by_person = False
        reasons.append(f"{e.test_with_known_participant:.0%} of test clips look like a "
                       "labelled participant: the test's people are known")
    else:
        by_person = True
        reasons.append(f"only {e.test_with_known_participant:.0%} of test clips look like a "
                       "labelled participant: the test's people are new, so folds keep "
                       "participants apart")
    if e.test_with_speech >= MIN_SPEECH and e.transcripts_recurring_labelled > 0:
        ratio = e.transcripts_test_in_labelled / e.transcripts_recurring_labelled
        by_seed = ratio < SHARED_SEEDS
        what = (f"test transcripts nearly repeat labelled ones {ratio:.2f}x as often as "
                "labelled ones repeat each other")
    elif e.label_vectors_recurring > 0:
        ratio = e.valid_vector_in_train / e.label_vectors_recurring
        by_seed = ratio < SHARED_SEEDS
        what = (f"without transcripts: valid label vectors recur in train {ratio:.2f}x as "
                "often as labelled vectors recur")
    else:
        by_seed, what = False, "no label vector or transcript recurs"
    reasons.append(what + (": the test shows new seed videos, so folds keep seed videos "
                           "apart" if by_seed else ": the test shares seed videos with the "
                           "labelled clips, so folds need not keep them apart"))
    choice = {(True, True): "both", (True, False): "participant",
              (False, True): "seed", (False, False): "none"}[(by_person, by_seed)]
    return choice, "; ".join(reasons)


def fold_groups(data: ChallengeData, group_by: str, participants: Participants | None,
                n_splits: int = 5) -> tuple[np.ndarray, np.ndarray | None]:
    """The groups folds keep whole (one per row of `data.labels`) for a concrete
    `group_by`, and the purge groups (`make_folds`), if any.

    `both`: participants and seed videos together when their union still makes folds;
    when they cross so much that it does not (every participant mimicking many seed
    videos joins everyone into one group), folds keep participants whole and each fold's
    training rows leave out the seed videos of the fold (purged): no fold model has seen
    the fold's people or its seed videos, at the price of fewer training rows.
    """
    labels = data.labels
    ids = labels[ID_COLUMN].tolist()
    if group_by == "none":
        return np.arange(len(ids)), None
    if group_by == "participant":
        assert participants is not None
        return participants.of(ids), None
    seeds = seed_groups(labels[list(TARGETS)].to_numpy(),
                        [data.transcripts.get(i, "") for i in ids])
    if group_by == "seed":
        return seeds, None
    assert participants is not None
    person = participants.of(ids)
    union = union_groups(person, seeds)
    largest = np.bincount(np.unique(union, return_inverse=True)[1].ravel()).max()
    if largest <= len(ids) / n_splits / 2:
        return union, None
    return person, seeds
