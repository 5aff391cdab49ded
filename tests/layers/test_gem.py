"""Tests for GeM pooling (AGW) against the explicit formula, including the NaN trap and the learnable p."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.layers.gem import GeM, gem

F64 = torch.float64


def loop_gem(x: torch.Tensor, p: float, eps: float = 1e-12, clamp_min: float | None = None) -> torch.Tensor:
    """(mean over the H*W positions of x^p + eps)^(1/p), one (sample, channel) at a time, in float64."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, dtype=F64)
    for b in range(n):
        for ch in range(c):
            total = 0.0
            for i in range(h):
                for j in range(w):
                    value = float(x[b, ch, i, j])
                    if clamp_min is not None:
                        value = max(value, clamp_min)
                    total += value**p
            out[b, ch] = (total / (h * w) + eps) ** (1.0 / p)
    return out


def positive(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) + 0.1


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape() -> None:
    x = torch.rand(2, 2048, 18, 9)  # AGW's last map at 288x144 with last stride 1
    assert GeM()(x).shape == (2, 2048)
    assert GeM(learnable=True)(x).shape == (2, 2048)
    assert gem(x).shape == (2, 2048) and gem(x).dtype == torch.float32


def test_official_has_no_state() -> None:
    pool = GeM()
    assert pool.p == 3.0 and isinstance(pool.p, float)
    assert list(pool.parameters()) == [] and pool.state_dict() == {}
    assert pool.clamp is None and pool.eps == 1e-12


def test_learnable_parameter() -> None:
    pool = GeM(p=4.0, learnable=True, dtype=F64)
    assert isinstance(pool.p, torch.nn.Parameter) and pool.p.shape == (1,) and pool.p.dtype == F64
    assert list(pool.state_dict()) == ["p"]  # the ReID-survey GeneralizedMeanPoolingP key
    assert float(pool.p.detach()) == 4.0 and pool.clamp == 1e-6
    with torch.no_grad():
        pool.p.fill_(7.0)
    pool.reset_parameters()
    assert float(pool.p.detach()) == 4.0
    x = positive(2, 3, 4, 2)
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad).all() and pool.p.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("p", [1.0, 2.5, 3.0, 6.0])
def test_reference(p: float) -> None:
    x = torch.rand(2, 3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    x[0, 0] = 0.0  # an all-zero channel: (0 + eps)^(1/p)
    expected = loop_gem(x, p)
    torch.testing.assert_close(gem(x, p=p), expected)
    torch.testing.assert_close(GeM(p=p)(x), expected)
    assert gem(x, p=p).dtype == F64


def test_reference_clamp_and_learnable() -> None:
    x = torch.randn(2, 3, 4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)  # signed
    expected = loop_gem(x, 3.0, clamp_min=1e-6)
    torch.testing.assert_close(gem(x, p=3.0, clamp_min=1e-6), expected)
    torch.testing.assert_close(GeM(learnable=True, dtype=F64)(x), expected)
    torch.testing.assert_close(GeM(clamp=1e-6)(x), expected)
    torch.testing.assert_close(gem(x, p=torch.tensor([3.0], dtype=F64), clamp_min=1e-6), expected)


def test_special_cases() -> None:
    x = positive(2, 4, 5, 3)
    torch.testing.assert_close(gem(x, p=1.0, eps=0.0), F.adaptive_avg_pool2d(x, 1).flatten(1))
    torch.testing.assert_close(gem(x, p=200.0, eps=0.0), x.amax((2, 3)), rtol=2e-2, atol=0.0)
    constant = torch.full((1, 2, 3, 3), 2.5, dtype=F64)
    torch.testing.assert_close(gem(constant, p=3.0, eps=0.0), torch.full((1, 2), 2.5, dtype=F64))


def test_module_matches_functional() -> None:
    x = torch.rand(2, 5, 6, 3)
    torch.testing.assert_close(GeM(p=2.0, eps=1e-8)(x), gem(x, p=2.0, eps=1e-8))
    torch.testing.assert_close(GeM(learnable=True)(x), gem(x, p=3.0, clamp_min=1e-6))


# -------------------------------------------------------------------------------------------- the NaN trap


def test_nan_trap_negative_input() -> None:
    x = -torch.rand(1, 2, 3, 3) - 0.1  # a signed layer (e.g. a non-local block) in front of GeM
    assert gem(x).isnan().all()  # official: no clamp
    assert GeM()(x).isnan().all()
    assert torch.isfinite(gem(x, clamp_min=1e-6)).all()
    assert torch.isfinite(GeM(learnable=True)(x)).all()
    assert torch.isfinite(GeM(clamp=1e-6)(x)).all()
    assert gem(x, p=2.5).isnan().all()  # a non-integer p: NaN for any negative value


def test_learnable_p_needs_the_clamp() -> None:
    """A learnable p is soon not an integer (NaN for any negative value), and below 1 the input gradient
    p x^(p-1) is infinite at the zeros of a ReLU map; the default clamp of the learnable variant avoids both."""
    x = torch.rand(2, 3, 4, 4)
    x[:, :, 0, 0] = 0.0
    x.requires_grad_(True)
    for clamp, finite in ((None, False), ("auto", True)):
        pool = GeM(p=0.5, learnable=True, clamp=clamp)
        pool(x).sum().backward()
        assert torch.isfinite(x.grad).all() == finite
        assert torch.isfinite(pool.p.grad).all()  # PyTorch sets x^p log x to 0 at x = 0
        x.grad = None
    signed = x.detach() - 0.5
    assert GeM(learnable=True, clamp=None, p=2.9)(signed).isnan().any()
    assert torch.isfinite(GeM(learnable=True, p=2.9)(signed)).all()


# --------------------------------------------------------------------------------------------- gradients


def test_gradcheck_fixed_p() -> None:
    x = positive(2, 2, 3, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: gem(t, p=3.0), (x,))
    assert torch.autograd.gradcheck(GeM(dtype=F64), (x,))


def test_gradcheck_learnable_p() -> None:
    x = positive(2, 2, 3, 2, seed=1).requires_grad_(True)
    p = torch.tensor([2.5], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, q: gem(t, p=q, clamp_min=1e-6), (x, p))
    pool = GeM(learnable=True, dtype=F64)

    def fn(t: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(pool, {"p": q}, (t,))

    assert torch.autograd.gradcheck(fn, (x, torch.tensor([3.0], dtype=F64, requires_grad=True)))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=25, derandomize=True)
@given(
    p=st.floats(0.5, 8.0),
    scale=st.floats(1e-3, 1e3),
    hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_properties(p: float, scale: float, hw: tuple[int, int], seed: int) -> None:
    """Between the mean and the max, positively homogeneous, invariant to permuting the positions."""
    x = positive(2, 3, *hw, seed=seed)
    out = gem(x, p=p, eps=0.0)
    mean, peak = x.mean((2, 3)), x.amax((2, 3))
    if p >= 1.0:
        assert (out >= mean * (1 - 1e-9)).all()
    assert (out <= peak * (1 + 1e-9)).all()
    torch.testing.assert_close(gem(scale * x, p=p, eps=0.0), scale * out)
    perm = torch.randperm(hw[0] * hw[1], generator=torch.Generator().manual_seed(seed))
    shuffled = x.flatten(2)[..., perm].view_as(x)
    torch.testing.assert_close(gem(shuffled, p=p, eps=0.0), out)


# --------------------------------------------------------------------------------------- compile / dtypes


@pytest.mark.parametrize("learnable", [False, True])
def test_compile(learnable: bool) -> None:
    torch._dynamo.reset()
    pool = GeM(learnable=learnable)
    compiled = torch.compile(pool, backend="eager", fullgraph=True)
    x = torch.rand(2, 8, 6, 3)
    torch.testing.assert_close(compiled(x), pool(x))


def test_bf16_autocast_and_half_inputs() -> None:
    x = torch.rand(2, 16, 6, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = GeM(learnable=True)(x)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    # a float16 cube overflows from x ~ 40; the powers are taken in float32
    big = torch.full((1, 2, 3, 3), 100.0, dtype=torch.float16)
    assert big.pow(3).isinf().all()
    out16 = gem(big)
    assert out16.dtype == torch.float16
    torch.testing.assert_close(out16.float(), torch.full((1, 2), 100.0), rtol=1e-3, atol=0.0)
    assert gem(torch.rand(1, 2, 3, 3, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((), {"p": 0.0}, ValueError, "`p`"),
        ((), {"p": -3.0}, ValueError, "`p`"),
        ((), {"p": "3"}, TypeError, "`p`"),
        ((), {"p": float("nan")}, ValueError, "`p`"),
        ((), {"p": float("inf")}, ValueError, "`p`"),
        ((), {"eps": float("nan")}, ValueError, "`eps`"),
        ((), {"eps": -1.0}, ValueError, "`eps`"),
        ((), {"clamp": 0.0}, ValueError, "`clamp`"),
        ((), {"clamp": -1e-6}, ValueError, "`clamp`"),
        ((), {"clamp": "yes"}, ValueError, "`clamp`"),
        ((), {"learnable": 1}, TypeError, "`learnable`"),
    ],
)
def test_exception_constructor(args: tuple, kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        GeM(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"p": 0.0}, ValueError, "`p`"),
        ({"p": -1.0}, ValueError, "`p`"),
        ({"eps": -1.0}, ValueError, "`eps`"),
        ({"clamp_min": 0.0}, ValueError, "`clamp_min`"),
    ],
)
def test_exception_functional(kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        gem(torch.rand(1, 2, 3, 3), **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.rand(2, 3, 4), ValueError, r"`x` must have shape \(N, C, H, W\), got shape \(2, 3, 4\)"),
        (torch.rand(2, 3), ValueError, "`x`"),
        (torch.ones(1, 2, 3, 3, dtype=torch.long), TypeError, "`x` must be a floating-point"),
        (3.0, TypeError, "`x` must be a torch.Tensor"),
    ],
)
def test_exception_input(x: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        gem(x)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        GeM()(x)


def test_extra_repr() -> None:
    assert GeM().extra_repr() == "p=3.0, learnable=False, eps=1e-12, clamp=None"
    assert repr(GeM(p=2.0, learnable=True)) == "GeM(p=2.0, learnable=True, eps=1e-12, clamp=1e-06)"
    assert "clamp=0.001" in repr(GeM(clamp=1e-3))
    assert math.isclose(GeM(p=4).p, 4.0)
