"""Models: shapes and range, masks, missing-modality tokens, modality dropout, registry."""

from __future__ import annotations

import pytest
import torch

from taemi.losses import MixedLoss, ccc_loss, gate_loss, mse_loss, pearson_loss
from taemi.models import create_model, list_models, model_parameters
from taemi.models.layers import GateIntensityHead, drop_modalities, take_gate_logits

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


BUILT_IN = list_models()  # at collection: before any test loads a plugin's models


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_model_gives_six_values_in_unit_range(name: str) -> None:
    model = build(name)
    out = model(make_batch())
    assert out.shape == (6, 6) and ((out >= 0) & (out <= 1)).all()
    model.train()
    MixedLoss({"mse": 1, "pearson": 1})(model(make_batch()), torch.rand(6, 6)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ["taemi", "taemi_paper", "fusion", "unimodal_visual",
                                  "gru_visual"])
def test_masked_steps_do_not_matter(name: str) -> None:
    model = build(name)
    batch = make_batch()
    changed = dict(batch)
    changed["visual"] = torch.where(batch["visual_valid"][..., None], batch["visual"], 99.0)
    assert torch.allclose(model(batch), model(changed), atol=1e-6)


MISSING_TOKENS = {  # where each model keeps its missing-modality token of a role
    "taemi": lambda model, role: model.embed[role].missing_token,
    "taemi_paper": lambda model, role: model.missing[role],  # in the input space
    "taemi_paper+projection": lambda model, role: model.missing[role],
}


@pytest.mark.parametrize("name", list(MISSING_TOKENS))
@pytest.mark.parametrize("role", ["text", "visual", "audio"])
def test_missing_modality_acts_only_through_its_token(name: str, role: str) -> None:
    torch.manual_seed(0)
    model_name, _, option = name.partition("+")
    model = create_model(model_name, dims=DIMS, **SMALL,
                         **({option: True} if option else {})).eval()
    batch = make_batch()
    batch[f"{role}_missing"][:] = True
    other = dict(batch)
    other[role] = torch.randn_like(batch[role]) * 5
    other[f"{role}_valid"] = torch.ones_like(batch[f"{role}_valid"])
    before = model(batch)
    assert torch.allclose(before, model(other), atol=1e-6)  # the features are not seen
    token = MISSING_TOKENS[name](model, role)
    with torch.no_grad():  # (a constant shift would vanish in the next LayerNorm)
        token.add_(torch.randn(token.shape))
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


@pytest.mark.parametrize("name", ["taemi", "taemi_paper", "unimodal_audio"])
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


# ----------------------------------------------------------------------------- taemi_paper


def test_paper_text_is_one_global_query() -> None:
    """The published query is one vector per clip: the order of the words cannot matter
    (it does for the kit's TAEMI, whose word tokens carry time codes)."""
    batch = make_batch()
    batch["text_valid"][:] = True
    shuffled = dict(batch)
    shuffled["text"] = batch["text"][:, torch.randperm(STEPS["text"])]
    with torch.no_grad():
        paper, kit = build("taemi_paper"), build("taemi")
        torch.testing.assert_close(paper(batch), paper(shuffled))
        assert not torch.allclose(kit(batch), kit(shuffled), atol=1e-5)


def test_paper_one_modality_dropout_rate() -> None:
    model = create_model("taemi_paper", dims=DIMS, modality_dropout=0.25, **SMALL)
    assert model.modality_dropout == {"text": 0.25, "visual": 0.25, "audio": 0.25}
    with pytest.raises(ValueError, match="one modality_dropout rate"):
        create_model("taemi_paper", dims=DIMS, modality_dropout={"text": 0.1}, **SMALL)


# ----------------------------------------------------------------------------- gate head

GATED = [n for n in BUILT_IN if "head" in model_parameters(n)]


def test_every_model_with_an_mlp_head_offers_the_gate() -> None:
    assert set(GATED) == set(BUILT_IN) - {"linear_audio", "taemi_prototypes"}


def test_prototype_head_mixes_its_label_vectors() -> None:
    """Each output is a convex mixture of the learnt vectors: inside their range per
    target, and exactly one vector when its weight dominates."""
    from taemi.models.prototypes import PrototypeHead

    torch.manual_seed(0)
    model = create_model("taemi_prototypes", dims=DIMS, prototypes=5, **SMALL).eval()
    head = model.head
    assert isinstance(head, PrototypeHead) and head.vectors.shape == (5, 6)
    table = torch.sigmoid(head.vectors.detach())
    out = model(make_batch())
    assert ((out >= table.min(0).values - 1e-6) & (out <= table.max(0).values + 1e-6)).all()
    with torch.no_grad():
        head.weights[-1].weight.zero_()
        head.weights[-1].bias.copy_(torch.tensor([0.0, 0.0, 40.0, 0.0, 0.0]))
    torch.testing.assert_close(model(make_batch()), table[2].expand(6, 6))


@pytest.mark.parametrize("name", GATED)
def test_gate_head_is_gate_times_intensity(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"hidden": 8} if name == "gru_visual" else dict(SMALL)
    model = create_model(name, dims=DIMS, head="gate", **kwargs).eval()
    head = next(m for m in model.modules() if isinstance(m, GateIntensityHead))
    batch = make_batch()
    out = model(batch)
    assert out.shape == (6, 6) and ((out >= 0) & (out <= 1)).all()
    assert take_gate_logits(model) is None  # eval keeps nothing
    with torch.no_grad():  # a gate pushed shut closes every output, whatever the intensity
        head.gate[-1].bias.fill_(-30.0)
    assert model(batch).max() < 1e-9
    model.train()
    model(batch)
    logits = take_gate_logits(model)
    assert logits.shape == (6, 6) and take_gate_logits(model) is None  # taken once


def test_gate_loss_teaches_the_gate() -> None:
    torch.manual_seed(0)
    model = create_model("taemi_paper", dims=DIMS, head="gate", **SMALL).train()
    y = torch.rand(6, 6) * (torch.rand(6, 6) > 0.5)
    loss_fn = MixedLoss({"mse": 1.0, "gate": 0.3})
    pred = model(make_batch())
    logits = take_gate_logits(model)
    loss = loss_fn(pred, y, logits)
    torch.testing.assert_close(loss, mse_loss(pred, y) + 0.3 * gate_loss(logits, y))
    torch.testing.assert_close(loss_fn(pred, y), mse_loss(pred, y))  # no logits: no term
    loss.backward()
    assert model.head.gate[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="head 'gated'"):
        create_model("taemi", dims=DIMS, head="gated")


def test_the_torch_free_catalog_is_the_registry() -> None:
    """`taemi.catalog` (what config validation reads) says what the registry says."""
    from taemi import catalog
    from taemi.models import model_requires

    assert sorted(catalog.BUILTIN) == BUILT_IN
    for name in BUILT_IN:
        registered = {k: v for k, v in model_parameters(name).items() if k != "dims"}
        assert catalog.BUILTIN[name][0] == registered, name
        assert catalog.BUILTIN[name][1] == model_requires(name), name


def test_validating_a_config_does_not_import_torch() -> None:
    import subprocess
    import sys
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "configs" / "recommended.yaml"
    code = ("import sys; from taemi.config import load_config; "
            f"load_config({str(demo)!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
