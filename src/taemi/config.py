"""Run configuration: one YAML per run, typed and validated once, when it is loaded.

`load_config("configs/demo.yaml", ["train.epochs=3"])` reads the file, applies
command-line overrides (`key.path=value`, the value parsed as YAML) and validates the
result. Any error names the key: `config key 'train.epochs': ...`. Relative paths are
relative to the folder `taemi` runs in.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

Role = Literal["text", "visual", "audio"]
ROLES: tuple[str, ...] = ("text", "visual", "audio")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    """Where the organisers' layout lives, and the file names inside it."""

    root: Path
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


class CacheConfig(Section):
    dir: Path = Path("cache")
    steps: dict[Role, PositiveInt] = Field(
        default_factory=lambda: {"text": 32, "visual": 32, "audio": 32})
    workers: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 1)

    def steps_for(self, role: str) -> int:
        return self.steps.get(role, 32)  # type: ignore[call-overload]


class FoldsConfig(Section):
    path: Path = Path("folds/folds.csv")
    n_splits: int = Field(5, ge=2)
    scheme: Literal["train+valid", "train"] = "train+valid"
    seed: int = 42
    n_bins: int = Field(3, ge=1)


class Backbone(Section):
    """Which feature folder feeds each modality; None leaves that modality out."""

    text: str | None = "text"
    visual: str | None = "vit"
    audio: str | None = "wav2vec2"

    def features(self) -> dict[str, str]:
        return {r: getattr(self, r) for r in ROLES if getattr(self, r)}


class Config(Section):
    name: str = "run"
    data: DataConfig
    synth: SynthConfig | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    backbones: dict[str, Backbone] = Field(default_factory=lambda: {"vit-w2v": Backbone()})

    def packed_features(self) -> list[tuple[str, int]]:
        """Every (feature folder, steps) pair the backbones need, in a stable order."""
        pairs = {
            (feature, self.cache.steps_for(role))
            for backbone in self.backbones.values()
            for role, feature in backbone.features().items()
        }
        return sorted(pairs)


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
        _set_key(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
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
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _known_keys(Config, loc), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"config key {key!r}: unknown key{hint}")
        elif item["type"] == "missing":
            lines.append(f"config key {key!r}: required but not given")
        else:
            lines.append(f"config key {key!r}: {item['msg']} (got {item.get('input')!r})")
    return f"{source}: invalid config\n  " + "\n  ".join(lines)


def config_from_dict(tree: dict, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, validate; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return config_from_dict(apply_overrides(tree, list(overrides or [])), str(path))
