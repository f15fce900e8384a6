"""The kit's steps, each a function of the config, each skipped when its output is current.

    data (generate when the config asks) -> cache -> folds -> tune (optional)
        -> train the grid -> stack -> submit -> report

The command line (`taemi.cli`) and the end-to-end run call these and nothing else, so a
step behaves the same whichever way it is started.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import read_json, stable_hash, write_json
from taemi.cache import PackedFeature, build_packed
from taemi.config import Config, ConfigError
from taemi.data import ChallengeData, DataError, DataReport, open_data
from taemi.evidence import Evidence
from taemi.folds import (
    check_given_folds,
    folds_digest,
    make_folds,
    purged,
    read_folds,
    write_folds,
)
from taemi.participants import Participants, ensure_participants
from taemi.plan import run_config
from taemi.progress import echo
from taemi.synth import SynthParams, generate
from taemi.tracking import log_experiment, log_stack


def ensure_data(cfg: Config) -> ChallengeData:
    """Generate the dataset first when the config has a `synth` section."""
    if cfg.synth is not None:
        s = cfg.synth
        generate(cfg.data.root, SynthParams(scale=s.scale, seed=s.seed, dtype=s.dtype,
                                            seed_videos=s.seed_videos,
                                            text_meaning=s.text_meaning,
                                            workers=cfg.cache.workers))
    return open_data(cfg)


def ensure_cache(cfg: Config, data: ChallengeData | None = None,
                 report: bool = True) -> dict[tuple[str, int], PackedFeature]:
    """Pack every feature folder the backbones use; print one summary of what was found."""
    data = data or open_data(cfg)
    packs = {
        (name, steps): build_packed(data, name, steps, cfg.cache.dir, cfg.cache.workers)
        for name, steps in cfg.packed_features()
    }
    normalised = [b for b, spec in cfg.backbones.items() if spec.normalise != "none"]
    if normalised:  # the derived packs too, before jobs run in parallel
        from taemi.experiment import open_packs

        for backbone in normalised:
            open_packs(cfg, data, backbone)
    if report:
        summary = DataReport(
            features=[p.report for p in packs.values()],
            transcripts=data.transcript_report() if data.transcripts else None,
        )
        print(summary.format(), flush=True)  # not progress: shown even when quiet
        if normalised:
            note = few_clip_note(ensure_participants(cfg, data), data.test_ids)
            if note:
                print(note, flush=True)
    return packs


FEW_CLIPS = 10  # below this, per-participant statistics lost to raw features (RESULTS.md)


def tuned_record(cfg: Config, data: ChallengeData, folds: pd.DataFrame) -> dict | None:
    """The study a tuned experiment trains with, as its cv.json records it."""
    if cfg.tune is None or not cfg.tune.apply:
        return None
    from taemi.tuning import current_study

    ref = current_study(cfg, data, folds)
    return {"study": ref.name, "key": ref.key, "saw_rows_of_folds": list(ref.saw_folds)}


def few_clip_note(participants: Participants, test_ids: list[str], share: float = 0.2
                  ) -> str | None:
    """A warning when many test clips belong to participants with few clips, whose
    normalisation statistics are weak: with 1-3 clips a person, normalised TAEMI scored
    below raw features on generated data; from 10 clips it gained."""
    people, counts = np.unique(participants.labels, return_counts=True)
    size = dict(zip(people.tolist(), counts.tolist(), strict=True))
    few = np.array([size[p] < FEW_CLIPS for p in participants.of(test_ids).tolist()])
    if not len(few) or few.mean() <= share:
        return None
    return (f"note: {few.mean():.0%} of the test clips belong to participants with fewer "
            f"than {FEW_CLIPS} clips, whose per-participant statistics are weak (on "
            "generated data normalised TAEMI scored below raw features with 1-3 clips a "
            "person); consider `normalise: none` on the backbones, or stack both kinds")


def train_experiments(cfg: Config, names: list[str] | None = None,
                      executor: str | None = None,
                      data: ChallengeData | None = None) -> dict[str, dict]:
    """Train every job of the named experiments (all by default); return their cv.json."""
    from taemi.executors import EXECUTORS
    from taemi.experiment import aggregate, is_done, job_fingerprints

    if not cfg.experiments:
        raise ConfigError("the config defines no experiments: add an `experiments` section "
                          "(see configs/abaw.yaml) to train")
    data = data or open_data(cfg)
    ensure_cache(cfg, data, report=False)
    folds = ensure_folds(cfg, data)
    cfg = run_config(cfg, data, folds)
    names = names or list(cfg.experiments)
    for name in names:
        cfg.experiment_dir(name)  # an unknown name is an error before any work
    planned = {job: fingerprint for name in names
               for job, fingerprint in job_fingerprints(cfg, name, data, folds).items()}
    jobs = [job for job, fingerprint in planned.items()
            if not is_done(job.folder(cfg.paths.models), fingerprint)]
    if len(jobs) < len(planned):
        echo(f"{len(planned) - len(jobs)} of {len(planned)} jobs are done and current: skipped")
    if jobs:
        EXECUTORS[executor or cfg.executor](cfg.resolved(), jobs)
    results = {}
    tuned = tuned_record(cfg, data, folds)
    for name in names:
        results[name] = aggregate(cfg, name, data, folds,
                                  tuned if cfg.tune and name == cfg.tune.experiment else None)
        overall = results[name]["overall"]
        echo(f"{name}: CV mean Pearson {overall['mean']:.4f}")
        log_experiment(cfg, name, results[name])
    return results


def inspect_data(cfg: Config, data: ChallengeData, participants: Participants | None = None
                 ) -> tuple[Evidence, str, str]:
    """The evidence on participants and seed videos, and the `group_by` it supports."""
    from taemi.evidence import choose_group_by, gather_evidence

    participants = participants or ensure_participants(cfg, data)
    evidence = gather_evidence(data, participants)
    choice, reason = choose_group_by(evidence)
    return evidence, choice, reason


def folds_key(cfg: Config, data: ChallengeData, participants: Participants | None) -> str:
    """What folds.csv is made of: the folds settings (not where the file lies), the labels,
    the transcripts and the participants."""
    settings = cfg.folds.model_dump(mode="json", exclude={"path", "participants", "given"})
    return stable_hash({
        "folds": settings, "labels": data.labels.to_csv(index=False),
        "transcripts": sorted(data.transcripts.items()),
        "participants": None if participants is None else participants.frame().to_csv()})


def ensure_folds(cfg: Config, data: ChallengeData | None = None) -> pd.DataFrame:
    """Make folds.csv from the config (same config and data, same file) and return it.

    Beside it, folds.json records the grouping used and why. A folds file that the config
    would not make and that taemi did not write (one made with true ids, say) is never
    replaced: `folds.given: true` uses it, otherwise the run stops with one line.
    """
    from taemi.evidence import fold_groups

    f = cfg.folds
    path = Path(f.path)
    if f.given:
        return check_given_folds(read_folds(path), path, data or open_data(cfg))
    data = data or open_data(cfg)
    record = path.with_name("folds.json")
    participants = (ensure_participants(cfg, data)
                    if f.group_by in ("auto", "participant", "both") else None)
    key = folds_key(cfg, data, participants)
    if path.is_file() and record.is_file() and read_json(record).get("key") == key:
        current = read_folds(path)
        if read_json(record).get("digest") == folds_digest(current):
            return current  # made from these inputs: nothing to redo
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
    if path.is_file():
        existing = read_folds(path)
        made_here = record.is_file() and read_json(record).get("digest") == folds_digest(
            existing)
        if not existing.equals(folds):
            if not made_here:
                raise DataError(
                    f"{path} differs from the folds this config makes and was not written by "
                    "taemi: set folds.given: true to use it as it is, or move it away")
            echo(f"folds: {path} remade (group_by {group_by}): its models will retrain")
    write_folds(folds, path)
    write_json(record, {"key": key, "group_by": f.group_by, "chosen": group_by,
                        "reason": reason,
                        "digest": folds_digest(folds), "n_splits": f.n_splits,
                        "scheme": f.scheme,
                        "evidence": asdict(evidence) if evidence is not None else None})
    return read_folds(path)


def ensure_stack(cfg: Config, data: ChallengeData | None = None) -> dict:
    """Nested LightGBM stack of the config's `stack` section (skipped when current); every
    member must be what the config trains."""
    from taemi.stacking import check_stack, run_stack, stale_members

    data = data or open_data(cfg)
    packs = {name: pack for (name, _), pack in ensure_cache(cfg, data, report=False).items()}
    folds = ensure_folds(cfg, data)
    cfg = run_config(cfg, data, folds)
    check_stack(cfg)
    stale = stale_members(cfg, cfg.stack, data, folds) if cfg.stack is not None else None
    if stale:
        raise DataError(f"stack {cfg.stack.name!r}: {stale}; train it first "
                        "(`taemi train CONFIG`)")
    cv = run_stack(cfg, data, folds, packs)
    log_stack(cfg, cv)
    return cv


def ensure_tuning(cfg: Config, data: ChallengeData | None = None,
                  n_trials: int | None = None) -> Path:
    """Run or resume the Optuna study; return the best-parameters overlay."""
    from taemi.tuning import run_tuning

    data = data or open_data(cfg)
    ensure_cache(cfg, data, report=False)
    ensure_folds(cfg, data)
    return run_tuning(cfg, data, n_trials)


def ensure_robustness(cfg: Config, experiment: str) -> Path:
    """The experiment's missing-modality table and plot, redone when it was retrained."""
    from taemi.robustness import robustness, robustness_current, write_robustness

    cfg = run_config(cfg, open_data(cfg))
    folder = cfg.experiment_dir(experiment)
    table = folder / "robustness.csv"
    if robustness_current(folder):
        return table
    write_robustness(cfg, experiment, robustness(cfg, experiment))
    return table


def source_folder(cfg: Config, source: str) -> Path:
    """An ensemble (ensembles/<name>) or an experiment (models/<name>) by name or path."""
    for folder in (Path(source), cfg.paths.ensembles / source, cfg.paths.models / source):
        if (folder / "test.csv").is_file() and (folder / "cv.json").is_file():
            return folder
    raise FileNotFoundError(f"no ensemble or experiment {source!r} with test predictions "
                            f"(looked in {source}, {cfg.paths.ensembles / source}, "
                            f"{cfg.paths.models / source})")


def check_current(cfg: Config, data: ChallengeData, folder: Path) -> None:
    """Refuse to submit stale predictions: an ensemble whose members, folds, labels or
    meta-feature inputs changed since it was stacked, or one of whose members is stale;
    an experiment whose jobs changed since it was gathered, or that the config would
    retrain."""
    from taemi.experiment import stale_reason
    from taemi.stacking import stack_stale_reason

    folds = read_folds(cfg.folds.path)
    if cfg.stack is not None and folder == cfg.paths.ensembles / cfg.stack.name:
        reason = stack_stale_reason(cfg, data, folds)
        if reason:
            raise DataError(f"{folder} is stale: {reason}; rerun `taemi train CONFIG` and "
                            "`taemi stack CONFIG` (or `taemi run CONFIG`) first")
        return
    name = folder.name
    if name not in cfg.experiments or folder != cfg.paths.models / name:
        return  # a folder outside this config: nothing to check it against
    reason = stale_reason(cfg, name, data, folds)
    if reason:
        raise DataError(f"{folder} is stale: {reason}; rerun `taemi train CONFIG` first")


def ensure_submission(cfg: Config, source: str, name: str, overwrite: bool = False,
                      data: ChallengeData | None = None) -> Path:
    """Write submissions/<name>.csv from an ensemble's or experiment's test predictions."""
    from taemi.experiment import read_predictions
    from taemi.submission import make_submission, write_submission

    data = data or open_data(cfg)
    cfg = run_config(cfg, data)
    folder = source_folder(cfg, source)
    check_current(cfg, data, folder)
    predictions = read_predictions(folder / "test.csv")
    frame = make_submission(predictions, data.test_ids)
    return write_submission(frame, cfg.paths.submissions / f"{name}.csv", data.test_ids,
                            overwrite)


def run_all(cfg: Config) -> dict:
    """The end-to-end run: every step in order, each skipped when its artifacts are current."""
    from taemi.report import write_report
    from taemi.stacking import check_stack

    check_stack(cfg)
    data = ensure_data(cfg)
    ensure_cache(cfg, data)
    ensure_folds(cfg, data)
    if cfg.tune is not None:
        overlay = ensure_tuning(cfg, data)
        if cfg.tune.apply:
            echo(f"training with the tuned parameters of {overlay}")
    cfg = run_config(cfg, data)
    results = {"experiments": train_experiments(cfg, data=data)}
    for name, exp in cfg.experiments.items():
        if exp.measures_robustness:
            ensure_robustness(cfg, name)
    if cfg.stack is not None:
        results["stack"] = ensure_stack(cfg, data)
    if cfg.submit is not None:
        results["submission"] = ensure_submission(cfg, cfg.submit.source, cfg.submit.name,
                                                  data=data)
    results["report"] = write_report(cfg, data)
    results["leaderboard"] = read_json(results["report"].with_suffix(".json"))
    return results
