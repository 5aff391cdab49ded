"""Tests for the fixed four-direction Sobel module of MSO against an explicit loop over the 3x3 window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.layers.sobel import SobelEdges, sobel_edges, sobel_kernels

F64 = torch.float64
COMBINES = ["sum", "abs", "magnitude", "none"]

# The four kernels as written in the MSO reference (rows top to bottom), K0..K3.
K = [
    [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
    [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
]
ORIENTED = [[-4, -2, 2], [-4, 0, 4], [-2, 2, 4]]  # K0 + K1 + K2 + K3


# ----------------------------------------------------------------------------------------- plain reference


def loop_correlate(x: torch.Tensor, kernel: list[list[int]], stride: int = 1) -> torch.Tensor:
    """Zero-padded 3x3 cross-correlation of every channel, summed over the channels, one pixel at a time."""
    n, c, h, w = x.shape
    out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = torch.zeros(n, out_h, out_w, dtype=F64)
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                total = 0.0
                for ch in range(c):
                    for u in range(3):
                        for v in range(3):
                            row, col = i * stride + u - 1, j * stride + v - 1
                            if 0 <= row < h and 0 <= col < w:
                                total += kernel[u][v] * float(x[b, ch, row, col])
                out[b, i, j] = total
    return out


def loop_sobel(x: torch.Tensor, combine: str, stride: int = 1) -> torch.Tensor:
    responses = torch.stack([loop_correlate(x, k, stride) for k in K], dim=1)  # (N, 4, H', W')
    if combine == "none":
        return responses
    if combine == "sum":
        return responses.sum(1, keepdim=True)
    if combine == "abs":
        return responses.abs().sum(1, keepdim=True)
    return responses.pow(2).sum(1, keepdim=True).clamp_min(1e-12).sqrt()


# --------------------------------------------------------------------------------------------- smoke / shape


def test_kernels() -> None:
    kernels = sobel_kernels()
    assert kernels.shape == (4, 1, 3, 3) and kernels.dtype == torch.float32
    assert kernels[:, 0].tolist() == K
    assert kernels.sum(0)[0].tolist() == ORIENTED
    assert sobel_kernels(dtype=F64).dtype == F64


@pytest.mark.parametrize(
    ("combine", "stride", "shape", "expected"),
    [
        ("sum", 1, (2, 3, 288, 144), (2, 1, 288, 144)),  # MSO's input size
        ("none", 1, (2, 3, 288, 144), (2, 4, 288, 144)),
        ("magnitude", 4, (2, 3, 288, 144), (2, 1, 72, 36)),  # the stem's resolution
        ("abs", 2, (1, 1, 7, 5), (1, 1, 4, 3)),
    ],
)
def test_shape(combine: str, stride: int, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    out = sobel_edges(torch.randn(shape), combine=combine, stride=stride)
    assert out.shape == expected and out.dtype == torch.float32
    module = SobelEdges(combine=combine, stride=stride)
    assert module(torch.randn(shape)).shape == expected


def test_constant_image_has_no_interior_edges() -> None:
    out = sobel_edges(torch.full((1, 3, 6, 5), 0.7), combine="none")
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.zeros(1, 4, 4, 3))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("combine", COMBINES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_reference(combine: str, stride: int, channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 5, 4, generator=g, dtype=F64)
    expected = loop_sobel(x, combine, stride)
    torch.testing.assert_close(sobel_edges(x, combine=combine, stride=stride), expected)
    module = SobelEdges(combine=combine, stride=stride, dtype=F64)
    torch.testing.assert_close(module(x), expected)


def test_signed_sum_is_one_oriented_kernel() -> None:
    """The documented quirk: the signed sum of the four responses is a single oriented derivative."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 5, generator=g, dtype=F64)
    torch.testing.assert_close(sobel_edges(x, combine="sum"), loop_correlate(x, ORIENTED).unsqueeze(1))


def test_signed_sum_cancels_some_edges() -> None:
    """A ramp with gradient (rows, cols) = (5, -2) is invisible to the signed sum (8a + 20b = 0), not to "abs"."""
    i = torch.arange(6, dtype=F64).view(-1, 1)
    j = torch.arange(7, dtype=F64).view(1, -1)
    ramp = (5 * i - 2 * j).expand(1, 1, 6, 7)
    interior = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(sobel_edges(ramp, combine="sum")[interior], torch.zeros(1, 1, 4, 5, dtype=F64))
    assert (sobel_edges(ramp, combine="abs")[interior] > 10).all()
    assert (sobel_edges(ramp, combine="magnitude")[interior] > 10).all()
    # in general the signed sum answers a ramp a*i + b*j with 8a + 20b
    for a, b in ((1.0, 0.0), (0.0, 1.0), (-1.5, 2.0)):
        other = (a * i + b * j).expand(1, 1, 6, 7)
        response = sobel_edges(other, combine="sum")[interior]
        torch.testing.assert_close(response, torch.full_like(response, 8 * a + 20 * b))


def test_replicated_infrared_is_three_times_single_channel() -> None:
    ir = torch.randn(2, 1, 6, 4, dtype=F64)
    for combine in ("sum", "abs", "none"):
        torch.testing.assert_close(
            sobel_edges(ir.expand(-1, 3, -1, -1), combine=combine), 3 * sobel_edges(ir, combine=combine)
        )
    # RGB: the response to R + G + B
    rgb = torch.randn(2, 3, 6, 4, dtype=F64)
    torch.testing.assert_close(sobel_edges(rgb), sobel_edges(rgb.sum(1, keepdim=True)))


def test_module_matches_functional() -> None:
    x = torch.randn(2, 3, 9, 6)
    for combine in COMBINES:
        torch.testing.assert_close(SobelEdges(combine=combine, stride=2)(x), sobel_edges(x, combine=combine, stride=2))


# ------------------------------------------------------------------------------------------ buffer / dtype


def test_kernel_buffer_is_fixed_and_not_persistent() -> None:
    module = SobelEdges()
    assert list(module.parameters()) == []
    assert module.state_dict() == {}
    assert [name for name, _ in module.named_buffers()] == ["kernels"]
    assert not module.kernels.requires_grad
    torch.testing.assert_close(module.kernels, sobel_kernels())
    with torch.no_grad():
        module.kernels.zero_()
    module.reset_parameters()
    torch.testing.assert_close(module.kernels, sobel_kernels())
    assert module.load_state_dict({}, strict=True) is not None
    assert module.to(F64).kernels.dtype == F64


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_dtype_follows_input(dtype: torch.dtype) -> None:
    x = torch.randn(1, 3, 5, 5).to(dtype)
    assert sobel_edges(x).dtype == dtype
    assert SobelEdges()(x).dtype == dtype  # the float32 buffer is cast to the input's dtype


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("combine", COMBINES)
def test_gradcheck(combine: str) -> None:
    x = torch.randn(1, 2, 4, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sobel_edges(t, combine=combine, stride=2), (x,))
    assert torch.autograd.gradcheck(SobelEdges(combine=combine, dtype=F64), (x,))


def test_magnitude_gradient_finite_on_flat_image() -> None:
    x = torch.ones(1, 3, 5, 5, requires_grad=True)
    out = sobel_edges(x, combine="magnitude")
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full((1, 1, 3, 3), 1e-6))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=20, derandomize=True)
@given(
    combine=st.sampled_from(COMBINES),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    shift=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_properties(combine: str, h: int, w: int, shift: float, seed: int) -> None:
    """Batch equivariance, size preservation; adding a constant changes only the border responses."""
    x = torch.randn(3, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = sobel_edges(x, combine=combine)
    assert out.shape == (3, 4 if combine == "none" else 1, h, w)
    torch.testing.assert_close(sobel_edges(x[[2, 0, 1]], combine=combine), out[[2, 0, 1]])
    shifted = sobel_edges(x + shift, combine=combine)
    torch.testing.assert_close(shifted[..., 1:-1, 1:-1], out[..., 1:-1, 1:-1])


# --------------------------------------------------------------------------------------- compile / autocast


@pytest.mark.parametrize("combine", COMBINES)
def test_compile(combine: str) -> None:
    torch._dynamo.reset()
    module = SobelEdges(combine=combine)
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(compiled(x), module(x))
    functional = torch.compile(sobel_edges, backend="eager", fullgraph=True)
    torch.testing.assert_close(functional(x, combine=combine, stride=2), sobel_edges(x, combine=combine, stride=2))


def test_bf16_autocast() -> None:
    x = torch.randn(2, 3, 16, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SobelEdges(combine="magnitude")(x)
    assert out.shape == (2, 1, 16, 8) and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"combine": "max"}, ValueError, "combine"),
        ({"combine": None}, ValueError, "combine"),
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": 1.5}, ValueError, "stride"),
        ({"stride": True}, ValueError, "stride"),
    ],
)
def test_exception_arguments(kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        SobelEdges(**kwargs)
    with pytest.raises(error, match=name):
        sobel_edges(torch.randn(1, 3, 4, 4), **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.randn(3, 4, 4), ValueError, r"`x` must have shape \(N, C, H, W\), got shape \(3, 4, 4\)"),
        (torch.randn(1, 1, 3, 4, 4), ValueError, "`x`"),
        (torch.ones(1, 3, 4, 4, dtype=torch.long), TypeError, "`x` must be a floating-point"),
        (torch.randn(1, 0, 4, 4), ValueError, "at least one channel"),
        ([[1.0]], TypeError, "`x` must be a torch.Tensor"),
    ],
)
def test_exception_input(x: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        sobel_edges(x)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        SobelEdges()(x)


def test_extra_repr() -> None:
    assert SobelEdges().extra_repr() == "combine='sum', stride=1"
    assert "combine='magnitude', stride=4" in repr(SobelEdges(combine="magnitude", stride=4))
