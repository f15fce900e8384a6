"""What a run is, decided once: the config as every command trains, stacks and submits it.

A config with a `tune` section and `tune.apply: true` means "these experiments, with the
best parameters of the current study" (`taemi.tuning.current_study`: the study its inputs
make). `run_config` merges that study's best.yaml once, so `taemi train`, `taemi stack`,
`taemi submit`, `taemi report` and `taemi run` all see the same experiments and agree on
which models are current. A study that has not reached `tune.n_trials` is an error for
the commands that would train or judge models without it (run `taemi tune` first).

`describe` is `taemi plan`: each artifact, its key, whether it is current and, where not,
which input changed, without building or training anything. Tuning, stacking and
end-to-end modules are imported where they are used (Optuna, LightGBM and torch take
seconds to load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from taemi.artifacts import read_json, stable_hash
from taemi.cache import find_pack, normalised_identity, remembering
from taemi.config import Config, ConfigError, config_from_dict, deep_merge
from taemi.data import ID_COLUMN, ChallengeData
from taemi.experiment import (
    NORMALISED_ROLES,
    REFIT,
    Job,
    changed_parts,
    job_key_parts,
    labels_digest,
    plan_jobs,
    refit_decision,
    refit_jobs,
)
from taemi.folds import check_given_folds, folds_digest, read_folds
from taemi.legacy import legacy_pack_name
from taemi.participants import (
    current_participants,
    identity_features,
    participants_key,
    read_participants,
)
from taemi.robustness import robustness_current
from taemi.splits import current_folds, folds_key, needs_participants, planned_folds
from taemi.submission import make_submission, submission_text


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
    return with_overlay(cfg, overlay)


def with_overlay(cfg: Config, overlay: Path) -> Config:
    """`cfg` with a study's best.yaml merged in: each model parameter and train setting it
    names replaces the config's whole (a chosen loss mix is that mix, not merged into
    the config's). The chosen train settings go to `tune.share`'s experiments too."""
    best = yaml.safe_load(overlay.read_text())
    chosen = best.get("experiments", {}).get(cfg.tune.experiment, {}).get("train") \
        if cfg.tune else None
    for name in cfg.tune.share if cfg.tune and chosen else []:
        best["experiments"][name] = {"train": dict(chosen)}
    tree = deep_merge(cfg.resolved(), best)
    for name, experiment in best.get("experiments", {}).items():
        for section in ("model", "train"):
            tree["experiments"][name].setdefault(section, {}).update(
                experiment.get(section) or {})
    return config_from_dict(tree, str(overlay))


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


def _differs(recorded: dict | None, now: dict) -> str:
    """Which named inputs differ between two records of digests."""
    if not recorded:
        return "no record of its inputs (made by an earlier kit, or never made)"
    changed = [k for k in sorted(set(now) | set(recorded)) if now.get(k) != recorded.get(k)]
    return "changed: " + ", ".join(changed) if changed else "its file does not match its record"


class Planner:
    """The plan of one config, worked out without building, training or writing anything
    (what `taemi plan` prints). Later steps whose inputs are not made yet are reported as
    waiting for them, as `make -n` does for a generated prerequisite."""

    def __init__(self, cfg: Config, data: ChallengeData) -> None:
        self.cfg = cfg
        self.data = data
        self.entries: list[Entry] = []

    def pack(self, name: str, steps: int):
        """Found once a command (`taemi.cache.remembering`, which `describe` holds)."""
        return find_pack(self.data, name, steps, self.cfg.cache.dir)

    def add(self, *args, **kwargs) -> Entry:
        entry = Entry(*args, **kwargs)
        self.entries.append(entry)
        return entry

    def run(self) -> list[Entry]:
        cfg = self.cfg
        for name, steps in cfg.packed_features():
            self.plan_pack(name, steps)
        normalised = any(b.normalise != "none" for b in cfg.backbones.values())
        participants = self.plan_participants() if normalised or needs_participants(cfg) \
            else None
        folds = self.plan_folds(participants)
        run_cfg = self.plan_study(folds, participants)
        current = {name: self.plan_experiment(run_cfg, name, folds, participants)
                   for name in run_cfg.experiments}
        self.plan_stack(run_cfg, folds, current)
        return self.entries

    def plan_pack(self, name: str, steps: int) -> None:
        found = self.pack(name, steps)
        legacy = not found.exists and (found.folder.parent / legacy_pack_name(
            self.data, name, steps, self.data.all_ids, found.files) / "meta.json").is_file()
        why = "made by the previous kit: renamed to its key, not rebuilt" if legacy else \
            f"{found.files_read:,} of {len(found.files):,} files read (new or changed)"
        self.add("pack", f"{name} K={steps}", found.key, found.exists or legacy, why)

    def plan_participants(self):
        cfg = self.cfg
        if cfg.folds.participants is not None:
            found = read_participants(cfg.folds.participants, self.data.all_ids)
            self.add("participants", str(cfg.folds.participants), None, True)
            return found
        packs = {n: self.pack(n, s) for n, s in identity_features(cfg).items()}
        found = current_participants(cfg, packs)
        self.add("participants", "inferred from face and voice", participants_key(packs),
                 found is not None, "its identity packs changed")
        return found

    def plan_folds(self, participants):
        cfg = self.cfg
        path = cfg.folds.path
        if cfg.folds.given:
            folds = check_given_folds(read_folds(path), path, self.data)
            self.add("folds", f"{path} (given)", None, True)
            return folds
        if participants is None and needs_participants(cfg):
            self.add("folds", str(path), None, False, "after the participants are inferred")
            return None
        key = folds_key(cfg, self.data, participants)
        folds = current_folds(cfg, key)
        if folds is not None:
            self.add("folds", str(path), key, True)
            return folds
        folds, record = planned_folds(cfg, self.data, participants)
        info = path.with_name("folds.json")
        recorded = read_json(info).get("parts") if info.is_file() else None
        self.add("folds", str(path), key, False, _differs(recorded, record["parts"]))
        return folds

    def pack_keys(self, cfg: Config, backbone: str, participants) -> dict[str, str] | None:
        """The backbone's packs' keys, role -> key (None: they wait for participants)."""
        spec = cfg.backbones[backbone]
        keys = {}
        for role, feature in spec.features().items():
            found = self.pack(feature, cfg.cache.steps_for(role))
            keys[role] = found.key
            if spec.normalise == "participant" and role in NORMALISED_ROLES:
                if participants is None:
                    return None
                _, identity = normalised_identity(
                    found.folder.name, found.key, None,
                    participants.of(self.data.all_ids), cfg.cache.normalise_prior)
                keys[role] = identity["key"]
        return keys

    def plan_study(self, folds, participants) -> Config:
        """The study's state, and the config the jobs are planned with."""
        from taemi.tuning import current_study, tune_backbone, tuned_overlay

        cfg = self.cfg
        if cfg.tune is None:
            return cfg
        keys = self.pack_keys(cfg, tune_backbone(cfg), participants)
        if folds is None or keys is None:
            self.add("study", cfg.tune.experiment, None, False, "after the folds are made")
            return cfg
        ref = current_study(cfg, self.data, folds, keys)
        overlay = tuned_overlay(cfg, ref, carry=False)
        records = sorted(ref.folder.parent.glob("*/study.json"))
        latest = read_json(records[-1]).get("inputs") if records else None
        why = "a new study: " + _differs(latest, ref.parts) if overlay is None else ""
        self.add("study", ref.name, ref.key, overlay is not None, why,
                 {"saw_rows_of_folds": list(ref.saw_folds)})
        if overlay is None or not cfg.tune.apply:
            return cfg
        return with_overlay(cfg, overlay)

    def plan_experiment(self, cfg: Config, name: str, folds, participants) -> bool:
        """The experiment's jobs and its gathered predictions; True if all are current."""
        if folds is None:
            self.add("experiment", name, None, False, "after the folds are made")
            return False
        media = None
        endtoend = cfg.experiments[name].endtoend
        if endtoend is not None:
            from taemi.endtoend import media_digest

            media = media_digest(self.data, endtoend, cfg.cache.dir)
        digest, labels = folds_digest(folds), labels_digest(self.data.labels)
        planned, todo, waiting, fold_keys = {}, [], 0, {}

        def check(job: Job, parts: dict) -> None:
            planned[job.label] = stable_hash(parts)
            done = job.folder(cfg.paths.models) / "done.json"
            record = read_json(done) if done.is_file() else None
            if record is None:
                todo.append((job.label, "not trained"))
            elif record.get("fingerprint") != planned[job.label]:
                todo.append((job.label, ", ".join(changed_parts(record.get("parts"), parts))))

        keys = {b: self.pack_keys(cfg, b, participants) for b in cfg.backbones_for(name)}
        for job in plan_jobs(cfg, name, folds):
            if keys[job.backbone] is None:
                waiting += 1
                continue
            parts = job_key_parts(cfg, job, keys[job.backbone], digest, labels, media)
            fold_keys[job] = stable_hash(parts)
            check(job, parts)
        refits = refit_jobs(cfg, name, folds, fold_keys) if len(fold_keys) == \
            len(plan_jobs(cfg, name, folds)) else []
        for job in refits:
            check(job, job_key_parts(cfg, job, keys[job.backbone], digest, labels, media))
        if refit_decision(cfg, name, folds)["used"]:
            made = {(j.backbone, j.seed) for j in refits}
            for backbone, seed in dict.fromkeys((j.backbone, j.seed) for j in fold_keys):
                if (backbone, seed) not in made:
                    todo.append((Job(name, backbone, seed, REFIT).label,
                                 "after its fold jobs"))
        total = len(planned) + waiting + sum(r == "after its fold jobs" for _, r in todo)
        why = ""
        if waiting:
            why = f"{waiting} jobs wait for the participants"
        elif todo:
            reasons = sorted({r for _, r in todo})
            why = f"{len(todo)} of {total} jobs to train ({'; '.join(reasons[:3])})"
            if any("earlier kit" in r for r in reasons):
                why += "; an earlier kit's jobs on unchanged inputs are carried over, not retrained"
        cv_path = cfg.paths.models / name / "cv.json"
        gathered = read_json(cv_path).get("jobs") if cv_path.is_file() else None
        current = not todo and not waiting and gathered == planned
        if not why and not current:
            why = "its jobs are done but not gathered"
        refit = sum(Job.is_refit_label(label) for label in planned) + \
            sum(r == "after its fold jobs" for _, r in todo)
        jobs = f"{total} jobs, {refit} of them refit" if refit else f"{total} jobs"
        self.add("experiment", f"{name} ({jobs})", None, current, why,
                 {"to_train": [label for label, _ in todo]})
        if cfg.experiments[name].robustness:
            fresh = current and robustness_current(cfg.paths.models / name)
            self.add("robustness", name, None, fresh, "its experiment's models changed")
        return current

    def plan_stack(self, cfg: Config, folds, current: dict[str, bool]) -> None:
        from taemi.stacking import stack_fingerprint

        stack = cfg.stack
        if stack is None:
            return
        record = cfg.paths.ensembles / stack.name / "cv.json"
        waiting = [m for m in stack.experiments if not current.get(m)]
        if waiting:
            self.add("stack", stack.name, None, False, f"after {', '.join(waiting)}")
            fresh = False
        else:
            packs = {name: self.pack(name, steps) for name, steps in cfg.packed_features()}
            key = stack_fingerprint(cfg, stack, self.data, folds, packs)
            fresh = record.is_file() and read_json(record).get("fingerprint") == key
            self.add("stack", stack.name, key, fresh,
                     "its members, folds, labels or meta-feature inputs changed")
        if cfg.submit is not None:
            self.plan_submission(cfg, fresh)

    def plan_submission(self, cfg: Config, stack_current: bool) -> None:
        path = cfg.paths.submissions / f"{cfg.submit.name}.csv"
        source = cfg.paths.ensembles / cfg.submit.source / "test.csv"
        if not source.is_file():
            source = cfg.paths.models / cfg.submit.source / "test.csv"
        fresh = stack_current and path.is_file() and source.is_file() and \
            path.read_text() == submission_text(make_submission(
                pd.read_csv(source, dtype={ID_COLUMN: str}), self.data.test_ids))
        self.add("submission", str(path), None, fresh, "its source changes or it is not written")


def describe(cfg: Config, data: ChallengeData) -> list[Entry]:
    """`taemi plan`: every artifact of the config, current or to make, and why."""
    with remembering():
        return Planner(cfg, data).run()
