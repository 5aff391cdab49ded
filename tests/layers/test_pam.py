"""Tests for PAM (MPANet pattern alignment module) against a loop over parts (Eq. 4-6)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vireid_layers.layers.pam import PAM, PAMOutput

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws from a freshly seeded global generator: reproducible values, no flaky tolerances."""
    torch.manual_seed(0)


def reference_pam(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over parts: M_k = sigmoid(a_k . F + b_k), p_k = mean over all h*w positions of M_k * F."""
    n, c, h, w = x.shape
    parts = weight.shape[0]
    masks = torch.empty(n, parts, h, w, dtype=x.dtype)
    features = []
    for k in range(parts):
        logit = (weight[k].view(1, c, 1, 1) * x).sum(1) + bias[k]
        masks[:, k] = 1 / (1 + torch.exp(-logit))
        weighted = masks[:, k : k + 1] * x  # P_k = M_k (.) F
        features.append(weighted.sum(dim=(2, 3)) / (h * w))  # g(P_k): not divided by the mask mass
    features.append(x.sum(dim=(2, 3)) / (h * w))  # g(F), appended last
    return torch.cat(features, dim=1), masks


def conv_params(m: PAM) -> tuple[torch.Tensor, torch.Tensor]:
    return m.generator.weight.detach()[:, :, 0, 0], m.generator.bias.detach()


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape_mpanet() -> None:
    """PAM on the 2048x24x8 stage-4 map of a 384x128 input with l = 6 gives the 14,336-d feature."""
    m = PAM(2048, num_parts=6)
    x = torch.randn(2, 2048, 24, 8)
    out = m(x)
    assert isinstance(out, PAMOutput)
    assert out.features.shape == (2, 14336) and m.out_features == 14336
    assert out.masks.shape == (2, 6, 24, 8)
    assert torch.isfinite(out.features).all() and ((out.masks > 0) & (out.masks < 1)).all()
    features, masks = out  # a plain tuple too
    assert features is out.features and masks is out.masks


def test_init() -> None:
    torch.manual_seed(0)
    m = PAM(2048)
    assert sorted(n for n, _ in m.named_parameters()) == ["generator.bias", "generator.weight"]
    assert m.generator.weight.shape == (6, 2048, 1, 1)
    assert torch.equal(m.generator.bias, torch.zeros(6))
    bound = 2048**-0.5  # PyTorch's default Kaiming-uniform(a=sqrt(5)) bound 1/sqrt(fan_in)
    weight = m.generator.weight.detach()
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.95 * bound
    torch.testing.assert_close(m.pattern_maps(torch.zeros(1, 2048, 2, 2)), torch.full((1, 6, 2, 2), 0.5))
    with torch.no_grad():
        m.generator.bias.fill_(3.0)
    m.reset_parameters()
    assert torch.equal(m.generator.bias, torch.zeros(6))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("parts", "size"), [(6, (6, 4)), (1, (3, 5)), (3, (1, 1))])
def test_reference(parts: int, size: tuple[int, int]) -> None:
    torch.manual_seed(parts)
    m = PAM(8, num_parts=parts, dtype=F64)
    with torch.no_grad():
        m.generator.bias.normal_()
    x = torch.randn(3, 8, *size, dtype=F64)
    features, masks = m(x)
    ref_features, ref_masks = reference_pam(x, *conv_params(m))
    torch.testing.assert_close(features, ref_features)
    torch.testing.assert_close(masks, ref_masks)


def test_layout_global_last_and_mean_not_mask_normalised() -> None:
    """Constant maps sigma(b): p_k = sigma(b_k) * GAP(F), the global GAP(F) occupies the last C entries."""
    m = PAM(4, num_parts=3)
    with torch.no_grad():
        m.generator.weight.zero_()
        m.generator.bias.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    x = torch.randn(2, 4, 5, 3)
    features, masks = m(x)
    gap = x.mean(dim=(2, 3))
    torch.testing.assert_close(features[:, -4:], gap)
    for k, b in enumerate([-1.0, 0.0, 2.0]):
        torch.testing.assert_close(features[:, 4 * k : 4 * (k + 1)], torch.sigmoid(torch.tensor(b)) * gap)
        torch.testing.assert_close(masks[:, k], torch.full((2, 5, 3), float(torch.sigmoid(torch.tensor(b)))))


def test_official_state_dict_loads() -> None:
    sd = {"spatial_attention.weight": torch.randn(6, 32, 1, 1), "spatial_attention.bias": torch.randn(6)}
    m = PAM(32)
    result = m.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(m.generator.weight, sd["spatial_attention.weight"])
    torch.testing.assert_close(m.generator.bias, sd["spatial_attention.bias"])

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pam = PAM(32)

    head = Head()
    head.load_state_dict({f"pam.{k}": v for k, v in sd.items()}, strict=True)
    torch.testing.assert_close(head.pam.generator.bias, sd["spatial_attention.bias"])
    PAM(32).load_state_dict(m.state_dict(), strict=True)


# --------------------------------------------------------------------------------------------- gradients


def test_gradcheck() -> None:
    torch.manual_seed(0)
    m = PAM(3, num_parts=2, dtype=F64)
    x = torch.randn(2, 3, 2, 2, dtype=F64, requires_grad=True)
    weight = m.generator.weight.detach().clone().requires_grad_(True)
    bias = torch.randn(2, dtype=F64, requires_grad=True)

    def fn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.func.functional_call(m, {"generator.weight": weight, "generator.bias": bias}, (x,))
        return out.features, out.masks

    assert torch.autograd.gradcheck(fn, (x, weight, bias))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20)
@given(n=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 4), parts=st.integers(1, 6), data=st.data())
def test_batch_permutation_equivariance(n: int, h: int, w: int, parts: int, data: st.DataObject) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    torch.manual_seed(n * 10 + h)
    m = PAM(4, num_parts=parts, dtype=F64)
    x = torch.randn(n, 4, h, w, dtype=F64) * 3
    features, masks = m(x)
    assert torch.isfinite(features).all() and features.shape == (n, (parts + 1) * 4)
    permuted = m(x[perm])
    torch.testing.assert_close(permuted.features, features[perm])
    torch.testing.assert_close(permuted.masks, masks[perm])


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((0,), {}, "channels"),
        ((False,), {}, "channels"),
        ((8,), {"num_parts": 0}, "num_parts"),
        ((8,), {"num_parts": 2.0}, "num_parts"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PAM(*args, **kwargs)


def test_exception_forward() -> None:
    m = PAM(8)
    with pytest.raises(ValueError, match=r"`x`.*\(N, 8, H, W\).*\(2, 8, 6\)"):
        m(torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match=r"`x`.*\(2, 4, 6, 3\)"):
        m(torch.randn(2, 4, 6, 3))
    with pytest.raises(TypeError, match="`x`"):
        m([1.0, 2.0])


# --------------------------------------------------------------------------------------- compile / dtype


def test_compile() -> None:
    torch._dynamo.reset()  # fresh guards: no recompile budget shared with other tests
    torch.manual_seed(0)
    m = PAM(16, num_parts=3)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.randn(2, 16, 6, 3)
    out, ref = compiled(x), m(x)
    torch.testing.assert_close(out.features, ref.features)
    torch.testing.assert_close(out.masks, ref.masks)


def test_bf16_autocast_finite() -> None:
    torch.manual_seed(0)
    m = PAM(64)
    x = torch.randn(2, 64, 24, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        out_bf16 = m(x.bfloat16())
    assert out.features.dtype == torch.float32 and torch.isfinite(out.features).all()
    assert out_bf16.features.dtype == torch.bfloat16 and out_bf16.masks.dtype == torch.bfloat16
    torch.testing.assert_close(out.features, m(x).features, atol=0.02, rtol=0.02)
    out.features.sum().backward()
    assert torch.isfinite(m.generator.weight.grad).all()


def test_dtype_follows_arguments() -> None:
    m = PAM(4, num_parts=2, dtype=F64, device="cpu")
    out = m(torch.randn(2, 4, 3, 2, dtype=F64))
    assert out.features.dtype == F64 and out.masks.dtype == F64


def test_channels_last_matches_contiguous() -> None:
    m = PAM(16, num_parts=3)
    x = torch.randn(2, 16, 6, 3)
    a, b = m(x.to(memory_format=torch.channels_last)), m(x)
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.masks, b.masks)


def test_extra_repr() -> None:
    assert PAM(2048).extra_repr() == "2048, num_parts=6"
    assert repr(PAM(64, num_parts=4)).startswith("PAM(\n  64, num_parts=4\n")
