"""Models: shapes and range, masks, missing-modality tokens, modality dropout, registry."""

from __future__ import annotations

import pytest
import torch

from taemi.losses import MixedLoss, ccc_loss, mse_loss, pearson_loss
from taemi.models import create_model, list_models
from taemi.models.layers import drop_modalities

DIMS = {"text": 12, "visual": 10, "audio": 14}
STEPS = {"text": 5, "visual": 7, "audio": 9}
SMALL = {"d_model": 16, "heads": 2}


def make_batch(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for role, dim in DIMS.items():
        k = STEPS[role]
        batch[role] = torch.randn(n, k, dim, generator=g)
        lengths = torch.randint(1, k + 1, (n,), generator=g)
        batch[f"{role}_valid"] = torch.arange(k)[None] < lengths[:, None]
        batch[f"{role}_missing"] = torch.zeros(n, dtype=torch.bool)
    return batch


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {} if name in ("linear_audio", "gru_visual") else dict(SMALL)
    if name == "gru_visual":
        kwargs = {"hidden": 8}
    return create_model(name, dims=DIMS, **kwargs).eval()


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_six_values_in_unit_range(name: str) -> None:
    model = build(name)
    out = model(make_batch())
    assert out.shape == (6, 6) and ((out >= 0) & (out <= 1)).all()
    model.train()
    MixedLoss({"mse": 1, "pearson": 1})(model(make_batch()), torch.rand(6, 6)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ["taemi", "fusion", "unimodal_visual", "gru_visual"])
def test_masked_steps_do_not_matter(name: str) -> None:
    model = build(name)
    batch = make_batch()
    changed = dict(batch)
    changed["visual"] = torch.where(batch["visual_valid"][..., None], batch["visual"], 99.0)
    assert torch.allclose(model(batch), model(changed), atol=1e-6)


@pytest.mark.parametrize("role", ["text", "visual", "audio"])
def test_missing_modality_acts_only_through_its_token(role: str) -> None:
    model = build("taemi")
    batch = make_batch()
    batch[f"{role}_missing"][:] = True
    other = dict(batch)
    other[role] = torch.randn_like(batch[role]) * 5
    other[f"{role}_valid"] = torch.ones_like(batch[f"{role}_valid"])
    before = model(batch)
    assert torch.allclose(before, model(other), atol=1e-6)  # the features are not seen
    with torch.no_grad():  # (a constant shift would vanish in the next LayerNorm)
        model.embed[role].missing_token.add_(torch.randn(16))
    assert not torch.allclose(before, model(batch), atol=1e-4)  # the token is


def test_modality_dropout_only_in_training() -> None:
    no_dropout = {"dropout": 0.0, "attn_dropout": 0.0, "head_dropout": 0.0}
    model = create_model("taemi", dims=DIMS, modality_dropout={"visual": 1.0, "text": 0,
                                                                "audio": 0}, **SMALL, **no_dropout)
    batch = make_batch()
    noisy = dict(batch)
    noisy["visual"] = batch["visual"] + torch.randn_like(batch["visual"])
    model.train()
    assert torch.allclose(model(batch), model(noisy), atol=1e-6)
    model.eval()
    assert not torch.allclose(model(batch), model(noisy), atol=1e-4)


def test_drop_modalities_rate() -> None:
    torch.manual_seed(0)
    batch = {"audio_missing": torch.zeros(20_000, dtype=torch.bool)}
    batch["audio_missing"][:10] = True
    out = drop_modalities(batch, {"audio": 0.3})
    assert out["audio_missing"][:10].all()  # already missing stays missing
    assert abs(out["audio_missing"].float().mean().item() - 0.3) < 0.02
    assert not batch["audio_missing"][10:].any()  # the input batch is not modified


def test_fusion_survives_all_modalities_missing() -> None:
    batch = make_batch()
    for role in DIMS:
        batch[f"{role}_missing"][:] = True
    assert torch.isfinite(build("fusion")(batch)).all()


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown model 'tami'"):
        create_model("tami", dims=DIMS)
    with pytest.raises(ValueError, match="no parameter 'd_modl'"):
        create_model("taemi", dims=DIMS, d_modl=8)


def test_losses() -> None:
    torch.manual_seed(0)
    y = torch.rand(64, 6)
    assert mse_loss(y, y) == 0
    assert pearson_loss(y, y).item() == pytest.approx(0, abs=1e-5)
    assert pearson_loss(2 * y + 1, y).item() == pytest.approx(0, abs=1e-5)  # scale-free
    assert ccc_loss(y, y).item() == pytest.approx(0, abs=1e-5)
    assert ccc_loss(2 * y + 1, y).item() > 0.5  # CCC is not
    assert MixedLoss({"mse": 1, "ccc": 2})(y + 0.1, y).item() == pytest.approx(
        (mse_loss(y + 0.1, y) + 2 * ccc_loss(y + 0.1, y)).item())
    with pytest.raises(ValueError, match="unknown loss"):
        MixedLoss({"l1": 1})


@pytest.mark.parametrize("name", ["taemi", "unimodal_audio"])
def test_padding_never_reaches_attention(name: str) -> None:
    """A clip gives the same output however much padding its pack adds after its steps."""
    torch.manual_seed(0)
    dims = {"text": 6, "visual": 5, "audio": 4}
    model = create_model(name, dims=dims, d_model=16, heads=2).eval()
    steps = {"text": 3, "visual": 4, "audio": 5}

    def batch(pad: int) -> dict:
        torch.manual_seed(1)
        out = {}
        for role, d in dims.items():
            x = torch.zeros(2, steps[role] + pad, d)
            x[:, :steps[role]] = torch.randn(2, steps[role], d)
            valid = torch.zeros(2, steps[role] + pad, dtype=torch.bool)
            valid[:, :steps[role]] = True
            out.update({role: x, f"{role}_valid": valid,
                        f"{role}_missing": torch.tensor([False, role == "visual"])})
        return out

    with torch.no_grad():
        torch.testing.assert_close(model(batch(0)), model(batch(7)))
