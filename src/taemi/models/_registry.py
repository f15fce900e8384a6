"""The model registry: a model is a registered function; `create_model` builds any of them.

As in timm, `@register_model` on a function `name(**kwargs) -> nn.Module` makes it
buildable by name from a config, and its signature is the model's parameter list.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import torch
from torch import nn

from taemi.identity import code_digest

_MODELS: dict[str, Callable[..., nn.Module]] = {}
# This file builds models; it is not one. Its part of every model's code digest is fixed,
# the parsed-code digest it had when code keys began (kit commit 8973a8c), so an edit here
# (a new check, a better message) retrains no finished job.
REGISTRY_DIGEST = "4cf12a17e49af777"
N_TARGETS = 6


class ModelNameClash(ValueError):
    """A second model under a name the registry holds already."""


class ModelOutputError(ValueError):
    """A model's output breaks the batch contract: (batch, 6) values in [0, 1]."""


def register_model(fn: Callable[..., nn.Module] | None = None, *,
                   requires: tuple[str, ...] = ()) -> Callable:
    """Register `fn` under its name; `requires`: the modalities it cannot do without (a
    backbone without one of them is a config error, not a model trained to a constant).
    Use as `@register_model` or `@register_model(requires=("audio",))`."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ModelNameClash(f"model {fn.__name__!r} is already registered, by "
                                 f"{model_origin(fn.__name__)}; give the function another name")
        if "dims" not in inspect.signature(fn).parameters:
            raise TypeError(f"model {fn.__name__!r} takes no `dims` argument; a model is "
                            "built as name(dims=..., **params), dims giving each role's width")
        fn.requires = tuple(requires)
        _MODELS[fn.__name__] = fn
        return fn

    return register if fn is None else register(fn)


def model_origin(name: str) -> str:
    """Where a registered model comes from, for messages: "the built-in model (file)" or
    "plugin FILE"."""
    module = sys.modules.get(get_model_fn(name).__module__)
    where = getattr(module, "__file__", None) or getattr(module, "__name__", "?")
    builtin = getattr(module, "__name__", "").startswith("taemi.models")
    return f"the built-in model in {where}" if builtin else f"plugin {where}"


def forget_models(module: str) -> list[str]:
    """Unregister every model the module `module` registered (a plugin reloaded after an
    edit, or one whose import failed half-way); the names it held."""
    names = [n for n, fn in _MODELS.items() if fn.__module__ == module]
    for name in names:
        del _MODELS[name]
    return names


def model_requires(name: str) -> tuple[str, ...]:
    """The modalities a registered model needs its backbone to have."""
    return getattr(get_model_fn(name), "requires", ())


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_parameters(name: str) -> dict[str, object]:
    """The parameters a registered model accepts, with their defaults."""
    fn = get_model_fn(name)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


def model_code_digest(name: str) -> str:
    """A digest of the registered model's source (its file and the kit's model modules it
    uses): edited model code gives its jobs a new key."""
    return code_digest(get_model_fn(name), fixed={__file__: REGISTRY_DIGEST})


def get_model_fn(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model; an unknown parameter is an error that names it."""
    known = model_parameters(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter {unknown[0]!r}; it takes "
                         f"{', '.join(sorted(known))}")
    model = get_model_fn(name)(**kwargs)
    model.registered_name = name  # for messages about its output
    return model


def check_output(model: nn.Module, out: object, rows: int) -> None:
    """A `ModelOutputError` unless `out` is a (rows, 6) tensor of finite values in [0, 1]:
    a team's model that breaks the contract is stopped at its first batch, in one line,
    not after an epoch of meaningless loss."""
    named = getattr(model, "fusion", model)  # an end-to-end model: its fusion model's name
    name = getattr(named, "registered_name", type(named).__name__)
    where = f"model {name!r} ({model_origin(name)})" if name in _MODELS else f"model {name!r}"
    expected = (f"a model returns a ({rows}, {N_TARGETS}) tensor of values in [0, 1] for a "
                f"batch of {rows} clips")
    if not isinstance(out, torch.Tensor):
        raise ModelOutputError(f"{where} returned a {type(out).__name__} on its first batch; "
                               f"{expected}")
    if tuple(out.shape) != (rows, N_TARGETS):
        raise ModelOutputError(f"{where} returned shape {tuple(out.shape)} on its first "
                               f"batch; {expected}")
    values = out.detach().float()
    if not bool(torch.isfinite(values).all()):
        raise ModelOutputError(f"{where} returned values that are not finite on its first "
                               "batch (check the features for extreme values, or lower "
                               "train.lr)")
    if values.min() < 0 or values.max() > 1:
        raise ModelOutputError(
            f"{where} returned values from {values.min().item():.3g} to "
            f"{values.max().item():.3g} on its first batch; {expected} (end it with a "
            "sigmoid)")
