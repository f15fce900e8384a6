"""Blocks shared by the models: stream embedding with missing tokens, modality dropout,
relative-time encoding, masked pooling and the output head."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ROLES = ("text", "visual", "audio")
N_TARGETS = 6


def step_times(valid: Tensor) -> Tensor:
    """Each step's relative time in its clip, (k + 0.5) / n_valid, so that a word at 40% of
    a transcript and a frame at 40% of a video get the same time code."""
    n_valid = valid.sum(dim=1, keepdim=True).clamp(min=1)
    # counted over valid steps only: an invalid step inside a clip (a NaN row) does not
    # shift the time of the steps after it
    return (valid.cumsum(dim=1).float() - 0.5).clamp(min=0) / n_valid


class TimeEncoding(nn.Module):
    """Fourier features of relative time in [0, 1], projected to the model width."""

    def __init__(self, d_model: int, n_freq: int = 8) -> None:
        super().__init__()
        self.register_buffer("freq", math.pi * 2.0 ** torch.arange(n_freq).float() / 2,
                             persistent=False)
        self.proj = nn.Linear(2 * n_freq, d_model)

    def forward(self, times: Tensor) -> Tensor:
        angles = times[..., None] * self.freq
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))


class StreamEmbedding(nn.Module):
    """Project one modality to the model width and add its time code; a learnable
    missing-modality token stands in for every masked step and for a wholly absent
    modality, so the model never sees zeros it could mistake for data."""

    def __init__(self, in_dim: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, d_model)
        self.time = TimeEncoding(d_model)
        self.missing_token = nn.Parameter(torch.randn(d_model) * 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor, missing: Tensor) -> tuple[Tensor, Tensor]:
        """Return the embedded steps (B, K, d) and the mask of real steps (B, K)."""
        present = valid & ~missing[:, None]
        h = self.dropout(self.proj(self.norm(x)) + self.time(step_times(valid)))
        h = torch.where(present[..., None], h, self.missing_token.to(h.dtype))
        return h, present


def drop_modalities(batch: dict[str, Tensor], rates: dict[str, float],
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Modality dropout: mark whole modalities missing at random, per clip and per role."""
    out = dict(batch)
    for role, rate in rates.items():
        key = f"{role}_missing"
        if rate <= 0 or key not in batch:
            continue
        missing = batch[key]
        draw = torch.rand(missing.shape, generator=generator, device="cpu").to(missing.device)
        out[key] = missing | (draw < rate)
    return out


def attendable(present: Tensor) -> Tensor:
    """Which steps attention may read (B, K): the real ones; where a clip has none (the
    modality is missing), its missing-modality tokens, so that softmax always has keys."""
    return present | ~present.any(dim=1, keepdim=True)


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    weight = mask.to(h.dtype)[..., None]
    return (h * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)


class AttentionPool(nn.Module):
    """A learned query attends over the steps; masked steps get no weight."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Linear(d_model, 1)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(h).squeeze(-1).float()
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weight = torch.softmax(scores, dim=1).to(h.dtype)
        return (weight[..., None] * h).sum(dim=1)


HEADS = ("sigmoid", "gate")


def _head_mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_in), nn.Dropout(dropout), nn.Linear(d_in, hidden), nn.GELU(),
        nn.Dropout(dropout), nn.Linear(hidden, N_TARGETS),
    )


class Head(nn.Module):
    """Pooled features -> six intensities in [0, 1]."""

    def __init__(self, d_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = _head_mlp(d_in, hidden, dropout)

    def forward(self, pooled: Tensor) -> Tensor:
        return torch.sigmoid(self.net(pooled).float())


class GateIntensityHead(nn.Module):
    """sigmoid(gate) x sigmoid(intensity), as the TAEMI authors' optional head.

    Most labels are exact zeros for some target; one sigmoid must push its logit far
    down to say 0, where here the gate says "absent" and the intensity says "how much"
    apart. With `train.loss.gate` the gate is also taught which targets are non-zero
    (binary cross-entropy on its logits), which is the authors' recipe: the logits of the
    last training forward are kept for that loss (`take_gate_logits`).
    """

    def __init__(self, d_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate = _head_mlp(d_in, hidden, dropout)
        self.intensity = _head_mlp(d_in, hidden, dropout)
        self.gate_logits: Tensor | None = None

    def forward(self, pooled: Tensor) -> Tensor:
        gate = self.gate(pooled).float()
        self.gate_logits = gate if self.training else None
        return torch.sigmoid(gate) * torch.sigmoid(self.intensity(pooled).float())


def make_head(kind: str, d_in: int, hidden: int, dropout: float) -> nn.Module:
    """The output head every model ends in: `sigmoid` (one MLP) or `gate` (gate x intensity)."""
    if kind == "sigmoid":
        return Head(d_in, hidden, dropout)
    if kind == "gate":
        return GateIntensityHead(d_in, hidden, dropout)
    raise ValueError(f"head {kind!r}: choose one of {', '.join(HEADS)}")


def take_gate_logits(model: nn.Module) -> Tensor | None:
    """The gate logits of the model's last training forward (then forgotten); None when
    the model has no gate x intensity head or was not just run in training mode."""
    for module in model.modules():
        if isinstance(module, GateIntensityHead) and module.gate_logits is not None:
            logits, module.gate_logits = module.gate_logits, None
            return logits
    return None


def has_gate_head(model: nn.Module) -> bool:
    return any(isinstance(m, GateIntensityHead) for m in model.modules())


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, mult * d_model), nn.GELU(),
            nn.Dropout(dropout), nn.Linear(mult * d_model, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class SelfAttentionBlock(nn.Module):
    """Pre-norm self-attention + feed-forward; masked keys are ignored."""

    def __init__(self, d_model: int, heads: int, ffn_mult: int, dropout: float,
                 attn_dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=attn_dropout,
                                          batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, ffn_mult, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        pad = None if mask is None else ~mask
        out, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)
        return self.ffn(x + self.drop(out))
