"""Tests for CGSA (DDAG cross-modality graph structured attention) against the official dense formulation."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vireid_layers.layers.cgsa import CGSA, graph_attention

F64 = torch.float64


# ----------------------------------------------------------------------------- the official dense reference


def dense_gat_layer(
    x: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, adj: torch.Tensor, slope: float, concat: bool
) -> torch.Tensor:
    """One official graph attention layer: builds the (N, N, 2d) tensor of concatenated pairs [h_i || h_j]."""
    h = x @ weight
    n, d = h.shape
    pairs = torch.cat([h.repeat(1, n).view(n * n, d), h.repeat(n, 1)], dim=1).view(n, n, 2 * d)
    e = F.leaky_relu(torch.matmul(pairs, a).squeeze(2), slope)
    e = torch.where(adj > 0, e, -9e15 * torch.ones_like(e))
    attention = F.softmax(e, dim=1)
    out = attention @ h
    return F.elu(out) if concat else out


def official_adjacency(labels: torch.Tensor) -> torch.Tensor:
    """one_hot @ one_hot.T + I, row-L2-normalised, as the official training script builds it."""
    one_hot = torch.eye(int(labels.max()) + 1, dtype=F64)[labels]
    adj = one_hot @ one_hot.T + torch.eye(len(labels), dtype=F64)
    return adj / adj.norm(dim=1, keepdim=True)


def dense_cgsa(
    x: torch.Tensor,
    labels: torch.Tensor,
    sd: dict[str, torch.Tensor],
    heads: int,
    slope: float = 0.2,
    output_elu: bool = True,
) -> torch.Tensor:
    adj = official_adjacency(labels)
    hidden = torch.cat(
        [dense_gat_layer(x, sd[f"attention_{i}.W"], sd[f"attention_{i}.a"], adj, slope, True) for i in range(heads)],
        dim=1,
    )
    out = dense_gat_layer(hidden, sd["out_att.W"], sd["out_att.a"], adj, slope, False)
    if output_elu:
        out = F.elu(out)
    return F.log_softmax(out, dim=1)


def official_state_dict(in_features: int, hidden: int, num_classes: int, heads: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(heads):
        sd[f"attention_{i}.W"] = torch.randn(in_features, hidden, generator=g, dtype=F64) * in_features**-0.5
        sd[f"attention_{i}.a"] = torch.randn(2 * hidden, 1, generator=g, dtype=F64)
    sd["out_att.W"] = torch.randn(heads * hidden, num_classes, generator=g, dtype=F64) * (heads * hidden) ** -0.5
    sd["out_att.a"] = torch.randn(2 * num_classes, 1, generator=g, dtype=F64)
    return sd


def batch(identities: int, per_modality: int, in_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A P x K x 2 batch, visible rows then infrared rows as the official script concatenates them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(20, generator=g)[:identities]
    labels = ids.repeat_interleave(per_modality).repeat(2)
    return torch.randn(len(labels), in_features, generator=g, dtype=F64), labels


def loaded(in_features: int, hidden: int, num_classes: int, heads: int, **kwargs) -> tuple[CGSA, dict]:
    sd = official_state_dict(in_features, hidden, num_classes, heads)
    m = CGSA(in_features, num_classes, hidden=hidden, heads=heads, dtype=F64, **kwargs)
    m.load_state_dict(sd, strict=True)
    return m, sd


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape() -> None:
    m = CGSA(32, 7, hidden=8)
    features, labels = torch.randn(12, 32), torch.tensor([0, 1, 2] * 4)
    out = m(features, labels)
    assert out.shape == (12, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out.exp().sum(1), torch.ones(12))
    state = m.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "attentions.W": (4, 32, 8),
        "attentions.a": (4, 16, 1),
        "out_att.W": (1, 32, 7),
        "out_att.a": (1, 14, 1),
    }


def test_init() -> None:
    torch.manual_seed(0)
    m = CGSA(64, 10, hidden=16, heads=3)
    gain = 1.414
    w_bound = gain * math.sqrt(6 / (64 + 16))
    a_bound = gain * math.sqrt(6 / (2 * 16 + 1))
    W, a = m.attentions.W.detach(), m.attentions.a.detach()
    assert float(W.abs().max()) <= w_bound and float(W.abs().max()) > 0.9 * w_bound
    assert float(a.abs().max()) <= a_bound and float(a.abs().max()) > 0.8 * a_bound
    # uniform(-b, b) has std b / sqrt(3); the heads are initialised independently
    assert abs(float(W.std()) - w_bound / math.sqrt(3)) < 0.05 * w_bound
    assert not torch.equal(W[0], W[1])
    out_bound = gain * math.sqrt(6 / (3 * 16 + 10))
    assert float(m.out_att.W.detach().abs().max()) <= out_bound
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("output_elu", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_reference_official_state_dict(output_elu: bool, training: bool) -> None:
    """Strict load of the official keys, then equality with the dense official formulation (no dropout)."""
    m, sd = loaded(12, 5, 6, 4, output_elu=output_elu, dropout=0.0)
    m.train(training)
    features, labels = batch(3, 4, 12)
    torch.testing.assert_close(m(features, labels), dense_cgsa(features, labels, sd, 4, output_elu=output_elu))


def test_reference_eval_mode_ignores_dropout() -> None:
    m, sd = loaded(10, 4, 5, 2, dropout=0.5)
    features, labels = batch(2, 3, 10, seed=3)
    torch.testing.assert_close(m.eval()(features, labels), dense_cgsa(features, labels, sd, 2))


def test_official_state_dict_nested_prefix() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = CGSA(10, 5, hidden=4, heads=2, dtype=F64)

    sd = official_state_dict(10, 4, 5, 2)
    net = Net()
    net.load_state_dict({f"graph.{k}": v for k, v in sd.items()}, strict=True)
    torch.testing.assert_close(net.graph.attentions.W[1], sd["attention_1.W"])
    torch.testing.assert_close(net.graph.out_att.a[0], sd["out_att.a"])
    assert "attention_0.W" in sd  # the caller's dict is not modified


def test_official_state_dict_wrong_heads_fails() -> None:
    with pytest.raises(RuntimeError):
        CGSA(10, 5, hidden=4, heads=3, dtype=F64).load_state_dict(official_state_dict(10, 4, 5, 2))


def test_own_state_dict_round_trip() -> None:
    a, b = CGSA(10, 5, hidden=4), CGSA(10, 5, hidden=4)
    b.load_state_dict(a.state_dict(), strict=True)
    features, labels = torch.randn(6, 10), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(a.eval()(features, labels), b.eval()(features, labels))


def test_graph_attention_matches_dense_single_head() -> None:
    torch.manual_seed(0)
    n, d = 7, 5
    h = torch.randn(n, d, dtype=F64)
    a = torch.randn(2 * d, 1, dtype=F64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    adj = official_adjacency(labels)
    pairs = torch.cat([h.repeat(1, n).view(n * n, d), h.repeat(n, 1)], dim=1).view(n, n, 2 * d)
    e = torch.where(adj > 0, F.leaky_relu((pairs @ a).squeeze(2), 0.2), torch.tensor(-9e15, dtype=F64))
    want = F.softmax(e, dim=1) @ h
    mask = labels[:, None] == labels[None, :]
    torch.testing.assert_close(graph_attention(h, mask, a[:d, 0], a[d:, 0]), want)
    # a weighted adjacency is read as `adj > 0`, as officially
    torch.testing.assert_close(graph_attention(h, adj, a[:d, 0], a[d:, 0]), want)


def test_graph_attention_batched_heads_equal_loop() -> None:
    torch.manual_seed(0)
    h, a_src, a_dst = torch.randn(3, 6, 4, dtype=F64), torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    mask = torch.rand(6, 6) > 0.5
    mask |= torch.eye(6, dtype=torch.bool)
    batched = graph_attention(h, mask, a_src, a_dst, negative_slope=0.1)
    for i in range(3):
        torch.testing.assert_close(batched[i], graph_attention(h[i], mask, a_src[i], a_dst[i], negative_slope=0.1))


def test_attention_zero_outside_cliques_and_rows_sum_to_one() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([4, 9, 4, 4, 1, 9, 1, 4])
    n = len(labels)
    mask = labels[:, None] == labels[None, :]
    # with h = I the aggregation returns the attention matrix itself
    att = graph_attention(torch.eye(n, dtype=F64), mask, torch.randn(n, dtype=F64), torch.randn(n, dtype=F64))
    assert torch.equal(att[~mask], torch.zeros(int((~mask).sum()), dtype=F64))
    assert (att[mask] > 0).all()
    torch.testing.assert_close(att.sum(1), torch.ones(n, dtype=F64))


def test_module_no_information_across_identities() -> None:
    m = CGSA(8, 4, hidden=4, heads=2, dtype=F64).eval()  # float64: a two-layer path, compared to rounding
    features, labels = torch.randn(6, 8, dtype=F64), torch.tensor([0, 0, 0, 1, 1, 1])
    out = m(features, labels)
    changed = features.clone()
    changed[3:] = 100 * torch.randn(3, 8, dtype=F64)
    out2 = m(changed, labels)
    torch.testing.assert_close(out2[:3], out[:3])
    assert not torch.allclose(out2[3:], out[3:])


def test_graph_attention_row_without_edges_is_uniform_like_official() -> None:
    h = torch.randn(4, 3, dtype=F64)
    mask = torch.eye(4, dtype=torch.bool)
    mask[2, 2] = False
    out = graph_attention(h, mask, torch.randn(3, dtype=F64), torch.randn(3, dtype=F64))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2], h.mean(0))
    torch.testing.assert_close(out[[0, 1, 3]], h[[0, 1, 3]])


# ------------------------------------------------------------------------------------------------- memory


class ShapeRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def test_never_builds_pairwise_concatenation() -> None:
    n, in_features, hidden, classes, heads = 6, 10, 8, 5, 4
    m = CGSA(in_features, classes, hidden=hidden, heads=heads, dtype=F64).train()
    features, labels = batch(3, 1, in_features)
    features.requires_grad_(True)
    forbidden = {(n, n, 2 * d) for d in (hidden, classes)} | {(n * n, 2 * d) for d in (hidden, classes)}
    with ShapeRecorder() as recorder:
        m(features, labels).sum().backward()
    assert recorder.shapes, "the recorder saw no op"
    assert not recorder.shapes & forbidden
    # the recorder does catch the official dense formulation
    sd = official_state_dict(in_features, hidden, classes, heads)
    with ShapeRecorder() as dense_recorder:
        dense_cgsa(features, labels, sd, heads)
    assert dense_recorder.shapes & forbidden


# --------------------------------------------------------------------------------------------- gradients


def test_gradcheck() -> None:
    torch.manual_seed(0)
    m = CGSA(5, 3, hidden=2, heads=2, dropout=0.0, dtype=F64).train()
    features = torch.randn(5, 5, dtype=F64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 1])
    names = [name for name, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in m.parameters())

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x, labels))

    assert torch.autograd.gradcheck(fn, (features, *params), fast_mode=True)


def test_all_parameters_receive_gradients() -> None:
    m = CGSA(8, 4, hidden=4)
    out = m(torch.randn(8, 8), torch.tensor([0, 1, 2, 3] * 2))
    F.nll_loss(out, torch.tensor([0, 1, 2, 3] * 2)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------------- dropout


def test_dropout_one_gives_uniform_output() -> None:
    m = CGSA(8, 5, hidden=4, dropout=1.0).train()
    out = m(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(out, torch.full((6, 5), -math.log(5)))


@pytest.mark.parametrize("training", [True, False])
def test_dropout_sites(monkeypatch: pytest.MonkeyPatch, training: bool) -> None:
    """Dropout hits the node features, every attention matrix and the concatenated hidden features."""
    calls = []
    original = F.dropout

    def spy(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        calls.append((tuple(input.shape), p, training))
        return original(input, p, training, inplace)

    monkeypatch.setattr(F, "dropout", spy)
    m = CGSA(8, 5, hidden=4, heads=3, dropout=0.3).train(training)
    m(torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert calls == [
        ((6, 8), 0.3, training),  # node features
        ((3, 6, 6), 0.3, training),  # attention of the 3 hidden heads
        ((6, 12), 0.3, training),  # concatenated hidden features
        ((1, 6, 6), 0.3, training),  # attention of the output layer
    ]


def test_dropout_zero_train_equals_eval() -> None:
    m = CGSA(8, 5, hidden=4, dropout=0.0)
    features, labels = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(m.train()(features, labels), m.eval()(features, labels))


def test_dropout_active_in_training_only() -> None:
    torch.manual_seed(0)
    m = CGSA(8, 5, hidden=4, dropout=0.5)
    features, labels = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    assert not torch.allclose(m.train()(features, labels), m.train()(features, labels))
    torch.testing.assert_close(m.eval()(features, labels), m.eval()(features, labels))


# ---------------------------------------------------------------------------------------------- properties


@functools.lru_cache(maxsize=1)
def shared_module() -> CGSA:
    torch.manual_seed(0)
    return CGSA(6, 5, hidden=3, heads=2, dtype=F64).eval()


labelled_batches = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16))


@settings(deadline=None, max_examples=25)
@given(shape=labelled_batches, data=st.data())
def test_batch_permutation_equivariance(shape: tuple[int, int, int], data: st.DataObject) -> None:
    identities, per_modality, seed = shape
    features, labels = batch(identities, per_modality, 6, seed=seed)
    perm = torch.tensor(data.draw(st.permutations(range(len(labels)))))
    m = shared_module()
    out = m(features, labels)
    torch.testing.assert_close(m(features[perm], labels[perm]), out[perm])


@settings(deadline=None, max_examples=25)
@given(shape=labelled_batches, new_ids=st.lists(st.integers(-(2**40), 2**40), min_size=4, max_size=4, unique=True))
def test_label_renaming_invariance(shape: tuple[int, int, int], new_ids: list[int]) -> None:
    identities, per_modality, seed = shape
    features, labels = batch(identities, per_modality, 6, seed=seed)
    _, index = torch.unique(labels, return_inverse=True)
    renamed = torch.tensor(new_ids)[index]
    m = shared_module()
    torch.testing.assert_close(m(features, renamed), m(features, labels))


@settings(deadline=None, max_examples=25)
@given(shape=labelled_batches, scale=st.sampled_from([0.0, 1e-6, 1.0, 1e3, 1e6]))
def test_finite_outputs(shape: tuple[int, int, int], scale: float) -> None:
    identities, per_modality, seed = shape
    features, labels = batch(identities, per_modality, 6, seed=seed)
    out = shared_module()(features * scale, labels)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(labels), dtype=F64))


# ---------------------------------------------------------------------------------------------- degenerate


def test_single_identity_all_connected() -> None:
    m, sd = loaded(6, 3, 4, 2)
    m.eval()
    features = torch.randn(5, 6, dtype=F64)
    labels = torch.full((5,), 3)
    torch.testing.assert_close(m(features, labels), dense_cgsa(features, labels, sd, 2))


def test_single_sample() -> None:
    m, sd = loaded(6, 3, 4, 2)
    features, labels = torch.randn(1, 6, dtype=F64), torch.tensor([2])
    out = m.train()(features, labels)  # dropout is the only random part; no BatchNorm, so N = 1 trains
    assert out.shape == (1, 4) and torch.isfinite(out).all()
    torch.testing.assert_close(m.eval()(features, labels), dense_cgsa(features, labels, sd, 2))


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"in_features": 0}, ValueError, "in_features"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"hidden": 0}, ValueError, "hidden"),
        ({"heads": 0}, ValueError, "heads"),
        ({"heads": 1.5}, ValueError, "heads"),
        ({"dropout": 1.5}, ValueError, "dropout"),
        ({"dropout": -0.1}, ValueError, "dropout"),
        ({"dropout": "0.2"}, TypeError, "dropout"),
        ({"negative_slope": -1.0}, ValueError, "negative_slope"),
        ({"output_elu": 1}, TypeError, "output_elu"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, name: str) -> None:
    args = {"in_features": 8, "num_classes": 4}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(error, match=name):
        CGSA(args["in_features"], args["num_classes"], **kwargs)


def test_exception_forward() -> None:
    m = CGSA(8, 4, hidden=4)
    features, labels = torch.randn(4, 8), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"`features`.*\(N, D\).*\(4, 8, 1\)"):
        m(features[..., None], labels)
    with pytest.raises(ValueError, match=r"`features`.*\(N, 8\).*\(4, 6\)"):
        m(torch.randn(4, 6), labels)
    with pytest.raises(TypeError, match="`features`"):
        m(torch.ones(4, 8, dtype=torch.long), labels)
    with pytest.raises(ValueError, match=r"`labels`.*\(4,\).*\(3,\)"):
        m(features, labels[:3])
    with pytest.raises(TypeError, match="`labels`"):
        m(features, labels.float())


def test_exception_functional() -> None:
    h, mask, a = torch.randn(4, 3), torch.eye(4, dtype=torch.bool), torch.randn(3)
    with pytest.raises(ValueError, match="`h`"):
        graph_attention(torch.randn(3), mask, a, a)
    with pytest.raises(ValueError, match=r"`adjacency_mask`.*\(4, 4\).*\(3, 3\)"):
        graph_attention(h, torch.eye(3, dtype=torch.bool), a, a)
    with pytest.raises(ValueError, match=r"`a_src`.*\(\*, 3\)"):
        graph_attention(h, mask, torch.randn(2), a)
    with pytest.raises(ValueError, match="`a_dst`"):
        graph_attention(h, mask, a, torch.randn(4))
    with pytest.raises(ValueError, match="`dropout`"):
        graph_attention(h, mask, a, a, dropout=2.0)
    with pytest.raises(TypeError, match="`adjacency_mask`"):
        graph_attention(h, [[True]], a, a)


# --------------------------------------------------------------------------------------- compile / dtype


def test_compile() -> None:
    torch.manual_seed(0)
    m = CGSA(8, 5, hidden=4).eval()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    features, labels = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(compiled(features, labels), m(features, labels))


def test_bf16_autocast_finite() -> None:
    m = CGSA(32, 6, hidden=8)
    features, labels = torch.randn(12, 32), torch.tensor([0, 1, 2] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(features, labels)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    F.nll_loss(out, labels).backward()
    assert torch.isfinite(m.attentions.W.grad).all()


def test_bf16_parameters_finite() -> None:
    m = CGSA(16, 4, hidden=4, dtype=torch.bfloat16)
    out = m(torch.randn(8, 16, dtype=torch.bfloat16), torch.tensor([0, 1] * 4))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_extra_repr() -> None:
    m = CGSA(16, 4, hidden=8, heads=2, dropout=0.1, output_elu=False)
    assert m.extra_repr() == "16, 4, hidden=8, heads=2, dropout=0.1, negative_slope=0.2, output_elu=False"
    assert "heads=2" in repr(m.attentions) and "heads=1" in repr(m.out_att)
