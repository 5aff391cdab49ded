"""Tests for the DDAG graph attention loss and the dynamic dual aggregation weight."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.layers.cgsa import CGSA
from vireid_layers.losses.graph import (
    DynamicDualAggregation,
    GraphAttentionLoss,
    dynamic_aggregation_weight,
    graph_attention_loss,
)

F64 = torch.float64


def reference_nll(log_probs: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    losses = [-log_probs[i, int(labels[i])] for i in range(len(labels))]
    if reduction == "none":
        return torch.stack(losses)
    total = sum(losses, torch.zeros((), dtype=log_probs.dtype))
    return total if reduction == "sum" else total / len(losses)


# ------------------------------------------------------------------------------------------------- loss


def test_smoke_and_shape() -> None:
    log_probs = torch.randn(6, 4).log_softmax(1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    assert graph_attention_loss(log_probs, labels).shape == ()
    assert graph_attention_loss(log_probs, labels, reduction="none").shape == (6,)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reference(reduction: str) -> None:
    torch.manual_seed(0)
    log_probs = torch.randn(9, 5, dtype=F64).log_softmax(1)
    labels = torch.randint(0, 5, (9,))
    want = reference_nll(log_probs, labels, reduction)
    torch.testing.assert_close(graph_attention_loss(log_probs, labels, reduction=reduction), want)
    torch.testing.assert_close(GraphAttentionLoss(reduction=reduction)(log_probs, labels), want)


def test_default_is_official_mean_and_paper_sum() -> None:
    log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]))
    labels = torch.tensor([0, 1, 1])
    expected = [math.log(2), -math.log(0.75), -math.log(0.1)]
    torch.testing.assert_close(graph_attention_loss(log_probs, labels), torch.tensor(sum(expected) / 3))
    torch.testing.assert_close(GraphAttentionLoss()(log_probs, labels), torch.tensor(sum(expected) / 3))
    torch.testing.assert_close(graph_attention_loss(log_probs, labels, reduction="sum"), torch.tensor(sum(expected)))


def test_with_cgsa_end_to_end() -> None:
    torch.manual_seed(0)
    m = CGSA(8, 3, hidden=4)
    features = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = GraphAttentionLoss()(m(features, labels), labels)
    loss.backward()
    assert loss > 0 and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_empty_batch_is_connected_zero() -> None:
    log_probs = torch.randn(0, 4, requires_grad=True)
    loss = graph_attention_loss(log_probs, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert log_probs.grad.shape == (0, 4)


def test_single_node() -> None:
    log_probs = torch.log(torch.tensor([[0.2, 0.8]]))
    torch.testing.assert_close(graph_attention_loss(log_probs, torch.tensor([1])), torch.tensor(-math.log(0.8)))


def test_gradcheck() -> None:
    log_probs = torch.randn(5, 3, dtype=F64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0])
    assert torch.autograd.gradcheck(lambda lp: graph_attention_loss(lp.log_softmax(1), labels), (log_probs,))


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.0, 1.0, 1e3]),
    data=st.data(),
)
def test_non_negative_finite_and_permutation_invariant(
    n: int, k: int, seed: int, scale: float, data: st.DataObject
) -> None:
    g = torch.Generator().manual_seed(seed)
    log_probs = (scale * torch.randn(n, k, generator=g, dtype=F64)).log_softmax(1)
    labels = torch.randint(0, k, (n,), generator=g)
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    loss = graph_attention_loss(log_probs, labels)
    assert torch.isfinite(loss) and loss >= 0
    torch.testing.assert_close(graph_attention_loss(log_probs[perm], labels[perm]), loss)


def test_exception() -> None:
    log_probs, labels = torch.randn(4, 3).log_softmax(1), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"`log_probs`.*\(N, D\)"):
        graph_attention_loss(log_probs[0], labels)
    with pytest.raises(ValueError, match=r"`labels`.*\(4,\).*\(3,\)"):
        graph_attention_loss(log_probs, labels[:3])
    with pytest.raises(TypeError, match="`labels`"):
        graph_attention_loss(log_probs, labels.float())
    with pytest.raises(ValueError, match=r"`labels`.*\[0, 3\).*\[0, 3\]"):
        graph_attention_loss(log_probs, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="`labels`"):
        graph_attention_loss(log_probs, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(ValueError, match="`reduction`"):
        graph_attention_loss(log_probs, labels, reduction="max")
    with pytest.raises(ValueError, match="`reduction`"):
        GraphAttentionLoss(reduction="batchmean")


def test_compile() -> None:
    criterion = torch.compile(GraphAttentionLoss(), backend="eager", fullgraph=True)
    log_probs, labels = torch.randn(6, 4).log_softmax(1), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(criterion(log_probs, labels), graph_attention_loss(log_probs, labels))


def test_extra_repr() -> None:
    assert repr(GraphAttentionLoss(reduction="sum")) == "GraphAttentionLoss(reduction='sum')"


# ------------------------------------------------------------------------------ dynamic dual aggregation


@pytest.mark.parametrize(("mean", "weight"), [(None, 0.0), (0.0, 1.0), (1.0, 0.5), (3.0, 0.25), (9, 0.1)])
def test_dynamic_aggregation_weight(mean: float | None, weight: float) -> None:
    assert dynamic_aggregation_weight(mean) == pytest.approx(weight)


@pytest.mark.parametrize(
    ("mean", "error"), [(-0.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError)]
)
def test_dynamic_aggregation_weight_exception(mean: object, error: type) -> None:
    with pytest.raises(error, match="previous_epoch_mean"):
        dynamic_aggregation_weight(mean)  # type: ignore[arg-type]


def test_first_epoch_zero_then_previous_mean() -> None:
    dda = DynamicDualAggregation()
    assert dda.weight == 0.0 and dda.epoch == 0
    for value in (1.0, 2.0, 6.0):
        dda.update(value)
        assert dda.weight == 0.0  # constant within the epoch
    dda.step_epoch()
    assert dda.epoch == 1 and dda.previous_epoch_mean == pytest.approx(3.0)
    assert dda.weight == pytest.approx(1 / (1 + 3.0))
    # the next epoch uses only its own losses, not a running mean across epochs
    dda.update(torch.tensor(1.0))
    assert dda.weight == pytest.approx(0.25)
    dda.step_epoch()
    assert dda.weight == pytest.approx(0.5)


def test_update_weights_and_tensors() -> None:
    dda = DynamicDualAggregation()
    loss = torch.tensor(4.0, requires_grad=True) * 1.0
    dda.update(loss, weight=3)
    dda.update(torch.tensor([0.0], dtype=F64), weight=1)
    dda.update(2, weight=4)
    dda.step_epoch()
    assert dda.previous_epoch_mean == pytest.approx((12 + 0 + 8) / 8)
    assert isinstance(dda.weight, float)


def test_update_does_not_keep_the_graph() -> None:
    dda = DynamicDualAggregation()
    x = torch.ones(3, requires_grad=True)
    dda.update(x.sum())
    state_sum = dda._sum
    assert isinstance(state_sum, torch.Tensor) and not state_sum.requires_grad


def test_state_dict_round_trip_mid_epoch() -> None:
    a = DynamicDualAggregation()
    a.update(2.0)
    a.step_epoch()
    a.update(torch.tensor(5.0))
    state = a.state_dict()
    assert state == {"epoch": 1, "previous_epoch_mean": 2.0, "running_sum": 5.0, "running_count": 1.0}
    assert all(isinstance(v, (int, float)) for v in state.values())
    b = DynamicDualAggregation()
    b.load_state_dict(state)
    assert b.weight == a.weight == pytest.approx(1 / 3)
    for dda in (a, b):
        dda.update(1.0)
        dda.step_epoch()
    assert b.previous_epoch_mean == a.previous_epoch_mean == pytest.approx(3.0)
    assert b.epoch == a.epoch == 2


def test_torch_save_round_trip(tmp_path) -> None:
    dda = DynamicDualAggregation()
    dda.update(1.0)
    dda.step_epoch()
    torch.save({"dda": dda.state_dict()}, tmp_path / "ckpt.pt")
    restored = DynamicDualAggregation()
    restored.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["dda"])
    assert restored.weight == pytest.approx(0.5)


def test_fresh_object_reproduces_official_resume() -> None:
    """The official script restarts the weight at 0 on resume: a fresh (unrestored) object does the same."""
    assert DynamicDualAggregation().weight == 0.0


def test_dynamic_dual_aggregation_exceptions() -> None:
    dda = DynamicDualAggregation()
    with pytest.raises(RuntimeError, match="update"):
        dda.step_epoch()
    with pytest.raises(ValueError, match="weight"):
        dda.update(1.0, weight=0)
    with pytest.raises(ValueError, match="`l_p`"):
        dda.update(torch.ones(2))
    with pytest.raises(TypeError, match="`l_p`"):
        dda.update("1.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state_dict"):
        dda.load_state_dict({"epoch": 1})
    dda.update(float("nan"))
    with pytest.raises(ValueError, match="previous_epoch_mean"):
        dda.step_epoch()
    assert dda.epoch == 0 and dda.weight == 0.0  # nothing changed


def test_repr() -> None:
    dda = DynamicDualAggregation()
    dda.update(1.0)
    dda.step_epoch()
    assert repr(dda) == "DynamicDualAggregation(epoch=1, weight=0.5)"
