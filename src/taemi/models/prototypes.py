"""TAEMI with a prototype-mixture head (`taemi_prototypes`): labels recur.

Clips that mimic one seed video share its label vector: on the kit's generator and on
independently built data nine labelled clips in ten or more share their exact vector with
another clip, and identical vectors recur in the real data too. Instead of six free
intensities, this head predicts a mixture over `prototypes` learnt label vectors (a
softmax over them, times a table of six sigmoid intensities each), so a clip that looks
like one seed video's clips can snap to that video's vector, and one between two gets a
blend. The encoder is the kit's TAEMI (`taemi.models.taemi`); its own `head` is replaced.
Its own module, so the other models' code, hence their jobs' keys, do not change with it.

Measured at demo size (benchmarks/RESULTS.md, "per minute"): below TAEMI on every dataset
and no gain to the stack; each fold model learns its own vectors, so the pooled OOF CV
understates it (0.549 against a held-out test of 0.726 a fold model). An option to try,
not a default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from taemi.models._registry import register_model
from taemi.models.layers import N_TARGETS
from taemi.models.taemi import TAEMI


class PrototypeHead(nn.Module):
    """Pooled features -> a convex mixture of `prototypes` learnt label vectors in [0, 1]."""

    def __init__(self, d_in: int, hidden: int, dropout: float, prototypes: int) -> None:
        super().__init__()
        self.weights = nn.Sequential(
            nn.LayerNorm(d_in), nn.Dropout(dropout), nn.Linear(d_in, hidden), nn.GELU(),
            nn.Dropout(dropout), nn.Linear(hidden, prototypes))
        # spread over the cube at the start: each vector's logits ~ N(0, 1.5)
        self.vectors = nn.Parameter(1.5 * torch.randn(prototypes, N_TARGETS))

    def forward(self, pooled: Tensor) -> Tensor:
        mixture = torch.softmax(self.weights(pooled).float(), dim=-1)
        return mixture @ torch.sigmoid(self.vectors.float())


@register_model
def taemi_prototypes(dims: dict[str, int], d_model: int = 64, heads: int = 4,
                     layers: int = 2, stream_layers: int = 1, ffn_mult: int = 2,
                     dropout: float = 0.1, attn_dropout: float = 0.1,
                     head_dropout: float = 0.2, modality_dropout: dict[str, float] | None = None,
                     stream_pool: bool = True, prototypes: int = 64) -> TAEMI:
    """The kit's TAEMI ending in `PrototypeHead` (`prototypes` label vectors)."""
    model = TAEMI(dims, d_model, heads, layers, stream_layers, ffn_mult, dropout,
                  attn_dropout, head_dropout, modality_dropout, stream_pool)
    pooled = d_model * (1 + len(model.pools or {}))
    model.head = PrototypeHead(pooled, d_model, head_dropout, prototypes)
    return model
