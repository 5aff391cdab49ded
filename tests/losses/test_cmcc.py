"""Tests for the MSO cross-modality contrastive-centre loss against a loop over identities (Eq. 4-5)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import bijections, grid_randn, pkm_batches, relabel, sampler_layout

from vireid_layers.distances import pairwise_euclidean
from vireid_layers.losses.cmcc import CMCCLoss, cmcc_loss

F64 = torch.float64
# CMCC measures with vireid_layers.distances and inherits its precision contract: float32 at least, float64
# kept where that module keeps it. The float64 tolerances below follow what the module does.
DISTANCES_KEEP_F64 = pairwise_euclidean(torch.zeros(1, 1, dtype=F64)).dtype == F64


# ----------------------------------------------------------------------------------------- plain reference


def loop_cmcc(x: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Eq. 4-5 one identity at a time, in float64, with the official clamp-then-sqrt distance."""
    x = x.to(F64)
    if normalize:
        x = torch.stack([row / (row.norm() + 1e-12) for row in x])

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a * a).sum() + (b * b).sum() - 2 * (a * b).sum()).clamp(min=1e-12).sqrt()

    ids = [k for k in sorted(set(labels.tolist())) if {0, 1} <= set(modalities[labels == k].tolist())]
    visible, infrared, center = {}, {}, {}
    for k in ids:
        visible[k] = x[(labels == k) & (modalities == 0)].mean(0)
        infrared[k] = x[(labels == k) & (modalities == 1)].mean(0)
        center[k] = (visible[k] + infrared[k]) / 2
    terms = []
    for k in ids:
        intra = dist(visible[k], infrared[k])
        others = [dist(center[k], center[j]) for j in ids if j != k]
        if not others:  # softplus(intra - inf) = 0
            terms.append(0.0 * intra)
            continue
        inter = torch.stack(others).min()
        terms.append(torch.log(1 + torch.exp(-(inter - intra))))
    if not terms:
        return x.sum() * 0.0
    return torch.stack(terms).mean()


def chunked_third_party(x: torch.Tensor, num_ids: int) -> torch.Tensor:
    """The third-party MSO layout form (normalize=False): centres by chunking the batch into 2n equal pieces."""
    chunks = x.to(F64).chunk(2 * num_ids, 0)
    visible = torch.stack([c.mean(0) for c in chunks[:num_ids]])
    infrared = torch.stack([c.mean(0) for c in chunks[num_ids:]])
    intra = (visible - infrared).pow(2).sum(1).clamp(min=1e-12).sqrt()
    center = (visible + infrared) / 2
    dist = (center[:, None] - center[None]).pow(2).sum(-1).clamp(min=1e-12).sqrt()
    dist = dist + torch.diag(torch.full((num_ids,), float("inf"), dtype=F64))
    return torch.log(1 + torch.exp(intra - dist.min(1).values)).mean()


def shuffled_batch(dtype: torch.dtype = F64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Arbitrary order and labels, unequal counts per modality, and identities present in one modality only."""
    labels = torch.tensor([90, -4, 90, 13, -4, 13, 90, 13, -4, 13, 90, 7, 7, 55])
    modalities = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1])  # 7: visible only, 55: infrared only
    return grid_randn(len(labels), 5, generator=torch.Generator().manual_seed(seed), dtype=dtype), labels, modalities


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke_mso_batch() -> None:
    """MSO's batch layout: 8 identities x (4 visible + 4 infrared), 2048-d BN features."""
    labels, modalities = sampler_layout(list(range(8)), 4)
    x = torch.randn(64, 2048, requires_grad=True)
    loss = CMCCLoss()(x, labels, modalities)
    assert loss.shape == () and loss.dtype == torch.float32 and loss > 0
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_reference_shuffled(normalize: bool, dtype: torch.dtype) -> None:
    x, labels, modalities = shuffled_batch(dtype)
    x_ref, x_lib = _leaf(x.to(F64)), _leaf(x)
    expected = loop_cmcc(x_ref, labels, modalities, normalize)
    actual = cmcc_loss(x_lib, labels, modalities, normalize=normalize)
    assert expected > 0
    tol = 1e-9 if dtype == F64 and DISTANCES_KEEP_F64 else 1e-5
    torch.testing.assert_close(actual.to(F64), expected, rtol=tol, atol=tol)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(x_lib.grad.to(F64), x_ref.grad, rtol=tol, atol=tol)
    # the one-modality identities (7 and 55) get no gradient
    one_modality = (labels == 7) | (labels == 55)
    assert x_lib.grad[one_modality].abs().max() == 0 and x_lib.grad[~one_modality].abs().sum() > 0


def test_reference_sampler_layout_and_third_party() -> None:
    labels, modalities = sampler_layout([5, 1, 9, 3], 3)
    x = grid_randn(24, 6, generator=torch.Generator().manual_seed(1))
    expected = loop_cmcc(x, labels, modalities, normalize=True)
    torch.testing.assert_close(cmcc_loss(x, labels, modalities).to(F64), expected, rtol=1e-6, atol=1e-6)
    # without normalisation and on the sampler's layout, the third-party chunked form agrees
    torch.testing.assert_close(
        cmcc_loss(x, labels, modalities, normalize=False).to(F64), chunked_third_party(x, 4), rtol=1e-6, atol=1e-6
    )


def test_normalize_flag() -> None:
    x, labels, modalities = shuffled_batch(torch.float32, seed=2)
    normalized = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(
        cmcc_loss(x, labels, modalities), cmcc_loss(normalized, labels, modalities, normalize=False)
    )
    assert not torch.allclose(cmcc_loss(x, labels, modalities), cmcc_loss(x, labels, modalities, normalize=False))


def test_hand_computed() -> None:
    # id 0: visible (1, 0), infrared (0.8, 0.6); id 1: visible (0, 1), infrared (0.6, 0.8)
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    loss = cmcc_loss(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
    intra, inter = math.sqrt(0.4), math.sqrt(0.72)
    assert math.isclose(float(loss), math.log1p(math.exp(intra - inter)), rel_tol=1e-6)


def test_module_matches_functional() -> None:
    x, labels, modalities = shuffled_batch(torch.float32, seed=3)
    for normalize in (True, False):
        torch.testing.assert_close(
            CMCCLoss(normalize=normalize)(x, labels, modalities), cmcc_loss(x, labels, modalities, normalize=normalize)
        )


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_dtype(dtype: torch.dtype) -> None:
    x, labels, modalities = shuffled_batch(dtype)
    expected = pairwise_euclidean(x).dtype  # float32 at least, like the distances it is made of
    assert expected in (torch.float32, F64)
    assert cmcc_loss(x, labels, modalities).dtype == expected
    assert cmcc_loss(x, labels, modalities, normalize=False).dtype == expected


# ------------------------------------------------------------------------------------------------ degenerate


def _connected_zero(loss: torch.Tensor, x: torch.Tensor) -> None:
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() == 0


def test_single_identity() -> None:
    """One identity in both modalities: no other centre, d_inter = +inf, softplus(-inf) = 0, zero gradient."""
    x = torch.randn(6, 4, requires_grad=True)
    _connected_zero(cmcc_loss(x, torch.full((6,), 3), torch.tensor([0, 1, 0, 1, 0, 1])), x)


def test_single_modality() -> None:
    x = torch.randn(6, 4, requires_grad=True)
    _connected_zero(cmcc_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), torch.zeros(6, dtype=torch.long)), x)


def test_identity_in_one_modality_only_is_left_out() -> None:
    """Identity 8 (infrared only) sits right next to the others: included, it would be everyone's neighbour."""
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([1, 1, 2, 2, 3, 3, 8, 8])
    modalities = torch.tensor([0, 1, 0, 1, 0, 1, 1, 1])
    x = grid_randn(8, 3, generator=g, dtype=torch.float32)
    x[6:] = x[:2].mean(0)
    keep = labels != 8
    x = _leaf(x)
    loss = cmcc_loss(x, labels, modalities)
    torch.testing.assert_close(loss, cmcc_loss(x[keep], labels[keep], modalities[keep]))
    loss.backward()
    assert x.grad[~keep].abs().max() == 0
    # with only one identity left in both modalities, the loss is the connected zero
    y = torch.randn(4, 3, requires_grad=True)
    _connected_zero(cmcc_loss(y, torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0])), y)


def test_empty_batch() -> None:
    x = torch.zeros(0, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    _connected_zero(cmcc_loss(x, empty, empty), x)


@pytest.mark.parametrize("normalize", [True, False])
def test_coinciding_embeddings_finite(normalize: bool) -> None:
    labels, modalities = sampler_layout([0, 1, 2], 2)
    # grid values: the fp32 expansion |a|^2 + |b|^2 - 2ab is exactly 0, so every distance is exactly 1e-6
    for x in (torch.zeros(12, 4), torch.ones(12, 4), torch.tensor([[0.5, -1.25, 2.0, 0.75]]).expand(12, 4)):
        x = _leaf(x)
        loss = cmcc_loss(x, labels, modalities, normalize=normalize)
        assert math.isclose(loss.item(), math.log(2.0), rel_tol=1e-5)  # d_intra = d_inter = 1e-6
        loss.backward()
        assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------------------- gradcheck


def test_gradcheck() -> None:
    x, labels, modalities = shuffled_batch(F64, seed=5)
    # float32 distances need a wider step and tolerance (as in the other centre-based losses)
    tol = {"eps": 1e-6, "atol": 1e-5} if DISTANCES_KEEP_F64 else {"eps": 1e-3, "atol": 2e-3, "rtol": 1e-2}
    for normalize in (True, False):
        fn = functools.partial(cmcc_loss, labels=labels, modalities=modalities, normalize=normalize)
        assert torch.autograd.gradcheck(lambda t, f=fn: f(t).double(), (_leaf(x),), **tol)


# ------------------------------------------------------------------------------------------------ properties


@settings(deadline=None, max_examples=30)
@given(batch=pkm_batches(num_ids=(1, 5), modalities="mixed"), normalize=st.booleans(), data=st.data())
def test_permutation_and_relabel_invariance(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], normalize: bool, data: st.DataObject
) -> None:
    x, labels, modalities = batch
    loss = cmcc_loss(x, labels, modalities, normalize=normalize)
    perm = torch.tensor(data.draw(st.permutations(range(len(labels)))))
    torch.testing.assert_close(cmcc_loss(x[perm], labels[perm], modalities[perm], normalize=normalize), loss)
    renamed = relabel(labels, data.draw(bijections(len(set(labels.tolist())))))
    torch.testing.assert_close(cmcc_loss(x, renamed, modalities, normalize=normalize), loss)
    torch.testing.assert_close(loss.to(F64), loop_cmcc(x, labels, modalities, normalize), rtol=1e-5, atol=1e-5)


@settings(deadline=None, max_examples=30)
@given(batch=pkm_batches(num_ids=(1, 5), modalities="mixed"), normalize=st.booleans())
def test_modality_swap_symmetry(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], normalize: bool) -> None:
    x, labels, modalities = batch
    torch.testing.assert_close(
        cmcc_loss(x, labels, 1 - modalities, normalize=normalize), cmcc_loss(x, labels, modalities, normalize=normalize)
    )


@settings(deadline=None, max_examples=30)
@given(
    batch=pkm_batches(num_ids=(1, 4), modalities="mixed", coincide="any"),
    normalize=st.booleans(),
    scale=st.sampled_from([0.0, 1e-6, 1.0, 1e3]),
)
def test_finite_nonnegative_with_finite_gradients(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], normalize: bool, scale: float
) -> None:
    x, labels, modalities = batch
    x = _leaf(x * scale)
    loss = cmcc_loss(x, labels, modalities, normalize=normalize)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert torch.isfinite(x.grad).all()


@settings(deadline=None, max_examples=20)
@given(batch=pkm_batches(num_ids=(2, 4)), scale=st.sampled_from([1e-3, 0.5, 7.0, 1e3]))
def test_scale_invariance_when_normalized(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], scale: float) -> None:
    x, labels, modalities = batch
    torch.testing.assert_close(cmcc_loss(x * scale, labels, modalities), cmcc_loss(x, labels, modalities))


# ------------------------------------------------------------------------------------------- compile / dtypes


def test_compile() -> None:
    torch._dynamo.reset()
    criterion = CMCCLoss()
    compiled = torch.compile(criterion, backend="eager", fullgraph=True)
    x, labels, modalities = shuffled_batch(torch.float32)
    torch.testing.assert_close(compiled(x, labels, modalities), criterion(x, labels, modalities))
    single = torch.full((4,), 2)
    torch.testing.assert_close(compiled(x[:4], single, modalities[:4]), criterion(x[:4], single, modalities[:4]))


def test_bf16_autocast() -> None:
    labels, modalities = sampler_layout([0, 1, 2, 3], 2)
    x = torch.randn(16, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings = torch.nn.functional.linear(x, torch.eye(64))  # a bf16 tensor, as from a BN neck
        loss = cmcc_loss(embeddings, labels, modalities)
    assert embeddings.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("x", "labels", "modalities", "error", "message"),
    [
        (torch.randn(4, 2, 3), torch.zeros(4), torch.zeros(4), ValueError, r"`embeddings` must have shape \(N, D\)"),
        (torch.ones(4, 3, dtype=torch.long), torch.zeros(4), torch.zeros(4), TypeError, "`embeddings`"),
        (
            torch.randn(4, 3),
            torch.zeros(5, dtype=torch.long),
            torch.zeros(4),
            ValueError,
            r"`labels` must have shape \(4,\)",
        ),
        (torch.randn(4, 3), torch.zeros(4), torch.zeros(4), TypeError, "`labels` must be an integer"),
        (
            torch.randn(4, 3),
            torch.zeros(4, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            ValueError,
            "`modalities`",
        ),
        (
            torch.randn(4, 3),
            torch.zeros(4, dtype=torch.long),
            torch.tensor([0, 1, 2, 1]),
            ValueError,
            r"`modalities` must hold only 0 \(visible\) and 1 \(infrared\), got values \[2\]",
        ),
        (
            torch.randn(4, 3),
            torch.zeros(4, dtype=torch.long),
            torch.tensor([0.0, 1.0, 0.0, 1.0]),
            TypeError,
            "`modalities`",
        ),
        ([[1.0]], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), TypeError, "`embeddings`"),
    ],
)
def test_exception(x: object, labels: torch.Tensor, modalities: torch.Tensor, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        cmcc_loss(x, labels, modalities)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        CMCCLoss()(x, labels, modalities)


def test_exception_normalize() -> None:
    with pytest.raises(TypeError, match="`normalize`"):
        CMCCLoss(normalize=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`normalize`"):
        cmcc_loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), normalize="yes")  # type: ignore[arg-type]


def test_extra_repr() -> None:
    assert CMCCLoss().extra_repr() == "normalize=True"
    assert repr(CMCCLoss(normalize=False)) == "CMCCLoss(normalize=False)"
