"""k-reciprocal re-ranking against a dense reference written from the algorithm, and its memory bound."""

from __future__ import annotations

import math

import pytest
import torch
from strategies import grid_randn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vireid_layers.evaluation import k_reciprocal_rerank

F64 = torch.float64


def reference_rerank(query, gallery, k1, k2, lambda_value):
    """Zhong et al. (CVPR 2017), dense and loop by loop: every (N, N) matrix is materialised."""
    x = torch.cat([query, gallery]).to(F64)
    n, nq = x.shape[0], query.shape[0]
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # squared Euclidean, not the expansion formula
    d = d / d.max(dim=1, keepdim=True).values
    rows = d.tolist()
    rank = [sorted(range(n), key=lambda j, r=r: (r[j], j)) for r in rows]  # ties by index

    def reciprocal(i, k):
        return [j for j in rank[i][: k + 1] if i in rank[j][: k + 1]]

    half = round(k1 / 2)
    V = torch.zeros(n, n, dtype=F64)
    for i in range(n):
        r_i = reciprocal(i, k1)
        expanded = set(r_i)
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(set(r_c) & set(r_i)) > 2.0 / 3.0 * len(r_c):
                expanded |= set(r_c)
        idx = sorted(expanded)
        w = torch.exp(-d[i, idx])
        V[i, idx] = w / w.sum()
    if k2 > 1:
        V = torch.stack([V[rank[i][:k2]].mean(0) for i in range(n)])
    jaccard = torch.zeros(nq, n - nq, dtype=F64)
    for q in range(nq):
        for g in range(n - nq):
            a, b = V[q], V[nq + g]
            jaccard[q, g] = 1 - torch.minimum(a, b).sum() / torch.maximum(a, b).sum()
    return (1 - lambda_value) * jaccard + lambda_value * d[:nq, nq:]


def _features(num_q, num_g, dim, seed, *, levels=None):
    g = torch.Generator().manual_seed(seed)
    if levels is not None:  # few distinct values: many exact ties and duplicate rows
        x = torch.randint(0, levels, (num_q + num_g, dim), generator=g).to(F64)
    else:
        x = grid_randn(num_q + num_g, dim, generator=g)
    return x[:num_q], x[num_q:]


@pytest.mark.parametrize(
    ("k1", "k2", "lambda_value", "chunk_size"),
    [(20, 6, 0.3, 1024), (6, 3, 0.3, 7), (5, 1, 0.0, 1), (3, 2, 1.0, 16), (8, 4, 0.5, 3)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_reference(k1, k2, lambda_value, chunk_size, ties):
    query, gallery = _features(20, 40, 6, seed=k1 * 10 + k2, levels=3 if ties else None)
    expected = reference_rerank(query, gallery, k1, k2, lambda_value)
    actual = k_reciprocal_rerank(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=chunk_size)
    assert actual.dtype == F64 and actual.shape == (20, 40)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_float32_matches_float64_ranking():
    query, gallery = _features(15, 45, 8, seed=3)
    d64 = k_reciprocal_rerank(query, gallery, k1=6, k2=3)
    d32 = k_reciprocal_rerank(query.float(), gallery.float(), k1=6, k2=3)
    assert d32.dtype == torch.float32
    # Tolerance from the float32 path: a length-D dot product per distance and sums of up to N weights (the
    # normalisation of V and the Jaccard overlaps), each accurate to about (terms) x eps; values are in [0, 1].
    # Exact neighbour sets are assumed (no near-tie flips at this seed, which the float64 reference checks).
    tol = (query.shape[1] + query.shape[0] + gallery.shape[0]) * torch.finfo(torch.float32).eps
    torch.testing.assert_close(d32.double(), d64, rtol=tol, atol=tol)


def test_n_smaller_than_k1():
    query, gallery = _features(3, 4, 5, seed=1)
    expected = reference_rerank(query, gallery, 20, 6, 0.3)
    torch.testing.assert_close(k_reciprocal_rerank(query, gallery), expected, rtol=1e-12, atol=1e-12)


def test_lambda_one_is_normalised_distance():
    query, gallery = _features(4, 9, 3, seed=2)
    x = torch.cat([query, gallery])
    d = torch.cdist(x, x) ** 2
    d = d / d.max(1, keepdim=True).values
    torch.testing.assert_close(k_reciprocal_rerank(query, gallery, lambda_value=1.0), d[:4, 4:])


@pytest.mark.parametrize("argument", ["query", "gallery"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_refused(argument, value):
    """A NaN query used to fail with a raw ``RuntimeError: shape '[7, 7]' is invalid``."""
    query, gallery = _features(3, 4, 5, seed=1)
    bad = {"query": query.clone(), "gallery": gallery.clone()}
    bad[argument][1, 2] = value
    with pytest.raises(ValueError, match=rf"`{argument}` must be finite, got 1 non-finite entries"):
        k_reciprocal_rerank(bad["query"], bad["gallery"], k1=3, k2=2)
    with pytest.raises(ValueError, match=rf"`{argument}` must be finite"):  # also with an empty other side
        k_reciprocal_rerank(bad["query"], bad["gallery"][:0]) if argument == "query" else k_reciprocal_rerank(
            bad["query"][:0], bad["gallery"]
        )


def test_overflowing_distances_are_refused():
    """Finite float32 features of norm 1e20: squared distances would be inf - inf = NaN; float64 is fine."""
    query, gallery = _features(3, 6, 5, seed=4)
    with pytest.raises(ValueError, match=r"overflow torch.float32: `query` has a squared norm of inf"):
        k_reciprocal_rerank(query.float() * 1e20, gallery.float(), k1=3, k2=2)
    with pytest.raises(ValueError, match=r"overflow torch.float32: `gallery`"):
        k_reciprocal_rerank(query.float(), gallery.float() * 1e20, k1=3, k2=2)
    scaled = k_reciprocal_rerank(query * 1e20, gallery * 1e20, k1=3, k2=2)  # float64: distances are scale-free
    torch.testing.assert_close(scaled, k_reciprocal_rerank(query, gallery, k1=3, k2=2), rtol=1e-12, atol=1e-12)


def test_empty():
    assert k_reciprocal_rerank(torch.empty(0, 4), torch.randn(3, 4)).shape == (0, 3)
    assert k_reciprocal_rerank(torch.randn(2, 4), torch.empty(0, 4)).shape == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query": [[1.0]]}, TypeError, "`query`"),
        ({"query": torch.randn(2, 3, 1)}, ValueError, "`query`"),
        ({"gallery": torch.randn(2, 5)}, ValueError, "feature size"),
        ({"gallery": torch.ones(3, 4, dtype=torch.long)}, TypeError, "`gallery`"),
        ({"k1": 0}, ValueError, "`k1`"),
        ({"k2": 1.5}, TypeError, "`k2`"),
        ({"lambda_value": 1.5}, ValueError, "`lambda_value`"),
        ({"chunk_size": 0}, ValueError, "`chunk_size`"),
    ],
)
def test_exception(kwargs, error, match):
    args = {"query": torch.randn(2, 4), "gallery": torch.randn(3, 4)} | kwargs
    query, gallery = args.pop("query"), args.pop("gallery")
    with pytest.raises(error, match=match):
        k_reciprocal_rerank(query, gallery, **args)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op creates."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_bounded_memory_at_n_3000():
    num_q, num_g, chunk = 1000, 2000, 128
    n = num_q + num_g
    query, gallery = _features(num_q, num_g, 8, seed=5)
    with LargestTensor() as mode:
        chunked = k_reciprocal_rerank(query, gallery, chunk_size=chunk)
    # Nothing larger than the (Q, G) output is ever created: no (N, N) matrix, and the distance chunks are
    # chunk x (N + 1). The sparse V (N x its support) and the neighbour lists are far smaller.
    assert mode.largest <= num_q * num_g < n * n
    assert chunk * (n + 1) < num_q * num_g
    whole = k_reciprocal_rerank(query, gallery, chunk_size=1024)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    assert math.isfinite(float(chunked.sum()))
