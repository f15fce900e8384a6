"""TAEMI as its authors published it, on the kit's packed features (`taemi_paper`).

    text word pieces ─► masked mean ─► t (one global vector per clip) ─────────────────┐
    audio steps  ─► cross-attention (query t, padding masked) ─► from_audio ───────────┼─► concat
    visual steps ─► cross-attention (query t, padding masked) ─► from_visual ──────────┘    │
                                                        MLP head (or gate x intensity) ◄────┘

What follows the authors' code (ZZZRamsey/CVPR_2026_ABAW_10th_EMI, abaw/model_ablation.py,
read, not copied): the query is the text's single global vector; each cross-attention
projects query, keys and values to `d_model` and layer-norms queries and keys; padding is
masked as keys; one learnable missing token per modality lives in the input space and
replaces the whole modality (so a missing stream offers only its token); one modality
dropout rate for all three modalities; fusion is the concatenation [t, from_audio,
from_visual] followed by an MLP; `head: gate` is their gate x intensity head; defaults
are theirs (`d_model` 512, 4 heads, dropout 0.1, modality dropout 0.1, no input
projection).

What differs, and why:
- The global vector is the masked mean of the packed word-piece rows, not the encoder's
  [CLS] output: the kit's text features hold word pieces only (`taemi extract text` drops
  the special tokens), and the pack averages them into `cache.steps.text` steps. For a
  mean-pooling sentence encoder (all-MiniLM, the kit's default) the mean of the word
  pieces is the sentence embedding, less its special tokens. With end-to-end training
  (`taemi.endtoend`) the encoder's own pooled output is used instead.
- The encoders are frozen features here (the packed cache); the authors fine-tune the
  audio and text encoders. `taemi.endtoend` is the kit's path for that.
- The head ends in a sigmoid (the kit's models all give values in [0, 1]); the authors'
  default head is unbounded, with sigmoid as an option. The kit's head also layer-norms
  and drops out its input before the MLP (one head for every model).
- The audio padding mask is the pack's valid steps, not a length re-derived from the
  waveform; streams are the pack's `cache.steps` adaptive-average-pooled steps, not the
  first 12 s of audio and the first 400 frames.
- `projection: true` is the authors' `use_projection` (LayerNorm + Linear + GELU per
  modality before attention); their vision temporal adapter and self-attention fusion
  (ablation flags, off in their defaults) are not built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from taemi.models._registry import register_model
from taemi.models.layers import ROLES, attendable, drop_modalities, make_head, masked_mean


class GlobalQueryAttention(nn.Module):
    """One query vector per clip attends over a stream's steps; masked keys get no weight."""

    def __init__(self, query_dim: int, kv_dim: int, d_model: int, heads: int,
                 dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.k = nn.Linear(query_dim, d_model), nn.Linear(kv_dim, d_model)
        self.v, self.out = nn.Linear(kv_dim, d_model), nn.Linear(d_model, d_model)
        self.norm_q, self.norm_k = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, query: Tensor, steps: Tensor, keys: Tensor) -> Tensor:
        """query (B, Dq), steps (B, T, Dkv), keys (B, T) bool: which steps may be read."""
        b, t, _ = steps.shape
        q = self.norm_q(self.q(query)).view(b, self.heads, 1, -1)
        k = self.norm_k(self.k(steps)).view(b, t, self.heads, -1).transpose(1, 2)
        v = self.v(steps).view(b, t, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :],
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.reshape(b, -1))


class PaperTAEMI(nn.Module):
    def __init__(self, dims: dict[str, int], d_model: int = 512, heads: int = 4,
                 dropout: float = 0.1, modality_dropout: float = 0.1,
                 projection: bool = False, head: str = "sigmoid") -> None:
        super().__init__()
        if not isinstance(modality_dropout, int | float) or not 0 <= modality_dropout < 1:
            raise ValueError(f"taemi_paper takes one modality_dropout rate in [0, 1) for all "
                             f"three modalities (the published design), got {modality_dropout!r}")
        self.modality_dropout = {role: float(modality_dropout) for role in ROLES}
        self.missing = nn.ParameterDict({r: nn.Parameter(torch.randn(dims[r]) * 0.02)
                                         for r in ROLES})
        self.project = nn.ModuleDict({
            r: nn.Sequential(nn.LayerNorm(dims[r]), nn.Linear(dims[r], d_model), nn.GELU())
            for r in ROLES}) if projection else None
        width = {r: d_model if projection else dims[r] for r in ROLES}
        self.attend = nn.ModuleDict({
            r: GlobalQueryAttention(width["text"], width[r], d_model, heads, dropout)
            for r in ("audio", "visual")})
        self.head = make_head(head, width["text"] + 2 * d_model, d_model, dropout)

    def _stream(self, batch: dict[str, Tensor], role: str) -> tuple[Tensor, Tensor]:
        """The role's steps with the missing token wherever nothing real is, and its keys."""
        present = batch[f"{role}_valid"] & ~batch[f"{role}_missing"][:, None]
        x = torch.where(present[..., None], batch[role], self.missing[role].to(batch[role].dtype))
        if self.project is not None:
            x = self.project[role](x)
        return x, attendable(present)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        if self.training:
            batch = drop_modalities(batch, self.modality_dropout)
        words, keys = self._stream(batch, "text")
        # the global vector: the mean of the real word pieces; a clip without speech (or
        # whose text was dropped) averages its missing tokens, i.e. is the missing token
        text = masked_mean(words, keys)
        pooled = [text]
        for role in ("audio", "visual"):
            steps, keys = self._stream(batch, role)
            pooled.append(self.attend[role](text, steps, keys))
        return self.head(torch.cat(pooled, dim=-1))


@register_model
def taemi_paper(dims: dict[str, int], d_model: int = 512, heads: int = 4, dropout: float = 0.1,
                modality_dropout: float = 0.1, projection: bool = False,
                head: str = "sigmoid") -> PaperTAEMI:
    """TAEMI as published: global text query, masked dual cross-attention, concat + MLP.
    `head: gate` is the authors' gate x intensity head (train with `train.loss.gate`)."""
    return PaperTAEMI(dims, d_model, heads, dropout, modality_dropout, projection, head)
