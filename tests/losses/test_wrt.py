"""Tests for the weighted regularised triplet loss against the official ``TripletLoss_WRT`` (AGW)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import F64, assert_close_at, bijections, grid_randn, loop_distance_matrix, pkm_batches, relabel

from vireid_layers.losses.wrt import WRTLoss, wrt_loss

DTYPES = [torch.float32, F64]
REDUCTIONS = ["mean", "sum", "none"]


def reference_wrt(
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    stable: bool = False,
    eps: float = 1e-6,
    normalize: bool = False,
    reduction: str = "none",
    parts: dict | None = None,
) -> torch.Tensor:
    """``TripletLoss_WRT`` one anchor at a time (reference ddag_agw_eval.md §7.4), in float64.

    Official (``stable=False``): ``softmax_weights(d, mask)`` shifts by the row maximum of ``d * mask`` and
    adds ``eps`` to the denominator; the negative side is called on ``-dist * is_neg``, whose masked row
    maximum is 0, so its weights are ``exp(-d) / (sum exp(-d) + eps)``. ``stable=True`` shifts each side by
    the maximum over its own entries and adds no ``eps``: weights that always sum to 1.
    """
    x = x.to(F64)
    if normalize:
        x = x / (x.norm(2, dim=-1, keepdim=True) + 1e-12)
    dist = loop_distance_matrix(x)
    n = len(labels)
    eps = 0.0 if stable else eps

    def weighted(values: list[torch.Tensor], mask: list[bool], logits: list[torch.Tensor]) -> torch.Tensor:
        if stable:
            shift = torch.stack([z for z, m in zip(logits, mask, strict=True) if m]).max() if any(mask) else 0.0
        else:  # the official: row max of (logits * mask) over the whole row
            shift = torch.stack([z * m for z, m in zip(logits, mask, strict=True)]).max()
        exps = [torch.exp(z - shift) * m for z, m in zip(logits, mask, strict=True)]
        denominator = torch.stack(exps).sum() + eps
        if stable and not any(mask):
            return x.new_zeros(())
        return torch.stack([v * e / denominator for v, e in zip(values, exps, strict=True)]).sum()

    losses, furthest, closest = [], [], []
    for i in range(n):
        is_pos = [bool(labels[j] == labels[i]) for j in range(n)]
        is_neg = [not p for p in is_pos]
        dist_ap = [dist[i, j] * p for j, p in enumerate(is_pos)]
        dist_an = [dist[i, j] * q for j, q in enumerate(is_neg)]
        fp = weighted(dist_ap, is_pos, dist_ap)
        cn = weighted(dist_an, is_neg, [-d for d in dist_an])
        losses.append(torch.log1p(torch.exp(fp - cn)))  # SoftMarginLoss(cn - fp, y = 1)
        furthest.append(fp)
        closest.append(cn)
    if parts is not None:
        parts["furthest_positive"] = torch.stack(furthest)
        parts["closest_negative"] = torch.stack(closest)
    out = torch.stack(losses)
    return {"mean": out.mean(), "sum": out.sum(), "none": out}[reduction]


def _batch(dtype: torch.dtype, seed: int = 0, n_ids: int = 4, k: int = 3, d: int = 8, scale: float = 0.3) -> tuple:
    g = torch.Generator().manual_seed(seed)
    values = torch.randperm(1000, generator=g)[:n_ids] * 7 - 3000
    labels = values.repeat_interleave(k)[torch.randperm(n_ids * k, generator=g)]
    return grid_randn(n_ids * k, d, generator=g, scale=scale, dtype=dtype), labels


def _min_negative_distance(x: torch.Tensor, labels: torch.Tensor) -> float:
    dist = torch.cdist(x.double(), x.double())
    return float(dist[labels.unsqueeze(0) != labels.unsqueeze(1)].min())


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke() -> None:
    x, labels = _batch(torch.float32)
    x.requires_grad_(True)
    loss = WRTLoss()(x, labels)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("reduction", "shape"), [("mean", ()), ("sum", ()), ("none", (12,))])
def test_shape(reduction: str, shape: tuple) -> None:
    x, labels = _batch(torch.float32)
    assert wrt_loss(x, labels, reduction=reduction).shape == shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_follows_input(dtype: torch.dtype) -> None:
    x, labels = _batch(dtype)
    assert wrt_loss(x, labels).dtype == dtype


# ----------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("dtype", "reduction", "k"),
    [(torch.float32, r, k) for r in REDUCTIONS for k in (1, 3)] + [(F64, "none", k) for k in (1, 3)],
)
def test_reference(dtype: torch.dtype, reduction: str, k: int) -> None:
    """Small distances (min negative distance < 4): the official value, eps and shifts included, to 1e-4."""
    x, labels = _batch(dtype, seed=k, k=k)
    assert _min_negative_distance(x, labels) < 4
    x_ref = x.clone().requires_grad_(True)
    x.requires_grad_(True)
    expected = reference_wrt(x_ref, labels, reduction=reduction)
    actual = wrt_loss(x, labels, reduction=reduction)
    assert_close_at(actual, expected, dtype, rtol=1e-4, atol=1e-6)
    (grad,) = torch.autograd.grad(actual.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x_ref)
    assert_close_at(grad, expected_grad, dtype, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_normalize(dtype: torch.dtype) -> None:
    """``normalize=True`` is the official loss on ``x / (|x| + 1e-12)``; scale no longer matters."""
    x, labels = _batch(dtype, seed=3, scale=5.0)
    expected = reference_wrt(x, labels, normalize=True)
    # float32 rounding of the normalised self-distances (no longer exact) costs up to ~1e-4.
    tolerance = {"rtol": 1e-4, "atol": 2e-4} if dtype == torch.float32 else {"rtol": 1e-4, "atol": 1e-7}
    assert_close_at(wrt_loss(x, labels, normalize=True, reduction="none"), expected, dtype, **tolerance)
    assert abs(float(wrt_loss(x, labels).mean()) - float(expected.mean())) > 1e-2  # normalising matters here


def test_large_distances_stay_weighted() -> None:
    """Far negatives: the official weights exp(-d) / (sum exp(-d) + eps) vanish and its "closest negative"
    collapses to ~0; the library keeps weights that sum to 1 (the stable softmax), with finite gradients."""
    x, labels = _batch(torch.float32, seed=4, scale=100.0)
    assert _min_negative_distance(x, labels) > 50
    x.requires_grad_(True)
    actual = wrt_loss(x, labels, reduction="none")
    assert torch.isfinite(actual).all()
    stable_parts: dict = {}
    official_parts: dict = {}
    stable = reference_wrt(x.detach(), labels, stable=True, parts=stable_parts)
    official = reference_wrt(x.detach(), labels, parts=official_parts)
    torch.testing.assert_close(actual.double(), stable, rtol=1e-4, atol=1e-4)
    # The official collapse is real: its closest negative is ~0 and its loss equals the furthest positive.
    assert official_parts["closest_negative"].abs().max() < 1e-6
    assert stable_parts["closest_negative"].min() > 50
    assert (official - actual.detach().double()).min() > 50
    (grad,) = torch.autograd.grad(actual.mean(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradcheck() -> None:
    x, labels = _batch(F64, seed=5, n_ids=3, k=2, d=4, scale=0.5)
    for kwargs in ({}, {"normalize": True}, {"reduction": "none"}):
        fn = functools.partial(wrt_loss, labels=labels, **kwargs)
        assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-4)


# ------------------------------------------------------------------------------------------------ properties


@given(batch=pkm_batches(coincide="any"), scale=st.sampled_from([0.01, 1.0, 300.0]), normalize=st.booleans())
def test_finite_nonnegative(batch: tuple, scale: float, normalize: bool) -> None:
    x, labels, _ = batch
    x = (x * scale).requires_grad_(True)
    loss = wrt_loss(x, labels, normalize=normalize)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@given(batch=pkm_batches(), data=st.data())
def test_permutation_invariance(batch: tuple, data: st.DataObject) -> None:
    x, labels, _ = batch
    perm = torch.tensor(data.draw(st.permutations(range(len(labels)))), dtype=torch.long)
    per_anchor = wrt_loss(x, labels, reduction="none")
    torch.testing.assert_close(wrt_loss(x[perm], labels[perm], reduction="none"), per_anchor[perm])
    torch.testing.assert_close(wrt_loss(x[perm], labels[perm]), wrt_loss(x, labels))


@given(batch=pkm_batches(), data=st.data())
def test_relabel_invariance(batch: tuple, data: st.DataObject) -> None:
    x, labels, _ = batch
    new_labels = relabel(labels, data.draw(bijections(len(torch.unique(labels)))))
    torch.testing.assert_close(wrt_loss(x, new_labels, reduction="none"), wrt_loss(x, labels, reduction="none"))


@given(batch=pkm_batches(num_ids=(2, 4)), scale=st.floats(0.01, 100.0))
def test_scale_invariance_normalized(batch: tuple, scale: float) -> None:
    """With ``normalize=True`` the loss uses cosine geometry: positive rescaling changes nothing (in float64)."""
    x, labels, _ = batch
    x = x.double()
    torch.testing.assert_close(wrt_loss(x * scale, labels, normalize=True), wrt_loss(x, labels, normalize=True))


@given(batch=pkm_batches(num_ids=(1, 3), num_instances=(1, 2), dim=(2, 4)))
def test_matches_reference_property(batch: tuple) -> None:
    x, labels, _ = batch
    expected = reference_wrt(x, labels)
    assert_close_at(wrt_loss(x, labels, reduction="none"), expected, torch.float32, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ degenerate batches


@pytest.mark.parametrize("n", [1, 2, 5])
def test_one_identity(n: int) -> None:
    """No negatives: the closest negative is 0 (as officially), the loss softplus(furthest positive)."""
    x = grid_randn(n, 4, generator=torch.Generator().manual_seed(n), dtype=torch.float32).requires_grad_(True)
    labels = torch.full((n,), -5)
    loss = wrt_loss(x, labels, reduction="none")
    assert torch.isfinite(loss).all()
    assert_close_at(loss, reference_wrt(x.detach(), labels), torch.float32, rtol=1e-4, atol=1e-6)
    loss.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_all_coincide() -> None:
    x = torch.ones(6, 3, requires_grad=True)
    loss = wrt_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(loss, torch.nn.functional.softplus(torch.tensor(0.0)), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction: str) -> None:
    """STYLE rule 10: an empty batch gives a zero (or an empty vector) connected to the graph."""
    x = torch.zeros(0, 4, requires_grad=True)
    loss = wrt_loss(x, torch.zeros(0, dtype=torch.long), reduction=reduction)
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
        (torch.randn(6, 4), torch.zeros(7, dtype=torch.long), ValueError, "labels"),
        (torch.randn(6, 4), torch.zeros(2, 3, dtype=torch.long), ValueError, "labels"),
        (torch.randn(6, 4), torch.zeros(6), TypeError, "labels"),
    ],
)
def test_exception(x: object, labels: object, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        wrt_loss(x, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"eps": -1e-6}, ValueError, "eps"),
        ({"eps": "1e-6"}, TypeError, "eps"),
        ({"reduction": "avg"}, ValueError, "reduction"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, error: type[Exception], name: str) -> None:
    x, labels = _batch(torch.float32)
    with pytest.raises(error, match=name):
        wrt_loss(x, labels, **kwargs)
    with pytest.raises(error, match=name):
        WRTLoss(**kwargs)


# ------------------------------------------------------------------------------------ compile / amp / module


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("normalize", [False, True])
def test_compile(normalize: bool) -> None:
    x, labels = _batch(torch.float32)
    module = WRTLoss(normalize=normalize, reduction="none")
    expected = module(x, labels)
    torch.testing.assert_close(torch.compile(module, backend="eager", fullgraph=True)(x, labels), expected)
    functional = functools.partial(wrt_loss, normalize=normalize, reduction="none")
    torch.testing.assert_close(torch.compile(functional, backend="eager", fullgraph=True)(x, labels), expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_bf16_autocast(normalize: bool) -> None:
    x, labels = _batch(torch.float32, seed=6, d=16, scale=1.0)
    x = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = wrt_loss(x, labels, normalize=normalize)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = wrt_loss(x.detach().float(), labels, normalize=normalize)
    torch.testing.assert_close(loss, expected, rtol=2e-2, atol=1e-3)
    loss.backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "kwargs", [{}, {"normalize": True}, {"eps": 0.0, "reduction": "sum"}, {"eps": 1e-3, "reduction": "none"}]
)
def test_module_matches_functional(kwargs: dict) -> None:
    x, labels = _batch(torch.float32)
    torch.testing.assert_close(WRTLoss(**kwargs)(x, labels), wrt_loss(x, labels, **kwargs), rtol=0, atol=0)


def test_extra_repr() -> None:
    text = repr(WRTLoss(normalize=True, eps=1e-3, reduction="sum"))
    assert text == "WRTLoss(normalize=True, eps=0.001, reduction='sum')"
    assert "normalize=False" in repr(WRTLoss()) and "eps=1e-06" in repr(WRTLoss())


# ------------------------------------------------------------------------------------------ the official form


def _at_distance(scale: float, seed: int = 7) -> tuple:
    """A float64 batch whose pairwise distances are about ``scale`` x the unit batch's."""
    return _batch(F64, seed=seed, n_ids=4, k=3, d=8, scale=scale)


@pytest.mark.parametrize("scale", [0.3, 3.0, 10.0, 30.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_official_form_matches_reference(scale: float, reduction: str) -> None:
    """``form="official"`` is ``TripletLoss_WRT`` exactly, in float64, values and gradients, at every distance.

    The large-distance regime included: from a nearest negative of about 14 on, the official negative weights
    vanish and its loss grows like the furthest positive distance.
    """
    x, labels = _at_distance(scale)
    x_ref = x.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    expected = reference_wrt(x_ref, labels, reduction=reduction)
    actual = wrt_loss(x, labels, form="official", reduction=reduction)
    assert_close_at(actual, expected, F64, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(actual.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x_ref)
    assert_close_at(grad, expected_grad, F64, rtol=1e-10, atol=1e-12)


def test_official_and_stable_forms_diverge_at_large_distances() -> None:
    """Equal to 1e-4 when every nearest negative is closer than 4.6; far apart when every negative is beyond 14."""
    x, labels = _at_distance(0.3)
    assert _min_negative_distance(x, labels) < 4.6
    torch.testing.assert_close(wrt_loss(x, labels, form="official"), wrt_loss(x, labels), rtol=1e-4, atol=0)
    x, labels = _at_distance(40.0)
    assert _min_negative_distance(x, labels) > 14
    official, stable = wrt_loss(x, labels, form="official"), wrt_loss(x, labels)
    parts: dict = {}
    reference_wrt(x, labels, parts=parts)
    assert float(official) > float(stable) + 50  # the official loss keeps the furthest positive, uncompensated
    assert parts["closest_negative"].max() < 1.0  # the official "closest negative" collapses


def test_official_form_gradcheck() -> None:
    x, labels = _batch(F64, seed=5, n_ids=3, k=2, d=4, scale=0.5)
    for kwargs in ({}, {"normalize": True}, {"reduction": "none"}):
        fn = functools.partial(wrt_loss, labels=labels, form="official", **kwargs)
        assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-4)


def test_official_form_module_compile_and_repr() -> None:
    x, labels = _batch(torch.float32)
    module = WRTLoss(form="official", reduction="none")
    torch.testing.assert_close(
        module(x, labels), wrt_loss(x, labels, form="official", reduction="none"), rtol=0, atol=0
    )
    compiled = torch.compile(module, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, labels), module(x, labels))
    assert repr(module) == "WRTLoss(normalize=False, eps=1e-06, form='official', reduction='none')"
    with pytest.raises(ValueError, match="`form`"):
        WRTLoss(form="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`form`"):
        wrt_loss(x, labels, form="paper")  # type: ignore[arg-type]


def test_official_form_bf16_autocast() -> None:
    x, labels = _batch(torch.float32, seed=6, d=16, scale=1.0)
    x = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = wrt_loss(x, labels, form="official")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, wrt_loss(x.detach().float(), labels, form="official"), rtol=2e-2, atol=1e-3)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
