"""Tests for MAM (MPANet modality alleviation module) against the explicit formula of Eq. 1-3."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vireid_layers.layers.mam import MAM

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws from a freshly seeded global generator: reproducible values, no flaky tolerances."""
    torch.manual_seed(0)


def reference_mam(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """F = m * Z + (1 - m) * IN(Z), written out per sample and per channel."""
    n, c, _, _ = x.shape
    out = torch.empty_like(x)
    for s in range(n):
        z = x[s]
        pooled = torch.stack([z[k].mean() for k in range(c)])  # g(Z)
        hidden = torch.clamp(w1 @ pooled, min=0)  # delta(W1 g(Z))
        mask = 1 / (1 + torch.exp(-(w2 @ hidden)))  # sigma(W2 ...)
        for k in range(c):
            mean = z[k].mean()
            var = ((z[k] - mean) ** 2).mean()  # biased, per instance and channel
            normed = (z[k] - mean) / torch.sqrt(var + eps)
            out[s, k] = mask[k] * z[k] + (1 - mask[k]) * normed
    return out


def weights(m: MAM) -> tuple[torch.Tensor, torch.Tensor]:
    return m.fc1.weight.detach()[:, :, 0, 0], m.fc2.weight.detach()[:, :, 0, 0]


# --------------------------------------------------------------------------------------------- smoke / shape


@pytest.mark.parametrize("channels", [1024, 2048])
def test_shape_mpanet(channels: int) -> None:
    """MAM3 after stage 3 (1024x24x8) and MAM4 after stage 4 (2048x24x8) of a 384x128 input."""
    m = MAM(channels)
    x = torch.randn(2, channels, 24, 8)
    out = m(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert m.fc1.weight.shape == (channels // 16, channels, 1, 1)
    assert m.fc2.weight.shape == (channels, channels // 16, 1, 1)
    assert m.channel_mask(x).shape == (2, channels, 1, 1)


def test_parameters_bias_free() -> None:
    m = MAM(64)
    assert sorted(n for n, _ in m.named_parameters()) == ["fc1.weight", "fc2.weight"]
    assert m.fc1.bias is None and m.fc2.bias is None
    assert list(m.buffers()) == []  # parameter-free IN without running statistics


def test_init_kaiming_fan_out() -> None:
    torch.manual_seed(0)
    m = MAM(2048)
    # Kaiming-normal, fan_out, ReLU gain: std = sqrt(2 / fan_out)
    std1, std2 = (2 / 128) ** 0.5, (2 / 2048) ** 0.5
    assert abs(float(m.fc1.weight.detach().std()) / std1 - 1) < 0.02
    assert abs(float(m.fc2.weight.detach().std()) / std2 - 1) < 0.02
    assert abs(float(m.fc1.weight.detach().mean())) < 0.05 * std1
    with torch.no_grad():
        m.fc1.weight.zero_()
        m.fc2.weight.zero_()
    m.reset_parameters()
    assert abs(float(m.fc2.weight.detach().std()) / std2 - 1) < 0.02


def test_hidden_channels_floor() -> None:
    assert MAM(40, reduction=16).fc1.out_channels == 2
    assert MAM(16, reduction=16).fc1.out_channels == 1


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("channels", "reduction", "size"), [(32, 16, (6, 4)), (8, 2, (3, 5)), (4, 4, (1, 2))])
def test_reference(channels: int, reduction: int, size: tuple[int, int]) -> None:
    torch.manual_seed(channels)
    m = MAM(channels, reduction=reduction, dtype=F64)
    x = torch.randn(3, channels, *size, dtype=F64) * 2 + 1
    torch.testing.assert_close(m(x), reference_mam(x, *weights(m)))


def previous_mam(m: MAM, x: torch.Tensor) -> torch.Tensor:
    """The hand-written formula MAM used before the fused ops: var_mean, rsqrt, then x m + IN(x) (1 - m)."""
    mask = m.channel_mask(x)
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    normed = (x - mean) * torch.rsqrt(var + m.eps)
    return x * mask + normed * (1 - mask)


@pytest.mark.parametrize("size", [(6, 4), (24, 9), (2, 1)])
def test_fused_matches_previous_formula_float64(size: tuple[int, int]) -> None:
    """F.instance_norm + lerp give the values and gradients of the previous element-wise formula."""
    m = MAM(32, reduction=4, dtype=F64)
    x = (torch.randn(3, 32, *size, dtype=F64) * 3 + 1).requires_grad_()
    out, previous = m(x), previous_mam(m, x)
    torch.testing.assert_close(out, previous, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(out)
    wrt = (x, *m.parameters())
    for have, want in zip(
        torch.autograd.grad(out, wrt, grad_out), torch.autograd.grad(previous, wrt, grad_out), strict=True
    ):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-12)


def test_instance_norm_matches_torch_and_train_eval_identical() -> None:
    torch.manual_seed(0)
    m = MAM(16, reduction=4, dtype=F64)
    x = torch.randn(4, 16, 6, 3, dtype=F64) * 3 + 2
    out_train = m.train()(x)
    out_eval = m.eval()(x)
    torch.testing.assert_close(out_train, out_eval, rtol=0, atol=0)
    # the IN part is nn.InstanceNorm2d(affine=False, track_running_stats=False)
    mask = m.channel_mask(x)
    inorm = nn.InstanceNorm2d(16, eps=1e-5, affine=False, track_running_stats=False, dtype=F64)
    torch.testing.assert_close(out_eval, x * mask + inorm(x) * (1 - mask))


def test_mask_extremes_select_identity_or_instance_norm() -> None:
    """m -> 1 keeps Z, m -> 0 gives IN(Z): checks which side of Eq. 1 the mask multiplies."""
    m = MAM(4, reduction=2)
    x = torch.rand(2, 4, 5, 3) + 0.5  # positive, so the hidden ReLU is active with positive W1
    with torch.no_grad():
        m.fc1.weight.fill_(1.0)
        m.fc2.weight.fill_(100.0)
    torch.testing.assert_close(m(x), x)
    with torch.no_grad():
        m.fc2.weight.fill_(-100.0)
    torch.testing.assert_close(m(x), nn.functional.instance_norm(x, eps=1e-5))


def test_constant_map_and_single_position_finite() -> None:
    # float64: the fused instance norm's float32 mean of a constant map is off by an ulp, which 1/sqrt(eps)
    # scales to ~3e-5 (the official InstanceNorm2d does the same); in float64 that is ~1e-13.
    m = MAM(8, reduction=2, dtype=F64)
    x = torch.full((2, 8, 4, 2), 3.0, dtype=F64)
    out = m(x)
    torch.testing.assert_close(out, x * m.channel_mask(x))  # IN of a constant map is 0
    # A single position has no instance variance: refused, as the official InstanceNorm2d refuses it.
    with pytest.raises(ValueError, match=r"`x`.*H\*W >= 2.*\(2, 8, 1, 1\)"):
        m(torch.randn(2, 8, 1, 1, dtype=F64))
    assert torch.isfinite(m(torch.randn(2, 8, 2, 1, dtype=F64))).all()  # two positions are enough


def test_official_state_dict_loads() -> None:
    torch.manual_seed(0)
    sd = {
        "channel_attention.0.weight": torch.randn(4, 64, 1, 1),
        "channel_attention.2.weight": torch.randn(64, 4, 1, 1),
    }
    m = MAM(64)
    result = m.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(m.fc1.weight, sd["channel_attention.0.weight"])
    torch.testing.assert_close(m.fc2.weight, sd["channel_attention.2.weight"])
    assert "channel_attention.0.weight" in sd  # the caller's dict is untouched

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.MAM3 = MAM(64)

    net = Backbone()
    net.load_state_dict({f"MAM3.{k}": v for k, v in sd.items()}, strict=True)
    torch.testing.assert_close(net.MAM3.fc2.weight, sd["channel_attention.2.weight"])
    # our own keys round-trip
    MAM(64).load_state_dict(m.state_dict(), strict=True)


# --------------------------------------------------------------------------------------------- gradients


def test_gradcheck() -> None:
    torch.manual_seed(0)
    m = MAM(4, reduction=2, dtype=F64)
    x = torch.randn(2, 4, 3, 2, dtype=F64, requires_grad=True)
    w1 = m.fc1.weight.detach().clone().requires_grad_(True)
    w2 = m.fc2.weight.detach().clone().requires_grad_(True)

    def fn(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, {"fc1.weight": w1, "fc2.weight": w2}, (x,))

    assert torch.autograd.gradcheck(fn, (x, w1, w2))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20)
@given(n=st.integers(1, 5), h=st.integers(2, 6), w=st.integers(1, 4), data=st.data())
def test_batch_permutation_equivariance(n: int, h: int, w: int, data: st.DataObject) -> None:
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    torch.manual_seed(n * 10 + h)
    m = MAM(8, reduction=4, dtype=F64)
    x = torch.randn(n, 8, h, w, dtype=F64) * 5
    out = m(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(m(x[perm]), out[perm])
    torch.testing.assert_close(m(x[:1]), out[:1])  # samples never interact


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0,), {}, ValueError, "channels"),
        ((True,), {}, ValueError, "channels"),
        ((8.0,), {}, ValueError, "channels"),
        ((8,), {"reduction": 0}, ValueError, "reduction"),
        ((8,), {"reduction": 16}, ValueError, "reduction"),
        ((32,), {"eps": 0.0}, ValueError, "eps"),
        ((32,), {"eps": "1e-5"}, TypeError, "eps"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        MAM(*args, **kwargs)


def test_exception_forward() -> None:
    m = MAM(8, reduction=2)
    with pytest.raises(ValueError, match=r"`x`.*\(N, 8, H, W\).*\(2, 8, 6\)"):
        m(torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match=r"`x`.*\(2, 4, 6, 3\)"):
        m(torch.randn(2, 4, 6, 3))
    with pytest.raises(TypeError, match="`x`"):
        m(torch.randn(2, 8, 6, 3).numpy())


# --------------------------------------------------------------------------------------- compile / dtype


def test_compile() -> None:
    torch._dynamo.reset()  # fresh guards: no recompile budget shared with other tests
    torch.manual_seed(0)
    m = MAM(16, reduction=4)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.randn(2, 16, 6, 3)
    torch.testing.assert_close(compiled(x), m(x))


def test_bf16_autocast_finite() -> None:
    m = MAM(64)
    x = torch.randn(2, 64, 24, 8) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        out_bf16 = m(x.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out_bf16.dtype == torch.bfloat16 and torch.isfinite(out_bf16).all()
    torch.testing.assert_close(out, m(x), atol=0.1, rtol=0.05)
    out.sum().backward()
    assert torch.isfinite(m.fc1.weight.grad).all()


def test_dtype_follows_arguments() -> None:
    m = MAM(8, reduction=2, dtype=F64, device="cpu")
    assert all(p.dtype == F64 for p in m.parameters())
    assert m(torch.randn(2, 8, 3, 2, dtype=F64)).dtype == F64


def test_channels_last_matches_contiguous() -> None:
    m = MAM(16, reduction=4, dtype=F64)  # float64: the layouts' kernels round differently
    x = torch.randn(2, 16, 6, 3, dtype=F64)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))


def test_extra_repr() -> None:
    assert MAM(1024).extra_repr() == "1024, reduction=16, eps=1e-05"
    assert repr(MAM(64, reduction=8, eps=1e-3)).startswith("MAM(\n  64, reduction=8, eps=0.001\n")
