"""Tests for the batch-hard triplet loss against the official ``OriTripletLoss`` (AGW/DDAG/DEEN)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import F64, assert_close_at, bijections, grid_randn, loop_distance_matrix, pkm_batches, relabel

from vireid_layers.distances import paired_euclidean, pairwise_euclidean
from vireid_layers.losses.triplet import HardTripletLoss, hard_triplet_loss

DTYPES = [torch.float32, F64]
REDUCTIONS = ["mean", "sum", "none"]


def official_triplet(
    x: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, reduction: str = "mean"
) -> torch.Tensor:
    """``OriTripletLoss`` one anchor at a time: the farthest positive (the anchor itself included, at 1e-6)
    against the nearest negative, ``relu(d_ap - d_an + margin)``. An anchor without negatives (where the
    official code crashes) contributes 0."""
    dist = loop_distance_matrix(x)
    per_anchor = []
    for i in range(len(labels)):
        positives = [dist[i, j] for j in range(len(labels)) if labels[j] == labels[i]]
        negatives = [dist[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
        if not negatives:
            per_anchor.append(dist[i, i] * 0)
            continue
        d_ap = torch.stack(positives).max()
        d_an = torch.stack(negatives).min()
        per_anchor.append(torch.relu(d_ap - d_an + margin))
    losses = torch.stack(per_anchor) if per_anchor else x.new_zeros(0, dtype=F64)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


def autograd_triplet(
    x: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, reduction: str = "mean"
) -> torch.Tensor:
    """The same mining with the mined distances recomputed by plain autograd (the library's previous form):
    ``x[index]`` gathers and ``paired_euclidean``; the library's hand-written backward must reproduce it."""
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    with torch.no_grad():
        distances = pairwise_euclidean(x)
        positive_index = torch.where(positive, distances, torch.full_like(distances, -float("inf"))).argmax(1)
        negative_index = torch.where(positive, torch.full_like(distances, float("inf")), distances).argmin(1)
    hardest_positive = paired_euclidean(x, x[positive_index])
    hardest_negative = paired_euclidean(x, x[negative_index])
    hardest_negative = torch.where(
        (~positive).any(1), hardest_negative, torch.full_like(hardest_negative, float("inf"))
    )
    losses = (hardest_positive - hardest_negative + margin).relu()
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


def _batch(dtype: torch.dtype, seed: int = 0, n_ids: int = 4, k: int = 3, d: int = 6) -> tuple:
    g = torch.Generator().manual_seed(seed)
    values = torch.randperm(1000, generator=g)[:n_ids] - 500
    labels = values.repeat_interleave(k)[torch.randperm(n_ids * k, generator=g)]
    return grid_randn(n_ids * k, d, generator=g, dtype=dtype), labels


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke() -> None:
    x, labels = _batch(torch.float32)
    x.requires_grad_(True)
    loss = HardTripletLoss()(x, labels)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("reduction", "shape"), [("mean", ()), ("sum", ()), ("none", (12,))])
def test_shape(reduction: str, shape: tuple) -> None:
    x, labels = _batch(torch.float32)
    assert hard_triplet_loss(x, labels, reduction=reduction).shape == shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_follows_input(dtype: torch.dtype) -> None:
    x, labels = _batch(dtype)
    assert hard_triplet_loss(x, labels).dtype == dtype


# ----------------------------------------------------------------------------------------------- references


# float32 on the full grid; float64 (strict tolerances) on the per-anchor losses.
K_MARGINS = [(1, 2.0), (3, 0.3), (2, 1.5), (3, 0.0)]
REFERENCE_CASES = [(torch.float32, r, k, m) for r in REDUCTIONS for k, m in K_MARGINS] + [
    (F64, "none", k, m) for k, m in K_MARGINS
]


@pytest.mark.parametrize(("dtype", "reduction", "k", "margin"), REFERENCE_CASES)
def test_reference(dtype: torch.dtype, reduction: str, k: int, margin: float) -> None:
    """Values and gradients equal the official loop; k = 1 makes the self-distance the hardest positive."""
    x, labels = _batch(dtype, seed=k, k=k)
    x_ref = x.clone().requires_grad_(True)
    x.requires_grad_(True)
    expected = official_triplet(x_ref, labels, margin, reduction)
    actual = hard_triplet_loss(x, labels, margin=margin, reduction=reduction)
    assert expected.sum() > 0
    assert_close_at(actual, expected, dtype)
    (grad,) = torch.autograd.grad(actual.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x_ref)
    assert_close_at(grad, expected_grad, dtype)


def test_self_is_a_positive() -> None:
    """A singleton anchor's hardest positive is itself at 1e-6, so its loss is relu(1e-6 - d_an + margin)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.25], [0.0, 4.25]])
    losses = hard_triplet_loss(x, torch.tensor([7, 9, 9]), margin=1.0, reduction="none")
    torch.testing.assert_close(losses, torch.tensor([1e-6 - 0.25 + 1.0, 4.0 - 0.25 + 1.0, 4.0 - 4.25 + 1.0]))


def test_gradcheck() -> None:
    x, labels = _batch(F64, seed=5, n_ids=3, k=2, d=4)
    # Every hinge active (margin larger than any distance gap) and no ties among random distances.
    dist = loop_distance_matrix(x)
    assert torch.unique(dist.triu(1)[dist.triu(1) > 0]).numel() == dist.shape[0] * (dist.shape[0] - 1) // 2
    for reduction in ("mean", "none"):
        fn = functools.partial(hard_triplet_loss, labels=labels, margin=10.0, reduction=reduction)
        assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-4)


def _grad_with(loss: torch.Tensor, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The gradient of ``loss`` against random output weights (so every anchor's backward is weighted apart)."""
    weights = torch.rand(loss.shape, generator=torch.Generator().manual_seed(seed), dtype=loss.dtype)
    (grad,) = torch.autograd.grad(loss, x, weights)
    return grad


@given(
    batch=pkm_batches(coincide="any", num_ids=(1, 4), num_instances=(1, 3)),
    dtype=st.sampled_from(DTYPES),
    margin=st.sampled_from([0.0, 0.3, 2.0]),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_matches_autograd_formulation(batch: tuple, dtype: torch.dtype, margin: float, reduction: str) -> None:
    """The hand-written backward gives the values and gradients of plain autograd on the same mined pairs,
    including coinciding rows (clamped distances, zero gradient) and anchors without negatives."""
    x, labels, _ = batch
    x = x.to(dtype).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    actual = hard_triplet_loss(x, labels, margin=margin, reduction=reduction)
    expected = autograd_triplet(x_ref, labels, margin, reduction)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)  # the same operations on the same values
    torch.testing.assert_close(_grad_with(actual, x, 0), _grad_with(expected, x_ref, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_autograd_formulation_sysu_batch(dtype: torch.dtype) -> None:
    """At the SYSU batch of the benchmark (144 rows = 3 x 48: 6 identities x 4 images x 2 modalities, D = 512
    here), non-negative features as after the last ReLU."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(144, 512, generator=g, dtype=dtype).abs().requires_grad_(True)
    labels = torch.arange(6).repeat_interleave(4).repeat(6)
    x_ref = x.detach().clone().requires_grad_(True)
    for reduction in REDUCTIONS:
        actual = hard_triplet_loss(x, labels, reduction=reduction)
        expected = autograd_triplet(x_ref, labels, reduction=reduction)
        assert expected.sum() > 0
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
        torch.testing.assert_close(_grad_with(actual, x, 1), _grad_with(expected, x_ref, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamped_distance_has_no_gradient(dtype: torch.dtype) -> None:
    """A mined positive closer than 1e-6 but not coinciding: the clamp is active, so that distance passes no
    gradient (as ``clamp(min=1e-12).sqrt()`` under autograd)."""
    # Row 1's positives, itself and row 0 (3e-7 away), both sit at the clamped 1e-6: argmax takes row 0. Every
    # other mined pair lies along the first axis, so only the clamped pair could move row 0 along the second.
    x = torch.tensor([[0.0, 0.0], [0.0, 3e-7], [2.0, 0.0], [3.0, 0.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    x_ref = x.detach().clone().requires_grad_(True)
    actual = hard_triplet_loss(x, labels, margin=5.0, reduction="none")
    expected = autograd_triplet(x_ref, labels, 5.0, "none")
    assert (actual > 0).all()
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    grad, expected_grad = _grad_with(actual, x, 3), _grad_with(expected, x_ref, 3)
    torch.testing.assert_close(grad, expected_grad)
    assert grad[0, 1] == 0 and grad[0, 0] != 0


def test_no_second_derivative() -> None:
    """The backward pass is written out and differentiable once: with ``create_graph=True`` the gradient carries
    no graph, so a second derivative is refused rather than silently wrong."""
    x, labels = _batch(F64, seed=2)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(hard_triplet_loss(x, labels), [x], create_graph=True)
    assert grad.abs().sum() > 0 and not grad.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(grad.sum(), [x])


# ------------------------------------------------------------------------------------------------ properties


@given(batch=pkm_batches(coincide="any"), margin=st.sampled_from([0.0, 0.3, 2.0]))
def test_finite_nonnegative(batch: tuple, margin: float) -> None:
    x, labels, _ = batch
    x = x.requires_grad_(True)
    loss = hard_triplet_loss(x, labels, margin=margin)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@given(batch=pkm_batches(), data=st.data())
def test_permutation_invariance(batch: tuple, data: st.DataObject) -> None:
    x, labels, _ = batch
    perm = torch.tensor(data.draw(st.permutations(range(len(labels)))), dtype=torch.long)
    per_anchor = hard_triplet_loss(x, labels, reduction="none")
    torch.testing.assert_close(hard_triplet_loss(x[perm], labels[perm], reduction="none"), per_anchor[perm])
    torch.testing.assert_close(hard_triplet_loss(x[perm], labels[perm]), hard_triplet_loss(x, labels))


@given(batch=pkm_batches(), data=st.data())
def test_relabel_invariance(batch: tuple, data: st.DataObject) -> None:
    x, labels, _ = batch
    new_labels = relabel(labels, data.draw(bijections(len(torch.unique(labels)))))
    torch.testing.assert_close(
        hard_triplet_loss(x, new_labels, reduction="none"), hard_triplet_loss(x, labels, reduction="none")
    )


@given(batch=pkm_batches(num_ids=(1, 3), num_instances=(1, 2), dim=(2, 4)))
def test_matches_reference_property(batch: tuple) -> None:
    x, labels, _ = batch
    expected = official_triplet(x, labels, reduction="none")
    assert_close_at(hard_triplet_loss(x, labels, reduction="none"), expected, torch.float32)


# ------------------------------------------------------------------------------------------ degenerate batches


@pytest.mark.parametrize("n", [1, 2, 5])
def test_one_identity(n: int) -> None:
    """No negatives anywhere: 0, connected to the graph, zero gradients (the official code crashes)."""
    x = torch.randn(n, 4, requires_grad=True)
    loss = hard_triplet_loss(x, torch.full((n,), 42))
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert x.grad is not None and x.grad.abs().max() == 0
    assert hard_triplet_loss(x, torch.full((n,), 42), reduction="none").tolist() == [0.0] * n


def test_all_coincide() -> None:
    """All embeddings coincide: d_ap = d_an = 1e-6 (clamped), so the loss is the margin, with finite gradients."""
    x = torch.zeros(4, 3, requires_grad=True)
    loss = hard_triplet_loss(x, torch.tensor([1, 1, 2, 2]), margin=0.3)
    torch.testing.assert_close(loss, torch.tensor(0.3))
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction: str) -> None:
    """STYLE rule 10: an empty batch gives a zero (or an empty vector) connected to the graph."""
    x = torch.zeros(0, 4, requires_grad=True)
    loss = hard_triplet_loss(x, torch.zeros(0, dtype=torch.long), reduction=reduction)
    assert loss.shape == ((0,) if reduction == "none" else ()) and loss.sum().item() == 0
    assert loss.requires_grad
    loss.sum().backward()


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("x", "labels", "error", "name"),
    [
        (torch.randn(6), torch.zeros(6, dtype=torch.long), ValueError, "embeddings"),
        (torch.randn(2, 6, 4), torch.zeros(6, dtype=torch.long), ValueError, "embeddings"),
        (torch.ones(6, 4, dtype=torch.long), torch.zeros(6, dtype=torch.long), TypeError, "embeddings"),
        ([[0.0, 1.0]], torch.zeros(1, dtype=torch.long), TypeError, "embeddings"),
        (torch.randn(6, 4), torch.zeros(5, dtype=torch.long), ValueError, "labels"),
        (torch.randn(6, 4), torch.zeros(6, 1, dtype=torch.long), ValueError, "labels"),
        (torch.randn(6, 4), torch.zeros(6), TypeError, "labels"),
        (torch.randn(6, 4), torch.zeros(6, dtype=torch.bool), TypeError, "labels"),
        (torch.randn(6, 4), [0] * 6, TypeError, "labels"),
    ],
)
def test_exception(x: object, labels: object, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        hard_triplet_loss(x, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"margin": -0.3}, ValueError, "margin"),
        ({"margin": "0.3"}, TypeError, "margin"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
        ({"reduction": None}, ValueError, "reduction"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, error: type[Exception], name: str) -> None:
    x, labels = _batch(torch.float32)
    with pytest.raises(error, match=name):
        hard_triplet_loss(x, labels, **kwargs)
    with pytest.raises(error, match=name):
        HardTripletLoss(**kwargs)


# ------------------------------------------------------------------------------------ compile / amp / module


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile(reduction: str) -> None:
    x, labels = _batch(torch.float32)
    module = HardTripletLoss(margin=0.5, reduction=reduction)
    expected = module(x, labels)
    torch.testing.assert_close(torch.compile(module, backend="eager", fullgraph=True)(x, labels), expected)
    functional = functools.partial(hard_triplet_loss, margin=0.5, reduction=reduction)
    torch.testing.assert_close(torch.compile(functional, backend="eager", fullgraph=True)(x, labels), expected)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_backward(reduction: str) -> None:
    """The hand-written backward traced by AOTAutograd gives the eager values and gradients."""
    x, labels = _batch(torch.float32, seed=4)
    fn = functools.partial(hard_triplet_loss, margin=0.5, reduction=reduction)
    x_eager, x_compiled = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected = fn(x_eager, labels)
    actual = torch.compile(fn, backend="aot_eager", fullgraph=True)(x_compiled, labels)
    assert expected.sum() > 0
    torch.testing.assert_close(actual, expected)
    grad = _grad_with(actual, x_compiled, 2)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, _grad_with(expected, x_eager, 2))


def test_bf16_autocast() -> None:
    x, labels = _batch(torch.float32, seed=6, d=16)
    x = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = hard_triplet_loss(x, labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, hard_triplet_loss(x.detach().float(), labels), rtol=2e-2, atol=1e-3)
    loss.backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    # Mining and distances run in float32 on the upcast input: the float32 gradient, rounded to bfloat16.
    x32 = x.detach().float().requires_grad_(True)
    hard_triplet_loss(x32, labels).backward()
    assert x32.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, x32.grad.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize(("margin", "reduction"), [(0.3, "mean"), (0.0, "sum"), (1.2, "none")])
def test_module_matches_functional(margin: float, reduction: str) -> None:
    x, labels = _batch(torch.float32)
    torch.testing.assert_close(
        HardTripletLoss(margin=margin, reduction=reduction)(x, labels),
        hard_triplet_loss(x, labels, margin=margin, reduction=reduction),
        rtol=0,
        atol=0,
    )


def test_extra_repr() -> None:
    assert repr(HardTripletLoss(margin=0.5, reduction="sum")) == "HardTripletLoss(margin=0.5, reduction='sum')"
    assert "margin=0.3" in repr(HardTripletLoss()) and "reduction='mean'" in repr(HardTripletLoss())


# ------------------------------------------------------------------------------ non-finite input (the issue)


def test_nan_embedding_gives_nan_loss_and_gradients() -> None:
    """One NaN used to give a loss of 0.0 (with NaN gradients in every row); now NaN, as triplet_margin_loss."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    x[3, 1] = float("nan")
    x.requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = hard_triplet_loss(x, labels)
    assert torch.isnan(loss)
    assert torch.isnan(hard_triplet_loss(x, labels, reduction="none")).all()  # every row meets the NaN row
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isnan(grad).any(1).all()
    assert torch.isnan(hard_triplet_loss(x, torch.zeros(8, dtype=torch.long)))  # no negative: still NaN
    reference = torch.nn.functional.triplet_margin_loss(x[:1], x[1:2], x[3:4])
    assert torch.isnan(reference)  # the behaviour we follow


def test_overflowing_distances_are_not_zero() -> None:
    """float32 embeddings x 1e20: the squared distances overflow; the loss is NaN, never the old 0.0."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)) * 1e20
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.isnan(hard_triplet_loss(x, labels))
    exact = hard_triplet_loss(x.double(), labels)  # float64 has the range: the true value, ~1e20
    assert torch.isfinite(exact) and exact > 1e19


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_margin_is_refused(margin: float) -> None:
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="`margin`"):
        hard_triplet_loss(x, labels, margin=margin)
    with pytest.raises(ValueError, match="`margin`"):
        HardTripletLoss(margin=margin)
