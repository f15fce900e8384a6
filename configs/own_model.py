"""A team's own model, in a file of its own: each modality's valid steps averaged, with
its missing flag, through one hidden layer to six sigmoids. `configs/own_model.yaml`
names this file in `plugins:`; the kit builds, keys, trains, measures, stacks and submits
it like a built-in model."""

import torch
from torch import nn

from taemi.models import register_model


class MeanMLP(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int, dropout: float) -> None:
        super().__init__()
        self.roles = sorted(dims)
        width = sum(dims.values()) + len(dims)  # each role's mean, and its missing flag
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 6))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for role in self.roles:
            valid = batch[role + "_valid"].unsqueeze(-1).float()  # (B, K, 1)
            mean = (batch[role] * valid).sum(1) / valid.sum(1).clamp(min=1)
            parts += [mean, batch[role + "_missing"].float().unsqueeze(-1)]
        return torch.sigmoid(self.net(torch.cat(parts, -1)))  # (B, 6) in [0, 1]


@register_model
def mean_mlp(dims: dict[str, int], hidden: int = 64, dropout: float = 0.1) -> nn.Module:
    """Built as mean_mlp(dims=..., **params): dims gives each modality's feature width."""
    return MeanMLP(dims, hidden, dropout)
