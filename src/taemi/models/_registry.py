"""The model registry: a model is a registered function; `create_model` builds any of them.

As in timm, `@register_model` on a function `name(**kwargs) -> nn.Module` makes it
buildable by name from a config, and its signature is the model's parameter list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from taemi.identity import code_digest

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *,
                   requires: tuple[str, ...] = ()) -> Callable:
    """Register `fn` under its name; `requires`: the modalities it cannot do without (a
    backbone without one of them is a config error, not a model trained to a constant).
    Use as `@register_model` or `@register_model(requires=("audio",))`."""
    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        fn.requires = tuple(requires)
        _MODELS[fn.__name__] = fn
        return fn

    return register if fn is None else register(fn)


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
    return code_digest(get_model_fn(name))


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
    return get_model_fn(name)(**kwargs)
