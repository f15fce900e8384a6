"""Models: TAEMI and the baselines it is measured against, all built by `create_model`.

Every model takes one batch, a dict with, for each role in ("text", "visual", "audio"):

    batch[role]            (B, K, D) float   the cached, fixed-length steps
    batch[role + "_valid"] (B, K) bool       which steps hold data
    batch[role + "_missing"] (B,) bool       the whole modality is absent for this clip

and returns (B, 6) values in [0, 1], one per target. `dims` and `steps` give each role's
feature width and step count (a role a backbone lacks has width 1 and is always missing).

Every model with an MLP head takes `head`: "sigmoid" (the default) or "gate", the TAEMI
authors' gate x intensity head (`layers.GateIntensityHead`). `taemi_paper` is TAEMI as
its authors published it (`paper.py`); `taemi` is the kit's own variant (`taemi.py`), and
`taemi_prototypes` that TAEMI ending in a mixture over learnt label vectors
(`prototypes.py`).

A team's own model is a `@register_model` function in a file of its own, named in the
config's `plugins:` (`taemi.plugins`), or in an installed package's `taemi.models` entry
point; it is built, keyed, trained and stacked like these.
"""

from taemi.models import baselines, paper, prototypes, taemi  # noqa: F401  (registers them)
from taemi.models._registry import (
    ModelNameClash,
    ModelOutputError,
    check_output,
    create_model,
    forget_models,
    list_models,
    model_code_digest,
    model_origin,
    model_parameters,
    model_requires,
    register_model,
)

__all__ = ["ModelNameClash", "ModelOutputError", "check_output", "create_model",
           "forget_models", "list_models", "model_code_digest", "model_origin",
           "model_parameters", "model_requires", "register_model"]
