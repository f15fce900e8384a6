"""The baselines TAEMI is measured against.

* `gru_visual`   ABAW6 organisers' visual baseline: ViT features -> GRU -> linear.
* `linear_audio` ABAW6 organisers' audio baseline: wav2vec2 mean-pooled -> linear.
* `fusion`       symmetric fusion: every step of every modality is an equal token of one
                 self-attention (with a [CLS] token); absent inputs are simply masked out.
* `unimodal_text|visual|audio`  one modality alone, encoded and attention-pooled.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from taemi.models._registry import register_model
from taemi.models.layers import (
    ROLES,
    AttentionPool,
    SelfAttentionBlock,
    StreamEmbedding,
    TimeEncoding,
    attendable,
    drop_modalities,
    make_head,
    masked_mean,
    step_times,
)


def _present(batch: dict[str, Tensor], role: str) -> Tensor:
    return batch[f"{role}_valid"] & ~batch[f"{role}_missing"][:, None]


class GRUVisual(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int = 64, dropout: float = 0.2,
                 head: str = "sigmoid") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dims["visual"])
        self.gru = nn.GRU(dims["visual"], hidden, batch_first=True)
        self.head = make_head(head, hidden, hidden, dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        out, _ = self.gru(self.norm(batch["visual"]))
        return self.head(masked_mean(out, _present(batch, "visual")))


class LinearAudio(nn.Module):
    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.linear = nn.Linear(dims["audio"], 6)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        pooled = masked_mean(batch["audio"], _present(batch, "audio"))
        return torch.sigmoid(self.linear(pooled).float())


class SymmetricFusion(nn.Module):
    """All modalities as equal tokens of one self-attention; no anchor, no missing tokens."""

    def __init__(self, dims: dict[str, int], d_model: int = 64, heads: int = 4,
                 layers: int = 2, ffn_mult: int = 2, dropout: float = 0.1,
                 attn_dropout: float = 0.1, head_dropout: float = 0.2,
                 modality_dropout: dict[str, float] | None = None,
                 head: str = "sigmoid") -> None:
        super().__init__()
        self.modality_dropout = dict(modality_dropout or {})
        self.norm_in = nn.ModuleDict({r: nn.LayerNorm(dims[r]) for r in ROLES})
        self.proj = nn.ModuleDict({r: nn.Linear(dims[r], d_model) for r in ROLES})
        self.kind = nn.Parameter(torch.randn(len(ROLES), d_model) * 0.02)
        self.time = TimeEncoding(d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.blocks = nn.ModuleList([
            SelfAttentionBlock(d_model, heads, ffn_mult, dropout, attn_dropout)
            for _ in range(layers)
        ])
        self.norm = nn.LayerNorm(d_model)
        self.head = make_head(head, d_model, d_model, head_dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        if self.training and self.modality_dropout:
            batch = drop_modalities(batch, self.modality_dropout)
        tokens, masks = [self.cls.expand(batch["text"].shape[0], -1, -1)], []
        masks.append(torch.ones_like(batch["text_missing"])[:, None])
        for k, role in enumerate(ROLES):
            valid = batch[f"{role}_valid"]
            h = self.proj[role](self.norm_in[role](batch[role])) + self.time(step_times(valid))
            tokens.append(h + self.kind[k])
            masks.append(_present(batch, role))
        x, mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x[:, 0]))


class Unimodal(nn.Module):
    """One modality: embedded (missing token included), encoded, attention-pooled."""

    def __init__(self, dims: dict[str, int], role: str, d_model: int = 64, heads: int = 4,
                 layers: int = 1, ffn_mult: int = 2, dropout: float = 0.1,
                 attn_dropout: float = 0.1, head_dropout: float = 0.2,
                 head: str = "sigmoid") -> None:
        super().__init__()
        self.role = role
        self.embed = StreamEmbedding(dims[role], d_model, dropout)
        self.blocks = nn.ModuleList([
            SelfAttentionBlock(d_model, heads, ffn_mult, dropout, attn_dropout)
            for _ in range(layers)
        ])
        self.pool = AttentionPool(d_model)
        self.head = make_head(head, d_model, d_model, head_dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        r = self.role
        h, present = self.embed(batch[r], batch[f"{r}_valid"], batch[f"{r}_missing"])
        keys = attendable(present)
        for block in self.blocks:
            h = block(h, keys)
        return self.head(self.pool(h, keys))


@register_model(requires=("visual",))
def gru_visual(dims: dict[str, int], hidden: int = 64, dropout: float = 0.2,
               head: str = "sigmoid") -> GRUVisual:
    """ABAW6 organisers' visual baseline (reported 0.09 validation mean Pearson)."""
    return GRUVisual(dims, hidden, dropout, head)


@register_model(requires=("audio",))
def linear_audio(dims: dict[str, int]) -> LinearAudio:
    """ABAW6 organisers' audio baseline (reported 0.24 validation mean Pearson)."""
    return LinearAudio(dims)


@register_model
def fusion(dims: dict[str, int], d_model: int = 64, heads: int = 4, layers: int = 2,
           ffn_mult: int = 2, dropout: float = 0.1, attn_dropout: float = 0.1,
           head_dropout: float = 0.2,
           modality_dropout: dict[str, float] | None = None,
           head: str = "sigmoid") -> SymmetricFusion:
    """Symmetric self-attention fusion of all modalities."""
    return SymmetricFusion(dims, d_model, heads, layers, ffn_mult, dropout, attn_dropout,
                           head_dropout, modality_dropout, head)


def _unimodal(role: str):
    def build(dims: dict[str, int], d_model: int = 64, heads: int = 4, layers: int = 1,
              ffn_mult: int = 2, dropout: float = 0.1, attn_dropout: float = 0.1,
              head_dropout: float = 0.2, head: str = "sigmoid") -> Unimodal:
        return Unimodal(dims, role, d_model, heads, layers, ffn_mult, dropout, attn_dropout,
                        head_dropout, head)

    build.__name__ = f"unimodal_{role}"
    build.__doc__ = f"The {role} modality alone."
    return register_model(build, requires=(role,))


unimodal_text = _unimodal("text")
unimodal_visual = _unimodal("visual")
unimodal_audio = _unimodal("audio")
