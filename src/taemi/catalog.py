"""What each built-in model takes, known without importing torch.

Validating a config (`taemi.config`) needs every model's name, parameters with their
defaults and the modalities it cannot do without; importing the models themselves costs
torch's start-up (two seconds), which commands that only read a config (`taemi validate
--config`, `taemi plan` before it keys anything, a typo caught at once) should not pay.
`tests/test_models.py` checks this table against the registry (`taemi.models`), so the two
cannot drift apart; a model that is not here (a team's own) is looked up in the registry,
after the installed packages' `taemi.models` entry points are imported (`taemi.plugins`).
"""

from __future__ import annotations

_STREAM = {"dropout": 0.1, "attn_dropout": 0.1, "head_dropout": 0.2}
_UNIMODAL = {"d_model": 64, "heads": 4, "layers": 1, "ffn_mult": 2, **_STREAM,
             "head": "sigmoid"}

# name -> (parameters and their defaults, `dims` left out; required modalities)
BUILTIN: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    "taemi": ({"d_model": 64, "heads": 4, "layers": 2, "stream_layers": 1, "ffn_mult": 2,
               **_STREAM, "modality_dropout": None, "stream_pool": True, "head": "sigmoid"},
              ()),
    "taemi_base": ({"d_model": 128, "heads": 4, "layers": 2, "stream_layers": 2,
                    "ffn_mult": 4, **_STREAM, "modality_dropout": None, "stream_pool": True,
                    "head": "sigmoid"}, ()),
    "taemi_prototypes": ({"d_model": 64, "heads": 4, "layers": 2, "stream_layers": 1,
                          "ffn_mult": 2, **_STREAM, "modality_dropout": None,
                          "stream_pool": True, "prototypes": 64}, ()),
    "taemi_paper": ({"d_model": 512, "heads": 4, "dropout": 0.1, "modality_dropout": 0.1,
                     "projection": False, "head": "sigmoid"}, ()),
    "fusion": ({"d_model": 64, "heads": 4, "layers": 2, "ffn_mult": 2, **_STREAM,
                "modality_dropout": None, "head": "sigmoid"}, ()),
    "gru_visual": ({"hidden": 64, "dropout": 0.2, "head": "sigmoid"}, ("visual",)),
    "linear_audio": ({}, ("audio",)),
    **{f"unimodal_{role}": (dict(_UNIMODAL), (role,)) for role in ("text", "visual", "audio")},
}


def model_names() -> list[str]:
    return sorted({*BUILTIN, *_registered()})


def knows(name: str) -> bool:
    """Whether `name` is a model: built in, registered by a plugin, or offered by an
    installed package (whose entry points are imported only when a name is not known)."""
    if name in BUILTIN or name in _registered():
        return True
    from taemi.plugins import load_entry_points

    load_entry_points()
    return name in _registered()


def parameters(name: str) -> dict[str, object]:
    """The model's parameters with their defaults (without `dims`)."""
    if name in BUILTIN:
        return dict(BUILTIN[name][0])
    from taemi.models import model_parameters

    return {k: v for k, v in model_parameters(name).items() if k != "dims"}


def requires(name: str) -> tuple[str, ...]:
    if name in BUILTIN:
        return BUILTIN[name][1]
    from taemi.models import model_requires

    return model_requires(name)


def _registered() -> list[str]:
    """Models registered beyond the built-in ones, where the registry is loaded already."""
    import sys

    models = sys.modules.get("taemi.models")
    return models.list_models() if models is not None else []
