"""The kit's steps, each a function of the config, each skipped when its output is current.

    data (generate when the config asks) -> cache -> folds -> tune (optional)
        -> train the grid -> stack -> submit -> report

The command line (`taemi.cli`) and the end-to-end run call these and nothing else, so a
step behaves the same whichever way it is started: each resolves the config once through
`taemi.plan.run_config` (the tuned parameters, where the config tunes) and judges what is
current by the keys of `taemi.identity`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import read_json, write_json
from taemi.cache import PackedFeature, build_packed, remembering
from taemi.config import Config, ConfigError
from taemi.data import ChallengeData, DataError, DataReport, open_data
from taemi.folds import read_folds
from taemi.identity import KIT_VERSION
from taemi.participants import Participants, ensure_participants
from taemi.plan import run_config
from taemi.progress import echo
from taemi.splits import ensure_folds
from taemi.synth import SynthParams, generate
from taemi.tracking import check_tracking, log_experiment, log_stack
from taemi.waves import ensure_waves, samples_kept


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
    kept = sorted({samples_kept(e.endtoend.max_seconds, e.endtoend.max_chunks)
                   for e in cfg.experiments.values() if e.endtoend and e.endtoend.audio_model})
    waves = [ensure_waves(data, n, cfg.cache.dir, cfg.cache.workers) for n in kept]
    normalised = [b for b, spec in cfg.backbones.items() if spec.normalise != "none"]
    if normalised:  # the derived packs too, before jobs run in parallel
        from taemi.experiment import open_packs

        for backbone in normalised:
            open_packs(cfg, data, backbone)
    if report:
        summary = DataReport(
            features=[p.report for p in packs.values()],
            transcripts=data.transcript_report() if data.transcripts else None,
            waves=[w.report for w in waves],
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
                      executor: str | None = None, data: ChallengeData | None = None,
                      record: dict | None = None) -> dict[str, dict]:
    """Train every job of the named experiments (all by default); return their cv.json.
    `record` gets the number of planned jobs and the labels of those trained."""
    from taemi.executors import EXECUTORS
    from taemi.experiment import aggregate, is_done, job_fingerprints, refit_decision

    if not cfg.experiments:
        raise ConfigError("the config defines no experiments: add an `experiments` section "
                          "(see configs/abaw.yaml) to train")
    check_tracking(cfg)  # a URI that cannot be used stops here, not after the training
    data = data or open_data(cfg)
    if not data.test_ids:  # every job predicts the test: say so before training any
        where = cfg.data.test_list or data.root / "test_data"
        raise DataError(f"no test clips in {where}: the jobs predict the test, so give "
                        "data.test_list or the test media before training")
    ensure_cache(cfg, data, report=False)
    folds = ensure_folds(cfg, data)
    cfg = run_config(cfg, data, folds)
    names = names or list(cfg.experiments)
    for name in names:
        cfg.experiment_dir(name)  # an unknown name is an error before any work
    trained: list[str] = []
    planned: dict = {}
    refitting = [name for name in names if refit_decision(cfg, name, folds)["used"]]
    # a refit job is planned once its fold jobs are done: a second wave, of those only
    for wave, wave_names in (("fold", names), ("refit", refitting)):
        fresh = {job: fingerprint for name in wave_names
                 for job, fingerprint in job_fingerprints(cfg, name, data, folds).items()
                 if job not in planned}
        planned.update(fresh)
        jobs = [job for job, fingerprint in fresh.items()
                if not is_done(job.folder(cfg.paths.models), fingerprint)]
        if wave == "fold" and len(jobs) < len(fresh):
            echo(f"{len(fresh) - len(jobs)} of {len(fresh)} jobs are done and current: "
                 "skipped")
        if jobs:
            EXECUTORS[executor or cfg.executor](cfg.resolved(), jobs)
        trained += [job.label for job in jobs]
    if record is not None:
        record.update(planned=len(planned), trained=trained)
    results = {}
    tuned = tuned_record(cfg, data, folds)
    for name in names:
        results[name] = aggregate(cfg, name, data, folds,
                                  tuned if cfg.tune and name in cfg.tune.applies_to() else None)
        overall = results[name]["overall"]
        echo(f"{name}: CV mean Pearson {overall['mean']:.4f}")
        log_experiment(cfg, name, results[name])
    return results


def ensure_stack(cfg: Config, data: ChallengeData | None = None) -> dict:
    """Nested LightGBM stack of the config's `stack` section (skipped when current); every
    member must be what the config trains."""
    from taemi.stacking import check_stack, meta_packs, run_stack, stale_members

    data = data or open_data(cfg)
    packs = meta_packs(cfg, data)
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
    """The end-to-end run: every step in order, each skipped when its artifacts are current.

    Each run leaves a record in `paths.runs/<config name>/`: the resolved config, what was
    made or skipped and how long each step took, the host, and the plan's keys at the end
    (`taemi.plan`); history, without copying any model."""
    with remembering():  # each feature folder quick-checked once a run
        return _run_all(cfg)


def _run_all(cfg: Config) -> dict:
    from taemi.report import write_report
    from taemi.stacking import check_stack

    started = time.time()
    steps: dict[str, float] = {}
    jobs: dict = {}

    def step(name: str, fn, *args, **kwargs):
        begin = time.perf_counter()
        out = fn(*args, **kwargs)
        steps[name] = round(steps.get(name, 0.0) + time.perf_counter() - begin, 3)
        return out

    check_stack(cfg)
    check_tracking(cfg)
    data = step("data", ensure_data, cfg)
    step("cache", ensure_cache, cfg, data)
    step("folds", ensure_folds, cfg, data)
    if cfg.tune is not None:
        overlay = step("tune", ensure_tuning, cfg, data)
        if cfg.tune.apply:
            echo(f"training with the tuned parameters of {overlay}")
    cfg = step("plan", run_config, cfg, data)
    results = {"experiments": step("train", train_experiments, cfg, data=data, record=jobs)}
    for name, exp in cfg.experiments.items():
        if exp.robustness:
            step("robustness", ensure_robustness, cfg, name)
    if cfg.stack is not None:
        results["stack"] = step("stack", ensure_stack, cfg, data)
    if cfg.submit is not None:
        results["submission"] = step("submit", ensure_submission, cfg, cfg.submit.source,
                                     cfg.submit.name, data=data)
    results["report"] = step("report", write_report, cfg, data)
    results["leaderboard"] = read_json(results["report"].with_suffix(".json"))
    results["record"] = write_run_record(cfg, data, started, steps, jobs)
    return results


def write_run_record(cfg: Config, data: ChallengeData, started: float,
                     steps: dict[str, float], jobs: dict) -> Path:
    """runs/<name>/<UTC time>-<host>-<pid>.json: one `taemi run`, as it happened."""
    from taemi.plan import describe

    entries = describe(cfg, data)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    path = cfg.paths.runs / cfg.name / f"{stamp}-{socket.gethostname()}-{os.getpid()}.json"
    write_json(path, {
        "config": cfg.public(), "kit": KIT_VERSION, "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3), "steps": steps,
        "jobs": {"planned": jobs.get("planned"), "trained": jobs.get("trained", [])},
        "plan": [{"kind": e.kind, "name": e.name, "key": e.key, "current": e.current}
                 for e in entries]})
    return path
