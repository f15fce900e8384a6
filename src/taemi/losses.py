"""Training losses: MSE, 1 - Pearson per target over the batch, CCC, and weighted mixes.

Pearson is what the challenge scores, but alone it ignores scale and offset; MSE alone
chases the many exact zeros. The kit's default mixes the two. `gate` weighs the binary
cross-entropy that teaches a gate x intensity head which targets are non-zero (the TAEMI
authors' recipe); it needs a model built with `head: gate`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

EPS = 1e-6


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    return torch.mean((pred - target) ** 2)


def pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - mean over targets of the batch Pearson r."""
    p = pred - pred.mean(dim=0)
    t = target - target.mean(dim=0)
    r = (p * t).sum(dim=0) / (p.norm(dim=0) * t.norm(dim=0) + EPS)
    return 1 - r.mean()


def ccc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - mean over targets of Lin's concordance correlation coefficient."""
    pm, tm = pred.mean(dim=0), target.mean(dim=0)
    pv, tv = pred.var(dim=0, unbiased=False), target.var(dim=0, unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean(dim=0)
    return 1 - (2 * cov / (pv + tv + (pm - tm) ** 2 + EPS)).mean()


def gate_loss(gate_logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of the gate's logits against "this target is not zero"."""
    return F.binary_cross_entropy_with_logits(gate_logits.float(), (target > 0).float())


LOSSES = {"mse": mse_loss, "pearson": pearson_loss, "ccc": ccc_loss}
GATE = "gate"


class MixedLoss:
    """A weighted sum of named losses, e.g. MixedLoss({"mse": 1.0, "pearson": 0.5})."""

    def __init__(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(LOSSES) - {GATE}
        if unknown:
            raise ValueError(f"unknown loss {sorted(unknown)[0]!r}; losses: "
                             f"{sorted([*LOSSES, GATE])}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("loss weights must include at least one positive weight")
        self.weights = {k: float(w) for k, w in weights.items() if w}

    def __call__(self, pred: Tensor, target: Tensor,
                 gate_logits: Tensor | None = None) -> Tensor:
        """`gate_logits`: a gate x intensity head's (`take_gate_logits`); without them the
        `gate` term is left out (as for validation predictions)."""
        pred, target = pred.float(), target.float()
        total = sum(w * LOSSES[name](pred, target) for name, w in self.weights.items()
                    if name != GATE)
        if GATE in self.weights and gate_logits is not None:
            total = total + self.weights[GATE] * gate_loss(gate_logits, target)
        return total
