"""Tests for the MPANet center cluster loss: Eq. 13 and the official chunked anchors, by plain loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.losses.center_cluster import CenterClusterLoss, center_cluster_loss

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws from a freshly seeded global generator: reproducible values, no flaky tolerances."""
    torch.manual_seed(0)


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(((a - b) ** 2).sum(), min=1e-12))


def _centre(x: torch.Tensor, labels: list[int], y: int) -> torch.Tensor:
    return torch.stack([x[i] for i in range(len(labels)) if labels[i] == y]).mean(0)


def _intra(x: torch.Tensor, labels: list[int]) -> torch.Tensor:
    return torch.stack([_distance(x[i], _centre(x, labels, labels[i])) for i in range(len(labels))]).mean()


def reference_paper(x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 13: mean intra distance + mean over identity pairs k < j of [rho - ||h_k - h_j||]_+."""
    ys = sorted(set(labels.tolist()))
    lab = labels.tolist()
    centres = {y: _centre(x, lab, y) for y in ys}
    hinges = [
        torch.clamp(margin - _distance(centres[a], centres[b]), min=0) for i, a in enumerate(ys) for b in ys[i + 1 :]
    ]
    inter = torch.stack(hinges).mean() if hinges else torch.zeros((), dtype=x.dtype)
    return _intra(x, lab) + inter


def reference_official_labels(x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """One anchor per identity; other identities weighted by their number of samples."""
    lab = labels.tolist()
    ys = sorted(set(lab))
    centres = {y: _centre(x, lab, y) for y in ys}
    per_anchor = []
    for a in ys:
        num, den = torch.zeros((), dtype=x.dtype), 0
        for b in ys:
            if b != a:
                count = lab.count(b)
                num = num + count * torch.clamp(margin - _distance(centres[a], centres[b]), min=0)
                den += count
        per_anchor.append(num / den if den else torch.zeros((), dtype=x.dtype))
    return _intra(x, lab) + torch.stack(per_anchor).mean()


def reference_official_chunked(x: torch.Tensor, labels: torch.Tensor, margin: float, k: int = 8) -> torch.Tensor:
    """The official computation as described: per-sample centres by a loop, anchors at samples 0, k, 2k, ...,
    for each anchor the mean over all samples of other identities of the hinge, then the mean over anchors."""
    lab = labels.tolist()
    n = len(lab)
    centres = [_centre(x, lab, lab[i]) for i in range(n)]
    intra = torch.stack([torch.sqrt(((x[i] - centres[i]) ** 2).sum()) for i in range(n)]).mean()
    per_anchor = []
    for a in range(0, n, k):
        others = [j for j in range(n) if lab[j] != lab[a]]
        hinges = [torch.clamp(margin - _distance(centres[a], centres[j]), min=0) for j in others]
        per_anchor.append(torch.stack(hinges).mean())
    return intra + torch.stack(per_anchor).mean()


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 2e-5, atol: float = 2e-5) -> None:
    """Compare with a float64 loop reference at float32 precision (the library computes distances in float32)."""
    torch.testing.assert_close(actual.to(F64), expected.to(F64), rtol=rtol, atol=atol)


def sampler_batch(num_ids: int, k: int = 8, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The official sampler's layout: each identity one contiguous chunk of k, IR and RGB alternating."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(50, generator=g)[:num_ids]
    labels = ids.repeat_interleave(k)
    modalities = torch.tensor([1, 0] * (k // 2)).repeat(num_ids)  # IR, RGB, IR, RGB, ...
    offsets = torch.randn(num_ids, dim, generator=g, dtype=F64) * 0.12
    x = offsets.repeat_interleave(k, dim=0) + torch.randn(num_ids * k, dim, generator=g, dtype=F64) * 0.15
    return x, labels, modalities


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke_mpanet() -> None:
    """16 identities x 8 images of 14,336-d features (the SYSU batch)."""
    x, labels, _ = sampler_batch(16, dim=14336)
    loss = center_cluster_loss(x.float().requires_grad_(True), labels)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)


def test_example_value() -> None:
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.5, 0.0], [0.5, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    for anchors in ("official", "paper"):
        torch.testing.assert_close(center_cluster_loss(x, labels, anchors=anchors), torch.tensor(1.2))
    torch.testing.assert_close(center_cluster_loss(x, labels, margin=0.4), torch.tensor(1.0))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_unequal_counts(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([3, 7, 3, 1, 7, 7, 9, 3, 1, 3, 9])
    x = torch.randn(11, 6, generator=g, dtype=F64) * 0.1  # centres closer than the margin
    paper = center_cluster_loss(x, labels, anchors="paper")
    official = center_cluster_loss(x, labels, anchors="official")
    close(paper, reference_paper(x, labels, 0.7))
    close(official, reference_official_labels(x, labels, 0.7))
    assert abs(float(paper) - float(official)) > 1e-4  # unequal counts: the forms differ


@pytest.mark.parametrize("num_ids", [2, 4, 16])
def test_official_chunked_on_sampler_layout(num_ids: int) -> None:
    """On the sampler's layout the label-based form equals the chunked official code, and Eq. 13."""
    x, labels, _ = sampler_batch(num_ids, seed=num_ids)
    chunked = reference_official_chunked(x, labels, 0.7, k=8)
    close(center_cluster_loss(x, labels, anchors="official"), chunked)
    close(center_cluster_loss(x, labels, anchors="paper"), chunked)
    torch.testing.assert_close(reference_paper(x, labels, 0.7), chunked)


def test_official_chunked_block_order_irrelevant() -> None:
    x, labels, _ = sampler_batch(4, seed=3)
    blocks = torch.tensor([2, 0, 3, 1])
    index = (blocks.unsqueeze(1) * 8 + torch.arange(8)).flatten()
    chunked = reference_official_chunked(x[index], labels[index], 0.7, k=8)
    close(center_cluster_loss(x[index], labels[index]), chunked)


def test_official_chunked_unequal_counts_with_distinct_anchor_labels() -> None:
    """Anchors 0, 4, 8 hit identities 0, 1, 2 once each: equal to the chunked code, not to Eq. 13."""
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.3
    chunked = reference_official_chunked(x, labels, 0.7, k=4)
    close(center_cluster_loss(x, labels, anchors="official"), chunked)
    assert abs(float(center_cluster_loss(x, labels, anchors="paper")) - float(chunked)) > 1e-4


def test_label_based_is_permutation_invariant_chunked_is_not() -> None:
    x, labels, _ = sampler_batch(4, seed=5)
    pairs = torch.stack([torch.arange(8), torch.arange(8) + 8], dim=1).flatten()  # blocks 0 and 1 interleaved
    perm = torch.cat([pairs, pairs + 16])
    assert len(set(labels[perm][::8].tolist())) < 4  # the permuted anchors repeat an identity
    ours, ours_perm = center_cluster_loss(x, labels), center_cluster_loss(x[perm], labels[perm])
    torch.testing.assert_close(ours_perm, ours)
    chunked, chunked_perm = (
        reference_official_chunked(x, labels, 0.7),
        reference_official_chunked(x[perm], labels[perm], 0.7),
    )
    assert abs(float(chunked_perm) - float(chunked)) > 1e-4


def test_module_matches_functional() -> None:
    x, labels, _ = sampler_batch(3, seed=1)
    for anchors in ("official", "paper"):
        torch.testing.assert_close(
            CenterClusterLoss(margin=0.5, anchors=anchors)(x, labels),
            center_cluster_loss(x, labels, margin=0.5, anchors=anchors),
        )


# --------------------------------------------------------------------------------------------- gradients


def test_gradient_flows_through_centres() -> None:
    """The centres are not detached: the gradient equals the loop reference's, not a detached-centre one."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.3
    ours = x.clone().requires_grad_(True)
    center_cluster_loss(ours, labels, anchors="paper").backward()
    ref = x.clone().requires_grad_(True)
    reference_paper(ref, labels, 0.7).backward()
    torch.testing.assert_close(ours.grad, ref.grad)  # float64 on both sides: the float64 tolerance (was 1e-4)

    detached = x.clone().requires_grad_(True)
    lab = labels.tolist()
    centres = torch.stack([_centre(detached, lab, y) for y in lab]).detach()
    (detached - centres).norm(dim=1).mean().backward()
    assert not torch.allclose(detached.grad, ref.grad, atol=1e-3)


def test_gradcheck() -> None:
    """Centres and distances are computed in float32 (vireid_layers.distances), hence the wider eps/tolerance."""
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64).mul(0.2).requires_grad_(True)
    for anchors in ("official", "paper"):
        assert torch.autograd.gradcheck(
            lambda t, a=anchors: center_cluster_loss(t, labels, anchors=a).double(),
            (x,),
            eps=1e-3,
            atol=2e-3,
            rtol=1e-2,
        )


# ------------------------------------------------------------------------------------------ degenerate


def test_one_identity_is_intra_only() -> None:
    x = torch.randn(5, 4, dtype=F64)
    labels = torch.full((5,), 3)
    for anchors in ("official", "paper"):
        close(center_cluster_loss(x, labels, anchors=anchors), _intra(x, labels.tolist()))


def test_one_sample_finite_zero_gradient() -> None:
    x = torch.randn(1, 8, requires_grad=True)
    loss = center_cluster_loss(x, torch.tensor([4]))
    assert loss.item() == pytest.approx(1e-6)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_empty_batch_connected_zero() -> None:
    x = torch.randn(0, 8, requires_grad=True)
    loss = center_cluster_loss(x, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_singletons_and_duplicates_finite_gradients() -> None:
    """The official intra term has no clamp and gives NaN gradients for singletons; ours stays finite."""
    x = torch.randn(4, 6)
    x = torch.cat([x, x[:2], x[:1]]).requires_grad_(True)  # duplicated rows
    labels = torch.tensor([0, 1, 2, 3, 1, 1, 0])  # identities 2 and 3 are singletons
    for anchors in ("official", "paper"):
        x.grad = None
        loss = center_cluster_loss(x, labels, anchors=anchors)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    naive = x.detach()[2:3].clone().requires_grad_(True)
    torch.sqrt(((naive - naive.mean(0)) ** 2).sum()).backward()  # the unclamped official form
    assert torch.isnan(naive.grad).all()


# ---------------------------------------------------------------------------------------------- properties

batches = st.lists(st.integers(1, 4), min_size=1, max_size=5).flatmap(
    lambda counts: st.tuples(
        st.just(counts),
        st.integers(2, 6),  # dimension
        st.sampled_from(["official", "paper"]),
        st.permutations(range(sum(counts))),
        st.lists(st.integers(-1000, 1000), min_size=len(counts), max_size=len(counts), unique=True),
        st.integers(0, 2**16),
    )
)


@settings(deadline=None, max_examples=40)
@given(batches)
def test_properties(batch: tuple) -> None:
    """P identities x K_p instances: finite, >= 0, permutation- and relabelling-invariant, finite gradients."""
    counts, dim, anchors, perm, names, seed = batch
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    x = torch.randn(len(labels), dim, generator=g) * 0.3
    x[-1] = x[0]  # a duplicated embedding (possibly of another identity)
    x.requires_grad_(True)
    loss = center_cluster_loss(x, labels, anchors=anchors)
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert torch.isfinite(x.grad).all()
    perm = torch.tensor(perm)
    torch.testing.assert_close(center_cluster_loss(x[perm], labels[perm], anchors=anchors), loss)
    renamed = torch.tensor(names)[labels]
    torch.testing.assert_close(center_cluster_loss(x, renamed, anchors=anchors), loss)


# ----------------------------------------------------------------------------------------------- errors


def test_exception() -> None:
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"`embeddings`.*\(N, D\).*\(4,\)"):
        center_cluster_loss(x[:, 0], labels)
    with pytest.raises(TypeError, match=r"`embeddings`.*floating"):
        center_cluster_loss(x.long(), labels)
    with pytest.raises(TypeError, match=r"`labels`.*integer"):
        center_cluster_loss(x, labels.float())
    with pytest.raises(ValueError, match=r"`labels`.*\(4,\).*\(3,\)"):
        center_cluster_loss(x, labels[:3])
    with pytest.raises(ValueError, match="`margin`"):
        center_cluster_loss(x, labels, margin=-0.1)
    with pytest.raises(ValueError, match="`anchors`"):
        center_cluster_loss(x, labels, anchors="chunked")
    with pytest.raises(ValueError, match="`anchors`"):
        CenterClusterLoss(anchors="k_size")
    with pytest.raises(TypeError, match="`margin`"):
        CenterClusterLoss(margin="0.7")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- compile / dtype


@pytest.mark.parametrize("anchors", ["official", "paper"])
def test_compile(anchors: str) -> None:
    torch._dynamo.reset()  # fresh guards: no recompile budget shared with other tests
    x, labels, _ = sampler_batch(3, seed=2)
    x, labels = x.float(), labels[torch.randperm(24)]
    criterion = CenterClusterLoss(anchors=anchors)
    compiled = torch.compile(criterion, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, labels), criterion(x, labels))


def test_bf16_autocast_finite() -> None:
    x, labels, _ = sampler_batch(4, dim=64, seed=4)
    x = x.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = center_cluster_loss(x, labels)
        loss_bf16 = center_cluster_loss(x.bfloat16(), labels)
    assert loss.dtype == torch.float32 and loss_bf16.dtype == torch.float32
    torch.testing.assert_close(loss, center_cluster_loss(x, labels))  # fp32 inside autocast
    assert torch.isfinite(loss_bf16) and math.isclose(loss_bf16.item(), loss.item(), rel_tol=0.02)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_extra_repr() -> None:
    assert CenterClusterLoss().extra_repr() == "margin=0.7, anchors='official'"
    assert repr(CenterClusterLoss(margin=0.5, anchors="paper")) == "CenterClusterLoss(margin=0.5, anchors='paper')"
