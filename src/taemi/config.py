"""Run configuration: one YAML per run, typed and validated once, when it is loaded.

`load_config("configs/demo.yaml", ["train.epochs=3"])` reads the file, applies
command-line overrides (`key.path=value`, the value parsed as YAML) and validates the
result. Any error names the key: `config key 'train.epochs': ...`. Relative paths are
relative to the folder `taemi` runs in.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from taemi import catalog

Role = Literal["text", "visual", "audio"]
# a path as written, `~` expanded (the shell does not expand it inside a YAML file)
UserPath = Annotated[Path, AfterValidator(lambda p: p.expanduser())]
# a name that becomes a folder or file name: no separator, no leading dot
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=120)]
ROLES: tuple[str, ...] = ("text", "visual", "audio")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the organisers' layout lives, and the file names inside it."""

    root: UserPath
    train_csv: str = "train_split.csv"
    valid_csv: str = "valid_split.csv"
    test_list: str | None = None  # None: test ids are the names of the media in test_data/
    transcripts: str | None = "transcripts.csv"
    test_labels: str | None = None  # held-out test labels, where they exist (generated data)
    feature_dirs: dict[str, str] = Field(default_factory=dict)


class SynthConfig(Section):
    """Generate data into `data.root` before anything else (the default demo)."""

    scale: float = Field(1.0, gt=0, le=1.0)
    seed: int = 0
    dtype: Literal["float16", "float32"] = "float16"
    # "shared": test clips mimic seed videos that labelled clips mimic too (what the
    # published valid-to-test jumps suggest); "disjoint": each seed video in one split
    seed_videos: Literal["shared", "disjoint"] = "shared"
    # how much a clip's own words say about its own intensities (0: they name the seed
    # video only; `taemi.synth`)
    text_meaning: float = Field(0.0, ge=0, le=1)


class CacheConfig(Section):
    dir: UserPath = Path("cache")
    steps: dict[Role, PositiveInt] = Field(
        default_factory=lambda: {"text": 32, "visual": 32, "audio": 32})
    workers: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 1)
    # a backbone's `normalise: participant` shrinks each participant's statistics toward
    # the pooled ones by this many clips' weight (`taemi.cache.participant_moments`)
    normalise_prior: float = Field(5.0, ge=0)

    def steps_for(self, role: str) -> int:
        return self.steps.get(role, 32)  # type: ignore[call-overload]


class FoldsConfig(Section):
    """How clips are split into folds (`taemi.folds`), and what each fold keeps apart."""

    path: UserPath = Path("folds/folds.csv")
    n_splits: int = Field(5, ge=2)
    scheme: Literal["train+valid", "train"] = "train+valid"
    seed: int = 42
    n_bins: int = Field(3, ge=1)
    # participant | seed (video: label vector or transcript) | both | none; auto: follow
    # the evidence of `taemi inspect`
    group_by: Literal["auto", "participant", "seed", "both", "none"] = "auto"
    participants: UserPath | None = None  # true ids (Filename,participant); None: inferred
    identity_features: list[str] | None = None  # None: the first backbone's visual, audio
    given: bool = False  # `path` is a file you made: used as it is, never remade


class Backbone(Section):
    """Which feature folder feeds each modality; None leaves that modality out."""

    text: str | None = "text"
    visual: str | None = "vit"
    audio: str | None = "wav2vec2"
    # "participant" (the default: +0.06 held-out test for TAEMI, benchmarks/RESULTS.md):
    # the visual and audio packs standardised by each participant's own statistics
    # (participants as `folds` finds them: unlabelled inputs, test clips too); "none": raw
    normalise: Literal["none", "participant"] = "participant"

    def features(self) -> dict[str, str]:
        return {r: getattr(self, r) for r in ROLES if getattr(self, r)}


class ModelSpec(Section):
    """A registered model's name; every other key is one of its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "taemi"

    @model_validator(mode="after")
    def _known(self) -> ModelSpec:
        if not catalog.knows(self.name):
            raise ValueError(f"unknown model {self.name!r}; registered: "
                             f"{catalog.model_names()}")
        allowed = set(catalog.parameters(self.name))
        for key in self.params():
            if key not in allowed:
                raise ValueError(f"model {self.name!r} has no parameter {key!r}; it takes "
                                 f"{sorted(allowed)}")
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def resolved(self) -> dict[str, Any]:
        """Name and every parameter, defaults included: a changed default changes it too."""
        return {"name": self.name, **catalog.parameters(self.name), **self.params()}


# train settings that change how fast a job runs or where, never what it learns: in no key
# (threads can move the last bits of a float; see the README on determinism)
UNKEYED_TRAIN_KEYS = ("threads", "device", "eval_batch_size")


class TrainConfig(Section):
    """How one fold model is trained."""

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 512
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    ema: float | None = Field(0.99, gt=0, lt=1)  # None: no EMA of the weights
    bf16: bool = False
    patience: PositiveInt = 5  # epochs without a better validation mean Pearson ...
    min_delta: float = Field(1e-4, ge=0)  # ... better by at least this much
    # gate: BCE of a gate x intensity head's gate (models built with `head: gate`)
    loss: dict[Literal["mse", "pearson", "ccc", "gate"], float] = Field(
        default_factory=lambda: {"mse": 1.0, "pearson": 0.5})
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("loss")
    @classmethod
    def _some_loss(cls, loss: dict[str, float]) -> dict[str, float]:
        if not any(weight > 0 for weight in loss.values()) or any(w < 0 for w in loss.values()):
            raise ValueError("give at least one positive weight and no negative one, e.g. "
                             "{mse: 1.0, pearson: 0.5}")
        return loss

    threads: PositiveInt | None = None  # torch CPU threads; None: torch's default
    # torch.compile the model for training and prediction: fewer kernel launches on a GPU,
    # where a small model's step is launch-bound; a first-epoch compile cost everywhere
    compile: bool = False
    # which rows choose the epoch (and stop early): "inner", a grouped part of the fold's
    # own training rows; "fixed", none (all `epochs`, last weights); "outer", the scored
    # fold itself: optimistic, kept only to measure how much it overstates
    selection: Literal["inner", "fixed", "outer"] = "inner"
    inner_fraction: float = Field(0.15, gt=0, lt=0.5)
    # the kept weights are the mean of the `average` best epochs' weights (by the selection
    # rows; with none, the last `average` epochs): snapshot averaging, 1 = the best epoch
    average: PositiveInt = 1


class EndToEndConfig(Section):
    """Encoders trained with the fusion model from raw audio and transcripts
    (`taemi.endtoend`), in place of frozen feature folders for those roles."""

    audio_model: str | None = None  # any wav2vec2-family model: Hub name or local folder
    text_model: str | None = None  # any transformers text encoder: Hub name or local folder
    emotion_scores: bool = False  # append the audio model's regression head outputs per step
    max_seconds: float = Field(12.0, ge=1)  # training crop; prediction runs chunks this long
    max_chunks: PositiveInt = 10  # prediction reads at most max_chunks x max_seconds
    random_crop: bool = True  # False: the first max_seconds (the TAEMI authors' crop)
    max_tokens: PositiveInt = 128  # transcript tokens, special tokens included
    encoder_lr: float = Field(2e-5, gt=0)  # the encoders' top layer; train.lr: the rest
    layer_decay: float = Field(0.9, gt=0, le=1)  # each layer below: times this
    freeze_epochs: int = Field(0, ge=0)  # encoders frozen for the first epochs
    freeze_feature_encoder: bool = True  # wav2vec2's convolutional front end never trains
    gradient_checkpointing: bool = False
    # processes reading waveform crops for the training batches (DataLoader workers);
    # None: up to 4, leaving a core for the training process. Not in any key: the crops
    # are drawn per clip from (seed, fold, epoch), whoever reads them
    loader_workers: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _some_encoder(self) -> EndToEndConfig:
        if not self.audio_model and not self.text_model:
            raise ValueError("give audio_model and/or text_model")
        return self


class ExperimentConfig(Section):
    """One model config trained over backbones x seeds x folds."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    backbones: list[str] | None = None  # names from the top-level `backbones`; None: all
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    folds: list[int] | None = Field(None, min_length=1)  # a subset of folds; None: all
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the `train` section
    # encoders trained end to end from raw media for the roles they read (None: packs only)
    endtoend: EndToEndConfig | None = None
    # whether `taemi run` scores it with each modality removed (minutes a model at full
    # size, more for one trained end to end; null, as earlier kits wrote it: yes)
    robustness: bool = True
    # one more model per backbone and seed, trained on every CV row, predicts the test in
    # its fold models' place (`taemi.experiment`, "refit"); auto: where the fold models
    # learn from under half the CV rows
    refit: bool | Literal["auto"] = "auto"
    # a refit's epochs: median (its fold models' median best epoch), sqrt (that times the
    # square root of their training share) or auto (median at 1,266 CV rows or fewer, sqrt
    # from 12,660, between in proportion to log rows, and median where that count is the
    # epoch cap: what the held-out test favoured; `taemi.experiment.refit_exponent`)
    refit_epochs: Literal["median", "sqrt", "auto"] = "auto"

    @field_validator("robustness", mode="before")
    @classmethod
    def _null_is_yes(cls, value: Any) -> Any:
        return True if value is None else value

    @field_validator("folds", "seeds")
    @classmethod
    def _once_each(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and len(set(values)) < len(values):
            raise ValueError(f"each value once, got {values}")
        return values

    @field_validator("train")
    @classmethod
    def _train_keys(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        try:
            TrainConfig.model_validate(overrides)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"train key {key!r}: {first['msg']}") from None
        return overrides


class StackConfig(Section):
    """A LightGBM stack over the out-of-fold predictions of trained experiments."""

    name: Name
    experiments: list[str] = Field(min_length=1)
    level: Literal["experiment", "backbone"] = "backbone"  # one member per experiment/backbone
    # what oof/test.csv hold: the LightGBM or ridge stack, the mean blend, the "select"ed
    # blend (members chosen greedily, weights their counts), the best single member; "cv":
    # whichever of the five has the highest nested CV
    method: Literal["lightgbm", "ridge", "select", "mean", "best", "cv"] = "lightgbm"
    # per-clip context for the LightGBM trees; `retrieval`: for each modality of the first
    # member's first backbone (normalised where it is), the similarity-weighted labels of
    # a clip's `retrieval_k` nearest labelled clips outside its fold, and the nearest one's
    # similarity (labels recur: clips of one seed video share them); they enter the
    # LightGBM stack only where its nested CV is higher with them (cv.json `retrieval`)
    meta_features: list[Literal["lengths", "missing", "transcript_length", "retrieval"]] = \
        Field(default_factory=list)
    retrieval_k: PositiveInt = 10
    ridge_alpha: float = Field(1.0, gt=0)  # the ridge stack, also the LightGBM stack's base
    ridge_positive: bool = False  # non-negative ridge weights (no member subtracted)
    # what the stackers see for the test: "fold_models", each fold model's predictions (as
    # their OOF rows were made: one fold model each), the stackers' outputs averaged; or
    # "fold_mean", the fold models' mean (smoother inputs than the stackers learnt from)
    test_inputs: Literal["fold_models", "fold_mean"] = "fold_models"
    # LGBMStacker parameters; `taemi.stacking.check_stack` names an unknown one before
    # any work starts (the config layer sits below the stacker and does not import it)
    lightgbm: dict[str, Any] = Field(default_factory=dict)


class TuneConfig(Section):
    """Optuna search over an experiment's dropout rates."""

    experiment: str
    n_trials: PositiveInt = 20
    # a time budget too: no trial starts once the finished trials' minutes (summed over
    # workers) reach it; the study is done at n_trials or at the budget, whichever first
    minutes: float | None = Field(None, gt=0)
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    backbone: str | None = None  # None: the experiment's first backbone
    seed: int = 0
    epochs: PositiveInt | None = None  # None: the experiment's train.epochs
    storage: str | None = None  # None: a journal file in the study folder; or an RDB URL
    study_name: str | None = None  # None: "<config name>-<experiment>"
    dir: UserPath = Path("runs/tune")
    ranges: dict[str, tuple[float, float]] = Field(default_factory=lambda: {
        "text": (0.0, 0.8), "visual": (0.0, 0.6), "audio": (0.0, 0.6),
        "attn_dropout": (0.0, 0.3), "dropout": (0.0, 0.4), "head_dropout": (0.0, 0.5)})
    # recipe choices the search makes too, each a list of candidates: `train.<setting>`
    # (epochs, lr, batch_size, patience, loss, ...) or `model.<parameter>` (d_model, head)
    choices: dict[str, list[Any]] = Field(default_factory=dict)
    # other experiments that train with the chosen `train.` settings too (a recipe sized
    # for the data, not for one model); their model parameters stay their own
    share: list[str] = Field(default_factory=list)
    # recipes tried first, before the sampler draws: each maps choice keys to one of their
    # candidates (choices it leaves out, and the ranges, are drawn); the evidence's best
    # guesses, so a short search starts from them rather than from chance
    start: list[dict[str, Any]] = Field(default_factory=list)
    pruner_startup_trials: int = Field(3, ge=0)
    pruner_warmup_epochs: int = Field(1, ge=0)
    apply: bool = True  # `taemi run`: train with the best parameters found
    # worker processes `taemi tune` runs on this machine; each takes cores // workers torch
    # threads (unless train.threads is set), so together they never oversubscribe the cores
    workers: PositiveInt = 1
    # RDB storage: a running trial beats every `heartbeat_interval` s; one silent for
    # `grace_period` s is failed and its parameters queued again (a worker died)
    heartbeat_interval: PositiveInt = 60
    grace_period: PositiveInt = 180

    _storage = field_validator("storage")(classmethod(lambda cls, v: check_credentials(v)))

    def applies_to(self) -> list[str]:
        """The experiments that train with what the study chose."""
        return [self.experiment, *self.share]

    @model_validator(mode="after")
    def _grace(self) -> TuneConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must exceed "
                             f"heartbeat_interval ({self.heartbeat_interval})")
        for i, recipe in enumerate(self.start):
            for key, value in recipe.items():
                if key not in self.choices:
                    raise ValueError(f"tune.start[{i}] {key!r}: not among tune.choices "
                                     f"{sorted(self.choices)}")
                if value not in self.choices[key]:
                    raise ValueError(f"tune.start[{i}] {key!r}: {value!r} is not one of its "
                                     f"candidates {self.choices[key]}")
        if self.epochs and "train.epochs" in self.choices:
            raise ValueError("give tune.epochs (every trial's epochs) or a train.epochs "
                             "choice, not both")
        return self

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: dict[str, list[Any]]) -> dict[str, list[Any]]:
        tunable = sorted(set(TrainConfig.model_fields) - set(UNKEYED_TRAIN_KEYS))
        for key, values in choices.items():
            section, _, name = key.partition(".")
            if section not in ("train", "model") or not name:
                raise ValueError(f"choice {key!r}: name a train setting (train.lr) or a model "
                                 "parameter (model.d_model)")
            if not values:
                raise ValueError(f"choice {key!r}: give at least one candidate")
            if section == "train":
                if name not in tunable:
                    raise ValueError(f"choice {key!r}: no train setting {name!r} to choose; "
                                     f"settings: {tunable}")
                for value in values:  # each candidate a valid setting
                    try:
                        TrainConfig.model_validate({name: value})
                    except ValidationError as err:
                        raise ValueError(f"choice {key!r}: candidate {value!r}: "
                                         f"{err.errors()[0]['msg']}") from None
        return choices

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        # `modality`: one rate for all three modalities (models that take one, taemi_paper)
        known = {"text", "visual", "audio", "modality", "attn_dropout", "dropout",
                 "head_dropout"}
        if "modality" in ranges and ranges.keys() & {"text", "visual", "audio"}:
            raise ValueError("give either `modality` (one rate for all) or per-modality "
                             "rates (text, visual, audio), not both")
        for key, (low, high) in ranges.items():
            if key not in known:
                raise ValueError(f"no tunable rate {key!r}; tunable: {sorted(known)}")
            if not 0 <= low <= high < 1:
                raise ValueError(f"range for {key!r} must satisfy 0 <= low <= high < 1, "
                                 f"got [{low}, {high}]")
        return ranges


class RayConfig(Section):
    """How the grid's jobs run on a Ray cluster (`executor: ray`)."""

    address: str | None = None  # None: RAY_ADDRESS, else a new local instance
    cpus_per_job: PositiveInt = 1  # the job's Ray CPUs, and its torch threads
    # GPUs a job asks for where the cluster has them: 0.25 packs four fold jobs on one GPU
    # (harmless where there are none: jobs then ask for no GPU)
    gpus_per_job: float = Field(1.0, gt=0, le=1)
    max_retries: int = Field(3, ge=0)  # a job whose node died runs again on another node


class TrackingConfig(Section):
    """MLflow logging of each experiment and stack; off unless `uri` is given."""

    uri: str | None = None  # an MLflow tracking URI, e.g. sqlite:///mlruns.db
    experiment: str | None = None  # the MLflow experiment; None: the config's name

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_credentials(v)))


class SubmitConfig(Section):
    """The challenge CSV `taemi run` writes: from an ensemble or an experiment."""

    name: Name
    source: str  # an ensemble name (ensembles/<name>) or an experiment name (models/<name>)


class PathsConfig(Section):
    models: UserPath = Path("models")
    ensembles: UserPath = Path("ensembles")
    submissions: UserPath = Path("submissions")
    reports: UserPath = Path("reports")
    runs: UserPath = Path("runs")  # one record per `taemi run` (runs/<config name>/)


class Config(Section):
    name: Name = "run"
    # a team's own models: Python files (relative to the config file) or importable module
    # names, imported before the config is validated, in every process (`taemi.plugins`)
    plugins: list[str] = Field(default_factory=list)
    data: DataConfig
    synth: SynthConfig | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    backbones: dict[str, Backbone] = Field(default_factory=lambda: {"vit-w2v": Backbone()})
    train: TrainConfig = Field(default_factory=TrainConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    executor: Literal["local", "ray"] = "local"
    # fold jobs the local executor runs at once, each in its own process with
    # `train.threads` torch threads (None: an equal share of the cores)
    workers: PositiveInt = 1
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    stack: StackConfig | None = None
    tune: TuneConfig | None = None
    submit: SubmitConfig | None = None
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _experiments_fit(self) -> Config:
        for name, exp in self.experiments.items():
            for backbone in exp.backbones or []:
                if backbone not in self.backbones:
                    raise ValueError(f"experiment {name!r} names backbone {backbone!r}, which "
                                     f"is not among backbones {sorted(self.backbones)}")
            for backbone in exp.backbones or list(self.backbones):
                roles = set(self.backbones[backbone].features())
                if exp.endtoend is not None:  # the encoders read these from raw media
                    roles |= {r for r, m in (("audio", exp.endtoend.audio_model),
                                             ("text", exp.endtoend.text_model)) if m}
                if not roles:
                    raise ValueError(f"experiment {name!r}: backbone {backbone!r} gives no "
                                     "modality (text, visual and audio are all null)")
                for role in catalog.requires(exp.model.name):
                    if role not in roles:
                        raise ValueError(
                            f"experiment {name!r}: model {exp.model.name!r} needs the {role} "
                            f"modality, which backbone {backbone!r} does not have ({role}: "
                            "null); give that backbone a feature folder for it, or train the "
                            "experiment on another backbone")
        named = [("stack", e) for e in (self.stack.experiments if self.stack else [])]
        named += [("tune", e) for e in (self.tune.applies_to() if self.tune else [])]
        for section, experiment in named:
            if experiment not in self.experiments:
                raise ValueError(f"{section} names experiment {experiment!r}, which is not "
                                 f"among experiments {sorted(self.experiments)}")
        if self.tune and self.tune.share and not any(
                k.startswith("train.") for k in self.tune.choices):
            raise ValueError(f"tune.share {self.tune.share}: the study chooses no train "
                             "setting to share (give tune.choices a train.<setting>)")
        if self.tune and self.tune.experiment in self.tune.share:
            raise ValueError(f"tune.share names {self.tune.experiment!r}, the tuned "
                             "experiment itself")
        if self.tune:
            model = self.experiments[self.tune.experiment].model.name
            allowed = set(catalog.parameters(model))
            for key in self.tune.choices:
                section, _, name = key.partition(".")
                if section == "model" and name not in allowed:
                    raise ValueError(f"tune.choices {key!r}: model {model!r} has no "
                                     f"parameter {name!r}; it takes {sorted(allowed)}")
                rates = self.tune.ranges.keys() & {"text", "visual", "audio", "modality"}
                if section == "model" and (name in self.tune.ranges or
                                           (name == "modality_dropout" and rates)):
                    raise ValueError(f"tune.choices {key!r}: a rate tune.ranges searches "
                                     "already")
        if self.tune and self.tune.backbone and self.tune.backbone not in self.backbones:
            raise ValueError(f"tune names backbone {self.tune.backbone!r}, which is not among "
                             f"backbones {sorted(self.backbones)}")
        return self

    def train_for(self, experiment: str) -> TrainConfig:
        """The top-level `train` section with the experiment's overrides applied."""
        overrides = self.experiments[experiment].train
        return TrainConfig.model_validate({**self.train.model_dump(), **overrides})

    def backbones_for(self, experiment: str) -> list[str]:
        return self.experiments[experiment].backbones or list(self.backbones)

    def experiment_dir(self, experiment: str) -> Path:
        if experiment not in self.experiments:
            raise ConfigError(f"no experiment {experiment!r} in the config; experiments: "
                              f"{sorted(self.experiments)}")
        return self.paths.models / experiment

    def packed_features(self) -> list[tuple[str, int]]:
        """Every (feature folder, steps) pair the backbones need, in a stable order."""
        pairs = {
            (feature, self.cache.steps_for(role))
            for backbone in self.backbones.values()
            for role, feature in backbone.features().items()
        }
        return sorted(pairs)

    def resolved(self) -> dict[str, Any]:
        """The config as plain data (secrets included: for the jobs, not for files)."""
        return self.model_dump(mode="json")

    def public(self) -> dict[str, Any]:
        """The config as every artifact folder records it: a password in `tune.storage`
        or `tracking.uri` is masked."""
        out = self.resolved()
        if out.get("tune") and out["tune"].get("storage"):
            out["tune"]["storage"] = mask_url(out["tune"]["storage"])
        if out["tracking"].get("uri"):
            out["tracking"]["uri"] = mask_url(out["tracking"]["uri"])
        return out


# scheme://user:password@host: the password runs to the last @ before the host (a
# password may hold @), so the match is greedy up to a / or a space
_CREDENTIAL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")


def mask_url(url: str) -> str:
    """A database or tracking URL fit to print or record: its password replaced by ***."""
    return mask_secrets(url)


def check_credentials(url: str | None) -> str | None:
    """A URL whose password holds a raw `@` is refused (a driver would cut the password at
    it and print the rest as a host name): percent-encoding it as %40 is what URLs need."""
    if url and "://" in url:
        netloc = url.split("://", 1)[1].split("/", 1)[0]
        if netloc.count("@") > 1:
            raise ValueError(f"{mask_secrets(url)}: the password holds '@'; write it as %40 "
                             "(a URL ends its password at the first @)")
    return url


def mask_secrets(text: str) -> str:
    """Any text (an error, a log line) with every URL's password replaced by ***."""
    return _CREDENTIAL.sub(r"\1***@", text)


# ----------------------------------------------------------------------------- loading


def _set_key(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML) to a config tree."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:  # not YAML, or a tag (!!python/...) safe_load refuses
            reason = " ".join(str(err).split())
            raise ConfigError(f"override {item!r}: the value is not plain YAML ({reason})"
                              ) from None
        _set_key(tree, key.strip(), value)
    return tree


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for key in loc[:-1]:
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return list(model.model_fields)


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(str(p) for p in item["loc"])
        key = ".".join(loc)
        if not key:
            lines.append(item["msg"].removeprefix("Value error, "))
        elif item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _known_keys(Config, loc), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"config key {key!r}: unknown key{hint}")
        elif item["type"] == "missing":
            lines.append(f"config key {key!r}: required but not given")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"config key {key!r}: {item['msg']}{shown}")
    return f"{source}: invalid config\n  " + "\n  ".join(lines)


def config_from_dict(tree: dict, source: str = "<config>") -> Config:
    """The validated config; its plugins are imported first, since its experiments may
    name their models (so every process that reads a config knows its models)."""
    plugins = tree.get("plugins") or [] if isinstance(tree, dict) else []
    if not isinstance(plugins, list) or not all(isinstance(e, str) for e in plugins):
        raise ConfigError(f"{source}: config key 'plugins': expected a list of Python files "
                          f"or module names, got {plugins!r}")
    if plugins or "taemi.plugins" in sys.modules:  # (another config's may be loaded)
        from taemi.plugins import load_plugins

        load_plugins(plugins)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return tree


def deep_merge(base: dict, overlay: dict) -> dict:
    """`overlay` on top of `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike, overrides: list[str] | None = None,
                overlays: list[str | os.PathLike] | None = None) -> Config:
    """Read a YAML config, merge overlays (e.g. tuned parameters), apply `key=value`
    overrides, validate; errors name the file and the key."""
    tree = _read_yaml(Path(path))
    for overlay in overlays or []:
        tree = deep_merge(tree, _read_yaml(Path(overlay)))
    tree = apply_overrides(tree, list(overrides or []))
    if isinstance(tree.get("plugins"), list) and tree["plugins"]:
        from taemi.plugins import resolve

        tree["plugins"] = resolve([str(e) for e in tree["plugins"]], Path(path).parent)
    return config_from_dict(tree, str(path))
