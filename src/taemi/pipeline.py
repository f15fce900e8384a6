"""The kit's steps, each a function of the config, each skipped when its output is current.

    data (generate when the config asks) -> cache -> folds -> ...

The command line (`taemi.cli`) and the end-to-end run call these and nothing else, so a
step behaves the same whichever way it is started.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from taemi.cache import PackedFeature, build_packed
from taemi.config import Config
from taemi.data import ChallengeData, DataReport
from taemi.folds import make_folds, read_folds, write_folds
from taemi.progress import echo
from taemi.synth import SynthParams, generate


def open_data(cfg: Config) -> ChallengeData:
    d = cfg.data
    return ChallengeData(d.root, d.train_csv, d.valid_csv, d.test_list, d.transcripts,
                         d.test_labels, d.feature_dirs)


def ensure_data(cfg: Config) -> ChallengeData:
    """Generate the dataset first when the config has a `synth` section."""
    if cfg.synth is not None:
        s = cfg.synth
        generate(cfg.data.root, SynthParams(scale=s.scale, seed=s.seed, dtype=s.dtype,
                                            shared_seed_videos=s.shared_seed_videos,
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
    if report:
        summary = DataReport(
            features=[p.report for p in packs.values()],
            transcripts=data.transcript_report() if data.transcripts else None,
        )
        echo(summary.format())
    return packs


def train_experiments(cfg: Config, names: list[str] | None = None,
                      executor: str | None = None) -> dict[str, dict]:
    """Train every job of the named experiments (all by default); return their cv.json."""
    from taemi.executors import EXECUTORS
    from taemi.experiment import aggregate, plan_jobs

    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    folds = ensure_folds(cfg, data)
    names = names or list(cfg.experiments)
    for name in names:
        cfg.experiment_dir(name)  # an unknown name is an error before any work
    jobs = [job for name in names for job in plan_jobs(cfg, name, folds)]
    EXECUTORS[executor or cfg.executor](cfg.resolved(), jobs)
    results = {}
    for name in names:
        results[name] = aggregate(cfg, name, data, folds)
        overall = results[name]["overall"]
        echo(f"{name}: CV mean Pearson {overall['mean']:.4f}")
    return results


def ensure_folds(cfg: Config, data: ChallengeData | None = None) -> pd.DataFrame:
    """Write folds/folds.csv from the config (same config, same file) and return it."""
    data = data or open_data(cfg)
    f = cfg.folds
    folds = make_folds(data.labels, f.n_splits, f.scheme, f.seed, f.n_bins)
    write_folds(folds, f.path)
    return read_folds(Path(f.path))
