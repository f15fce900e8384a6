"""What a run is, decided once: the config as every command trains, stacks and submits it.

A config with a `tune` section and `tune.apply: true` means "these experiments, with the
best parameters of the current study" (`taemi.tuning.current_study`: the study its inputs
make). `run_config` merges that study's best.yaml once, so `taemi train`, `taemi stack`,
`taemi submit`, `taemi report` and `taemi run` all see the same experiments and agree on
which models are current. A study that has not reached `tune.n_trials` is an error for
the commands that would train or judge models without it (run `taemi tune` first).

`describe` is `taemi plan`: each artifact, its key, whether it is current and, where not,
which input changed, without building or training anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import yaml

from taemi.config import Config, ConfigError, config_from_dict, deep_merge
from taemi.data import ChallengeData


def run_config(cfg: Config, data: ChallengeData, folds: pd.DataFrame | None = None,
               strict: bool = True) -> Config:
    """`cfg` with the current study's best parameters merged where `tune.apply` is on.
    Without a finished current study: an error, or (`strict=False`, for reports that only
    read) `cfg` as it is, whose tuned experiments then show as stale."""
    if cfg.tune is None or not cfg.tune.apply:
        return cfg
    from taemi.tuning import current_study, tuned_overlay

    if folds is None and not cfg.folds.path.is_file():
        if not strict:
            return cfg
        raise ConfigError(f"no folds file {cfg.folds.path} yet to tune on: run `taemi folds "
                          "CONFIG` (or `taemi run CONFIG`) first")
    ref = current_study(cfg, data, folds)
    overlay = tuned_overlay(cfg, ref)
    if overlay is None and not strict:
        return cfg
    if overlay is None:
        raise ConfigError(
            f"the config tunes {cfg.tune.experiment!r} (tune.apply: true) but its current "
            f"study {ref.name} has not finished {cfg.tune.n_trials} trials: run `taemi tune "
            "CONFIG` (or `taemi run CONFIG`) first, or set tune.apply: false")
    return config_from_dict(deep_merge(cfg.resolved(), yaml.safe_load(overlay.read_text())),
                            str(overlay))


@dataclass
class Entry:
    """One artifact of the plan."""

    kind: str  # pack, participants, folds, study, job, experiment, stack, submission
    name: str
    key: str | None
    current: bool
    why: str = ""  # what changed, where not current
    details: dict = field(default_factory=dict)

    def line(self) -> str:
        state = "current" if self.current else "to make"
        why = f" ({self.why})" if self.why and not self.current else ""
        key = f" [{self.key[:12]}]" if self.key else ""
        return f"  {state:<8} {self.kind:<12} {self.name}{key}{why}"
