"""Tests for the orthogonal loss between DEE branches (DEEN Eq. 6 and the official normalisation)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import F64, assert_close_at, grid_randn

from vireid_layers.losses.orthogonal import OrthogonalLoss, orthogonal_loss

DTYPES = [torch.float32, F64]
NORMALIZATIONS = ["official", "mean", "sum"]


def loop_orthogonal(generated: torch.Tensor, normalization: str = "official") -> torch.Tensor:
    """Sum over samples n and branch pairs a < b of <f_a(n), f_b(n)>, then the chosen normalisation."""
    generated = generated.to(F64)
    k, n = generated.shape[:2]
    total = (generated * 0).sum()  # connected to the graph, for K = 1
    for i in range(n):
        for a in range(k):
            for b in range(a + 1, k):
                total = total + (generated[a, i] * generated[b, i]).sum()
    return {"official": total / ((k + 1) * n), "mean": total / n, "sum": total}[normalization]


def official_k2(x_pool: torch.Tensor) -> torch.Tensor:
    """The official code for K = 2: chunk the 3 B0 pooled rows into (orig, gen1, gen2), sum <gen1_b, gen2_b>,
    divide by the tripled batch size 3 B0."""
    _, gen1, gen2 = torch.chunk(x_pool.to(F64), 3, 0)
    return (gen1 * gen2).sum() / x_pool.shape[0]


def _generated(k: int, n: int, d: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return grid_randn(k, n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke() -> None:
    generated = torch.randn(2, 6, 8, requires_grad=True)
    loss = OrthogonalLoss()(generated)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert generated.grad is not None and torch.isfinite(generated.grad).all()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_shape(normalization: str, k: int) -> None:
    assert orthogonal_loss(torch.randn(k, 5, 3), reduction=normalization).shape == ()


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_follows_input(dtype: torch.dtype) -> None:
    assert orthogonal_loss(_generated(2, 4, 3, dtype)).dtype == dtype


# ----------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("dtype", "normalization", "k"),
    [(torch.float32, z, k) for z in NORMALIZATIONS for k in (1, 2, 3, 5)] + [(F64, "official", k) for k in (1, 3)],
)
def test_reference(dtype: torch.dtype, normalization: str, k: int) -> None:
    generated = _generated(k, 7, 6, dtype).requires_grad_(True)
    reference_input = generated.detach().clone().requires_grad_(True)
    actual = orthogonal_loss(generated, reduction=normalization)
    expected = loop_orthogonal(reference_input, normalization)
    assert_close_at(actual, expected, dtype)
    (grad,) = torch.autograd.grad(actual, generated)
    (expected_grad,) = torch.autograd.grad(expected, reference_input)
    assert_close_at(grad, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_official_k2(dtype: torch.dtype) -> None:
    """K = 2, default normalisation: sum_b <gen1_b, gen2_b> / (3 N), as the official model.forward."""
    g = torch.Generator().manual_seed(1)
    x_pool = grid_randn(3 * 5, 8, generator=g, dtype=dtype).relu()  # orig, gen1, gen2; post-ReLU like layer4
    generated = torch.stack(torch.chunk(x_pool, 3, 0)[1:])
    assert_close_at(orthogonal_loss(generated), official_k2(x_pool), dtype)


def test_signed_and_unnormalised() -> None:
    """Raw inner products, no cosine and no absolute value: scaling by s scales the loss by s^2."""
    generated = torch.tensor([[[1.0, 0.0]], [[-3.0, 0.5]]])
    assert orthogonal_loss(generated, reduction="sum").item() == -3.0
    torch.testing.assert_close(orthogonal_loss(10 * generated), 100 * orthogonal_loss(generated))


def test_gradcheck() -> None:
    generated = _generated(3, 4, 5, F64).requires_grad_(True)
    for normalization in NORMALIZATIONS:
        fn = functools.partial(orthogonal_loss, reduction=normalization)
        assert torch.autograd.gradcheck(fn, (generated,), eps=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------------------------ properties

GENERATED = st.builds(
    lambda k, n, d, seed, scale: grid_randn(
        k, n, d, generator=torch.Generator().manual_seed(seed), scale=scale
    ).float(),
    k=st.integers(1, 4),
    n=st.integers(0, 6),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)


@given(generated=GENERATED, normalization=st.sampled_from(NORMALIZATIONS))
def test_pairwise_sum_identity(generated: torch.Tensor, normalization: str) -> None:
    """sum_{a<b} <g_a, g_b> = (|sum_a g_a|^2 - sum_a |g_a|^2) / 2 for every sample; finite, of either sign."""
    k, n = generated.shape[:2]
    g = generated.to(F64)
    total = ((g.sum(0) ** 2).sum() - (g**2).sum()) / 2
    expected = {"official": total / max((k + 1) * n, 1), "mean": total / max(n, 1), "sum": total}[normalization]
    actual = orthogonal_loss(generated, reduction=normalization)
    assert torch.isfinite(actual)
    scale = (g**2).sum() / max(n, 1) + 1.0
    torch.testing.assert_close(actual.to(F64), expected, rtol=1e-5, atol=1e-6 * float(scale))


@given(generated=GENERATED, data=st.data())
def test_permutation_invariance(generated: torch.Tensor, data: st.DataObject) -> None:
    """Neither the order of the samples nor the order of the branches matters."""
    k, n = generated.shape[:2]
    samples = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.long)
    branches = torch.tensor(data.draw(st.permutations(range(k))), dtype=torch.long)
    expected = orthogonal_loss(generated)
    atol = 1e-6 * float((generated.double() ** 2).sum() + 1)  # float32 sums in a different order
    torch.testing.assert_close(orthogonal_loss(generated[branches][:, samples]), expected, rtol=1e-5, atol=atol)


@given(generated=GENERATED)
def test_finite_gradients(generated: torch.Tensor) -> None:
    generated = generated.clone().requires_grad_(True)
    orthogonal_loss(generated).backward()
    assert generated.grad is not None and torch.isfinite(generated.grad).all()


# ------------------------------------------------------------------------------------------ degenerate batches


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_single_branch(normalization: str) -> None:
    generated = torch.randn(1, 4, 3, requires_grad=True)
    loss = orthogonal_loss(generated, reduction=normalization)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert generated.grad is not None and generated.grad.abs().max() == 0


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3), (3, 0, 0)])
def test_empty(normalization: str, shape: tuple[int, int, int]) -> None:
    generated = torch.zeros(shape, requires_grad=True)
    loss = orthogonal_loss(generated, reduction=normalization)
    assert loss.shape == () and loss.item() == 0 and loss.requires_grad
    loss.backward()


def test_single_sample() -> None:
    generated = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]], requires_grad=True)
    torch.testing.assert_close(orthogonal_loss(generated), torch.tensor(11.0 / 3))
    torch.testing.assert_close(orthogonal_loss(generated, reduction="mean"), torch.tensor(11.0))


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("generated", "error"),
    [
        (torch.randn(4, 3), ValueError),
        (torch.randn(2, 2, 4, 3), ValueError),
        (torch.randn(5), ValueError),
        (torch.ones(2, 4, 3, dtype=torch.long), TypeError),
        ([[[1.0]]], TypeError),
    ],
)
def test_exception(generated: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="generated"):
        orthogonal_loss(generated)  # type: ignore[arg-type]


@pytest.mark.parametrize("normalization", ["Official", "none", "cosine", None])
def test_bad_normalization(normalization: object) -> None:
    """The former keyword (now ``reduction``) keeps its old choices, with a FutureWarning."""
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="normalization"):
        orthogonal_loss(torch.randn(2, 3, 4), normalization=normalization)  # type: ignore[arg-type]
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="normalization"):
        OrthogonalLoss(normalization=normalization)  # type: ignore[arg-type]
    if normalization != "none":  # "none" is a reduction now (per sample)
        with pytest.raises(ValueError, match="reduction"):
            orthogonal_loss(torch.randn(2, 3, 4), reduction=normalization)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ compile / amp / module


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_compile(normalization: str) -> None:
    generated = torch.randn(3, 5, 4)
    module = OrthogonalLoss(reduction=normalization)
    expected = module(generated)
    torch.testing.assert_close(torch.compile(module, backend="eager", fullgraph=True)(generated), expected)
    functional = functools.partial(orthogonal_loss, reduction=normalization)
    torch.testing.assert_close(torch.compile(functional, backend="eager", fullgraph=True)(generated), expected)


def test_bf16_autocast() -> None:
    generated = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(2)).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = orthogonal_loss(generated)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = orthogonal_loss(generated.detach().float())
    torch.testing.assert_close(loss, expected, rtol=2e-2, atol=1e-3)
    loss.backward()
    assert generated.grad is not None and generated.grad.dtype == torch.bfloat16
    assert torch.isfinite(generated.grad).all()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_module_matches_functional(normalization: str) -> None:
    generated = torch.randn(3, 5, 4)
    torch.testing.assert_close(
        OrthogonalLoss(reduction=normalization)(generated),
        orthogonal_loss(generated, reduction=normalization),
        rtol=0,
        atol=0,
    )


def test_extra_repr() -> None:
    assert repr(OrthogonalLoss(reduction="mean")) == "OrthogonalLoss(reduction='mean')"
    assert "reduction='official'" in repr(OrthogonalLoss())


# ------------------------------------------------------------------------------------------------ reduction


def test_reduction_none_is_per_sample() -> None:
    generated = torch.randn(3, 5, 4, dtype=F64)
    rows = orthogonal_loss(generated, reduction="none")
    assert rows.shape == (5,)
    expected = torch.stack(
        [sum(generated[a, n] @ generated[b, n] for a in range(3) for b in range(a + 1, 3)) for n in range(5)]
    )
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(rows.sum(), orthogonal_loss(generated, reduction="sum"))
    torch.testing.assert_close(rows.mean(), orthogonal_loss(generated, reduction="mean"))
    torch.testing.assert_close(OrthogonalLoss(reduction="none")(generated), rows)
    # a NaN reaches its own sample's row only, also with a single branch
    poisoned = generated.clone()
    poisoned[1, 2, 0] = float("nan")
    assert orthogonal_loss(poisoned, reduction="none").isnan().tolist() == [False, False, True, False, False]
    assert orthogonal_loss(poisoned[:1], reduction="none").isnan().tolist() == [False, False, False, False, False]
    single = generated[:1].clone()
    single[0, 3, 1] = float("nan")
    assert orthogonal_loss(single, reduction="none").isnan().tolist() == [False, False, False, True, False]
    assert orthogonal_loss(torch.randn(2, 0, 4), reduction="none").shape == (0,)


@pytest.mark.usefixtures("fresh_dynamo")
def test_reduction_none_compiles() -> None:
    generated = torch.randn(3, 5, 4)
    fn = torch.compile(functools.partial(orthogonal_loss, reduction="none"), backend="eager", fullgraph=True)
    torch.testing.assert_close(fn(generated), orthogonal_loss(generated, reduction="none"))
