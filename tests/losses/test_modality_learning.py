"""Tests for MPANet modality learning: specific classifiers, EMA mean classifiers and the mutual mean loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from vireid_layers.losses.modality_learning import (
    ModalityClassifiers,
    ModalityLearningOutput,
    MutualMeanLoss,
    mean_classifier_momentum,
    mutual_mean_loss,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws from a freshly seeded global generator: reproducible values, no flaky tolerances."""
    torch.manual_seed(0)


def _softmax(row: torch.Tensor) -> list[float]:
    values = [float(v) for v in row]
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _kl(a: list[float], b: list[float]) -> float:
    """KL(a || b) = sum_c a_c log(a_c / b_c), with 0 log 0 = 0."""
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def reference_mutual_mean(
    logits: torch.Tensor, mean_logits: torch.Tensor, modalities: torch.Tensor, direction: str
) -> float:
    """Loop over rows with explicit p log p / q (official) or q log q / p (paper, one mean per modality)."""
    n = logits.shape[0]
    p = [_softmax(logits[i]) for i in range(n)]
    q = [_softmax(mean_logits[i]) for i in range(n)]
    if direction == "official":
        return sum(_kl(p[i], q[i]) for i in range(n)) / max(n, 1)
    total = 0.0
    for modality in (0, 1):
        rows = [i for i in range(n) if int(modalities[i]) == modality]
        if rows:
            total += sum(_kl(q[i], p[i]) for i in rows) / len(rows)
    return total


def reference_classifiers(
    heads: ModalityClassifiers, f: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor
) -> tuple:
    """Row by row: own specific classifier, other modality's mean classifier, CE per modality."""
    wv, wr = heads.visible.weight.detach(), heads.infrared.weight.detach()
    ev, er = heads.visible_mean, heads.infrared_mean
    logits, mean_logits, ce = [], [], {0: [], 1: []}
    for i in range(f.shape[0]):
        m = int(modalities[i])
        own = (wr if m else wv) @ f[i]
        logits.append(own)
        mean_logits.append((ev if m else er) @ f[i])
        ce[m].append(-math.log(_softmax(own)[int(labels[i])]))
    losses = [sum(ce[m]) / len(ce[m]) if ce[m] else 0.0 for m in (0, 1)]
    return torch.stack(logits), torch.stack(mean_logits), losses[0], losses[1]


def batch(n_vis: int = 3, n_ir: int = 3, dim: int = 8, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = n_vis + n_ir
    modalities = torch.tensor([0] * n_vis + [1] * n_ir)[torch.randperm(n, generator=g)]
    labels = torch.randint(0, classes, (n,), generator=g)
    return torch.randn(n, dim, generator=g, dtype=F64), labels, modalities


def make_heads(dim: int = 8, classes: int = 5, dtype: torch.dtype = F64, seed: int = 0) -> ModalityClassifiers:
    torch.manual_seed(seed)
    heads = ModalityClassifiers(dim, classes, dtype=dtype)
    with torch.no_grad():  # make the mean classifiers differ from the live ones
        heads.visible_mean.normal_()
        heads.infrared_mean.normal_()
    return heads


# --------------------------------------------------------------------------------------------- smoke / shape


def test_shape_mpanet() -> None:
    """14,336-d BN features, 395 SYSU training identities, a small batch of 4 visible + 4 infrared."""
    heads = ModalityClassifiers(14336, 395)
    features = torch.randn(8, 14336)
    labels = torch.arange(8) % 4
    modalities = torch.tensor([1, 0] * 4)
    out = heads(features, labels, modalities)
    assert isinstance(out, ModalityLearningOutput)
    assert out.logits.shape == (8, 395) and out.mean_logits.shape == (8, 395)
    assert out.visible_loss.shape == () and out.infrared_loss.shape == ()
    assert math.isclose(out.visible_loss.item(), math.log(395), rel_tol=0.1)  # near chance at init
    loss = mutual_mean_loss(out.logits, out.mean_logits, modalities)
    assert loss.shape == () and torch.isfinite(loss)


def test_parameters_and_buffers() -> None:
    heads = ModalityClassifiers(8, 5)
    assert [n for n, _ in heads.named_parameters()] == ["visible.weight", "infrared.weight"]
    assert [n for n, _ in heads.named_buffers()] == ["visible_mean", "infrared_mean"]
    assert heads.visible.bias is None and heads.infrared.bias is None
    params = {id(p) for p in heads.parameters()}
    assert id(heads.visible_mean) not in params and id(heads.infrared_mean) not in params
    assert not heads.visible_mean.requires_grad
    assert set(heads.state_dict()) == {"visible.weight", "infrared.weight", "visible_mean", "infrared_mean"}


def test_init_means_are_copies_not_aliases() -> None:
    heads = ModalityClassifiers(8, 5)
    torch.testing.assert_close(heads.visible_mean, heads.visible.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(heads.infrared_mean, heads.infrared.weight.detach(), rtol=0, atol=0)
    assert heads.visible_mean.data_ptr() != heads.visible.weight.data_ptr()
    with torch.no_grad():
        heads.visible.weight.add_(1.0)
    assert not torch.allclose(heads.visible_mean, heads.visible.weight)
    bound = 8**-0.5  # PyTorch's default Linear init
    assert float(heads.infrared.weight.detach().abs().max()) <= bound
    heads.reset_parameters()
    torch.testing.assert_close(heads.visible_mean, heads.visible.weight.detach(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- EMA


def test_update_mean_math() -> None:
    heads = make_heads(dtype=torch.float32)
    ev, er = heads.visible_mean.clone(), heads.infrared_mean.clone()
    wv, wr = heads.visible.weight.detach().clone(), heads.infrared.weight.detach().clone()
    heads.update_mean(0.2)
    torch.testing.assert_close(heads.visible_mean, 0.8 * ev + 0.2 * wv)
    torch.testing.assert_close(heads.infrared_mean, 0.8 * er + 0.2 * wr)
    heads.update_mean(0.0)
    torch.testing.assert_close(heads.visible_mean, 0.8 * ev + 0.2 * wv)
    heads.update_mean(1.0)
    torch.testing.assert_close(heads.visible_mean, wv, rtol=0, atol=0)
    torch.testing.assert_close(heads.infrared_mean, wr, rtol=0, atol=0)
    assert torch.equal(heads.visible.weight, wv)  # the live weights are untouched


def test_update_mean_repeated_converges_geometrically() -> None:
    heads = make_heads(dtype=F64)
    e0, w = heads.visible_mean.clone(), heads.visible.weight.detach().clone()
    for _ in range(7):
        heads.update_mean(0.3)
    torch.testing.assert_close(heads.visible_mean, w + 0.7**7 * (e0 - w))


def test_forward_and_optimizer_do_not_touch_means() -> None:
    heads = make_heads(dtype=torch.float32)
    f, labels, modalities = batch()
    ev = heads.visible_mean.clone()
    optimizer = torch.optim.SGD(heads.parameters(), lr=1.0)
    out = heads.train()(f.float(), labels, modalities)
    (out.visible_loss + out.infrared_loss + mutual_mean_loss(out.logits, out.mean_logits, modalities)).backward()
    optimizer.step()
    assert torch.equal(heads.visible_mean, ev)
    assert not torch.equal(heads.visible.weight.detach(), heads.visible_mean)


def test_state_dict_round_trip() -> None:
    heads = make_heads(dtype=torch.float32)
    heads.update_mean(0.5)
    other = ModalityClassifiers(8, 5)
    other.load_state_dict(heads.state_dict(), strict=True)
    for name in ("visible_mean", "infrared_mean", "visible.weight", "infrared.weight"):
        torch.testing.assert_close(other.state_dict()[name], heads.state_dict()[name], rtol=0, atol=0)


def test_official_state_dict_loads() -> None:
    sd = {
        "visible_classifier.weight": torch.randn(5, 8),
        "infrared_classifier.weight": torch.randn(5, 8),
        "visible_classifier_.weight": torch.randn(5, 8),
        "infrared_classifier_.weight": torch.randn(5, 8),
    }
    heads = ModalityClassifiers(8, 5)
    result = heads.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(heads.visible.weight.detach(), sd["visible_classifier.weight"])
    torch.testing.assert_close(heads.infrared_mean, sd["infrared_classifier_.weight"])
    torch.testing.assert_close(heads.visible_mean, sd["visible_classifier_.weight"])

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.modality = ModalityClassifiers(8, 5)

    model = Model()
    model.load_state_dict({f"modality.{k}": v for k, v in sd.items()}, strict=True)
    torch.testing.assert_close(model.modality.infrared.weight.detach(), sd["infrared_classifier.weight"])


def test_update_mean_rejects_bad_alpha() -> None:
    heads = ModalityClassifiers(4, 3)
    with pytest.raises(ValueError, match="`alpha`"):
        heads.update_mean(1.5)
    with pytest.raises(TypeError, match="`alpha`"):
        heads.update_mean(torch.tensor(0.2))


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("n_vis", "n_ir"), [(3, 3), (4, 1), (2, 5)])
def test_classifiers_reference(n_vis: int, n_ir: int) -> None:
    heads = make_heads()
    f, labels, modalities = batch(n_vis, n_ir, seed=n_vis)
    out = heads(f, labels, modalities)
    logits, mean_logits, lv, li = reference_classifiers(heads, f, labels, modalities)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.mean_logits, mean_logits)
    assert out.visible_loss.item() == pytest.approx(lv, rel=1e-9)
    assert out.infrared_loss.item() == pytest.approx(li, rel=1e-9)
    assert out.logits.requires_grad and not out.mean_logits.requires_grad


@pytest.mark.parametrize("direction", ["official", "paper"])
@pytest.mark.parametrize(("n_vis", "n_ir"), [(3, 3), (5, 1), (0, 4), (2, 0)])
def test_mutual_mean_reference(direction: str, n_vis: int, n_ir: int) -> None:
    g = torch.Generator().manual_seed(n_vis * 10 + n_ir)
    n = n_vis + n_ir
    logits, mean_logits = torch.randn(n, 6, generator=g, dtype=F64) * 2, torch.randn(n, 6, generator=g, dtype=F64)
    modalities = torch.tensor([0] * n_vis + [1] * n_ir)[torch.randperm(n, generator=g)]
    loss = mutual_mean_loss(logits, mean_logits, modalities, direction=direction)
    assert loss.item() == pytest.approx(reference_mutual_mean(logits, mean_logits, modalities, direction), rel=1e-9)
    torch.testing.assert_close(MutualMeanLoss(direction=direction)(logits, mean_logits, modalities), loss)


def test_official_matches_kl_div_batchmean_with_gradient_through_target() -> None:
    """The official KLDivLoss(batchmean)(log q, p): same value and same gradient (p is the target)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=F64).requires_grad_(True)
    mean_logits = torch.randn(6, 5, generator=g, dtype=F64)
    modalities = torch.tensor([0, 1, 0, 1, 1, 1])
    ours = mutual_mean_loss(logits, mean_logits, modalities)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    official = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(mean_logits, 1), F.softmax(logits, 1))
    (grad_official,) = torch.autograd.grad(official, logits)
    torch.testing.assert_close(ours, official)
    torch.testing.assert_close(grad_ours, grad_official)
    assert grad_ours.abs().sum() > 0


def test_mean_logits_never_get_gradient() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    mean_logits = torch.randn(4, 5, requires_grad=True)
    for direction in ("official", "paper"):
        mutual_mean_loss(logits, mean_logits, torch.tensor([0, 1, 0, 1]), direction=direction).backward()
    assert mean_logits.grad is None and logits.grad is not None


def test_directions_differ_and_official_ignores_modalities() -> None:
    g = torch.Generator().manual_seed(3)
    logits, mean_logits = torch.randn(5, 4, generator=g) * 2, torch.randn(5, 4, generator=g)
    a, b = torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0, 1, 1, 1, 1])
    official = mutual_mean_loss(logits, mean_logits, a)
    torch.testing.assert_close(mutual_mean_loss(logits, mean_logits, b), official)
    paper_a = mutual_mean_loss(logits, mean_logits, a, direction="paper")
    assert not torch.allclose(paper_a, mutual_mean_loss(logits, mean_logits, b, direction="paper"))
    assert not torch.allclose(paper_a, official)


def test_rows_selected_by_modalities_not_position() -> None:
    heads = make_heads()
    f, labels, modalities = batch(3, 3, seed=4)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    out, out_perm = heads(f, labels, modalities), heads(f[perm], labels[perm], modalities[perm])
    torch.testing.assert_close(out_perm.logits, out.logits[perm])
    torch.testing.assert_close(out_perm.mean_logits, out.mean_logits[perm])
    torch.testing.assert_close(out_perm.visible_loss, out.visible_loss)
    torch.testing.assert_close(out_perm.infrared_loss, out.infrared_loss)


def test_gradients_stay_in_their_classifier() -> None:
    heads = make_heads(dtype=torch.float32)
    f, labels, _ = batch(seed=1)
    heads(f.float(), labels, torch.zeros(6, dtype=torch.long)).visible_loss.backward()
    assert heads.visible.weight.grad.abs().sum() > 0
    assert heads.infrared.weight.grad is None or not heads.infrared.weight.grad.any()


# ------------------------------------------------------------------------------------------ degenerate


@pytest.mark.parametrize("modality", [0, 1])
def test_one_modality_absent(modality: int) -> None:
    heads = make_heads(dtype=torch.float32)
    f, labels, _ = batch(seed=2)
    features = f.float().requires_grad_(True)
    modalities = torch.full((6,), modality)
    out = heads(features, labels, modalities)
    absent = out.infrared_loss if modality == 0 else out.visible_loss
    present = out.visible_loss if modality == 0 else out.infrared_loss
    assert absent.item() == 0.0 and absent.requires_grad and present.item() > 0
    for direction in ("official", "paper"):
        kl = mutual_mean_loss(out.logits, out.mean_logits, modalities, direction=direction)
        assert torch.isfinite(kl)
    (absent + present + mutual_mean_loss(out.logits, out.mean_logits, modalities, direction="paper")).backward()
    assert torch.isfinite(features.grad).all()


def test_single_sample_and_empty_batch() -> None:
    heads = make_heads(dtype=torch.float32)
    out = heads(torch.randn(1, 8), torch.tensor([2]), torch.tensor([1]))
    assert out.visible_loss.item() == 0.0 and torch.isfinite(out.infrared_loss)
    features = torch.randn(0, 8, requires_grad=True)
    empty = heads(features, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty.visible_loss.item() == 0.0 and empty.infrared_loss.item() == 0.0
    for direction in ("official", "paper"):
        loss = mutual_mean_loss(empty.logits, empty.mean_logits, torch.zeros(0, dtype=torch.long), direction=direction)
        assert loss.item() == 0.0 and loss.requires_grad
    (empty.visible_loss + empty.infrared_loss).backward()


def test_identical_predictions_give_zero() -> None:
    logits = torch.randn(4, 7)
    for direction in ("official", "paper"):
        assert mutual_mean_loss(logits, logits, torch.tensor([0, 1, 1, 0]), direction=direction).abs().item() < 1e-6


# --------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("direction", ["official", "paper"])
def test_gradcheck_mutual_mean(direction: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, dtype=F64).requires_grad_(True)
    mean_logits = torch.randn(4, 3, generator=g, dtype=F64)
    modalities = torch.tensor([0, 1, 1, 0])
    assert torch.autograd.gradcheck(
        lambda t: mutual_mean_loss(t, mean_logits, modalities, direction=direction), (logits,)
    )


def test_gradcheck_classifiers() -> None:
    heads = make_heads(dim=3, classes=4)
    f, labels, modalities = batch(2, 2, dim=3, classes=4, seed=0)
    f.requires_grad_(True)
    wv = heads.visible.weight.detach().clone().requires_grad_(True)
    wr = heads.infrared.weight.detach().clone().requires_grad_(True)

    def fn(f: torch.Tensor, wv: torch.Tensor, wr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = torch.func.functional_call(heads, {"visible.weight": wv, "infrared.weight": wr}, (f, labels, modalities))
        return out.visible_loss, out.infrared_loss, out.logits

    assert torch.autograd.gradcheck(fn, (f, wv, wr))


# ---------------------------------------------------------------------------------------------- properties


@settings(deadline=None, max_examples=30)
@given(
    n=st.integers(1, 7),
    classes=st.integers(2, 6),
    direction=st.sampled_from(["official", "paper"]),
    data=st.data(),
)
def test_properties(n: int, classes: int, direction: str, data: st.DataObject) -> None:
    modalities = torch.tensor(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, classes, generator=g) * 5).requires_grad_(True)
    mean_logits = torch.randn(n, classes, generator=g) * 5
    loss = mutual_mean_loss(logits, mean_logits, modalities, direction=direction)
    assert torch.isfinite(loss) and loss >= -1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(
        mutual_mean_loss(logits[perm], mean_logits[perm], modalities[perm], direction=direction), loss
    )
    class_perm = torch.tensor(data.draw(st.permutations(range(classes))))  # relabelling the classes
    torch.testing.assert_close(
        mutual_mean_loss(logits[:, class_perm], mean_logits[:, class_perm], modalities, direction=direction), loss
    )


# ----------------------------------------------------------------------------------------------- errors


def test_exception_classifiers() -> None:
    with pytest.raises(ValueError, match="`in_features`"):
        ModalityClassifiers(0, 5)
    with pytest.raises(ValueError, match="`num_classes`"):
        ModalityClassifiers(8, True)
    heads = ModalityClassifiers(8, 5)
    f, labels, modalities = torch.randn(4, 8), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`features`.*\(N, 8\).*\(4, 6\)"):
        heads(torch.randn(4, 6), labels, modalities)
    with pytest.raises(ValueError, match=r"`features`.*\(4,\)"):
        heads(torch.randn(4), labels, modalities)
    with pytest.raises(ValueError, match=r"`labels`.*\(4,\).*\(3,\)"):
        heads(f, labels[:3], modalities)
    with pytest.raises(ValueError, match=r"`labels`.*\[0, 4\].*\[0, 5\]"):
        heads(f, torch.tensor([0, 1, 5, 3]), modalities)
    with pytest.raises(ValueError, match=r"`labels`"):
        heads(f, torch.tensor([-1, 1, 2, 3]), modalities)
    with pytest.raises(ValueError, match=r"`modalities`.*\[2\]"):
        heads(f, labels, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(TypeError, match="`modalities`"):
        heads(f, labels, modalities.float())


def test_exception_mutual_mean() -> None:
    logits, modalities = torch.randn(4, 5), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`mean_logits`.*\(4, 5\).*\(4, 6\)"):
        mutual_mean_loss(logits, torch.randn(4, 6), modalities)
    with pytest.raises(TypeError, match="`mean_logits`"):
        mutual_mean_loss(logits, logits.long(), modalities)
    with pytest.raises(ValueError, match=r"`logits`.*\(N, K\).*\(5,\)"):
        mutual_mean_loss(logits[0], logits[0], modalities)
    with pytest.raises(TypeError, match=r"`logits`.*floating"):
        mutual_mean_loss(logits.long(), logits, modalities)
    with pytest.raises(ValueError, match=r"`modalities`.*\(4,\)"):
        mutual_mean_loss(logits, logits, modalities[:2])
    with pytest.raises(ValueError, match="`direction`"):
        mutual_mean_loss(logits, logits, modalities, direction="reverse")
    with pytest.raises(ValueError, match="`direction`"):
        MutualMeanLoss(direction="kl")


# ------------------------------------------------------------------------------------------- momentum


def test_momentum_official_schedule() -> None:
    assert mean_classifier_momentum(1) == pytest.approx(0.2)
    assert mean_classifier_momentum(99) == pytest.approx(0.2)
    assert mean_classifier_momentum(100) == pytest.approx(0.2 * 100 / 101)
    assert mean_classifier_momentum(140) == pytest.approx(0.2 * 100 / 141)
    values = [mean_classifier_momentum(e) for e in range(1, 141)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert sum(v < 0.2 for v in values) == 41  # epochs 100..140


def test_momentum_paper_constant_and_errors() -> None:
    assert all(mean_classifier_momentum(e, decay_after=None) == 0.2 for e in (1, 100, 140, 1000))
    assert mean_classifier_momentum(300, base=0.5, decay_after=200) == pytest.approx(0.5 * 200 / 301)
    with pytest.raises(ValueError, match=r"`epoch`.*from 1"):
        mean_classifier_momentum(0)
    with pytest.raises(ValueError, match="`epoch`"):
        mean_classifier_momentum(2.0)
    with pytest.raises(ValueError, match="`base`"):
        mean_classifier_momentum(1, base=0.0)
    with pytest.raises(ValueError, match="`base`"):
        mean_classifier_momentum(1, base=1.5)
    with pytest.raises(ValueError, match="`decay_after`"):
        mean_classifier_momentum(1, decay_after=0)


# --------------------------------------------------------------------------------------- compile / dtype


def test_compile() -> None:
    torch._dynamo.reset()  # fresh guards: no recompile budget shared with other tests
    heads = make_heads(dtype=torch.float32)
    f, labels, modalities = batch(seed=5)
    f = f.float()
    compiled = torch.compile(heads, backend="eager", fullgraph=True)
    out, ref = compiled(f, labels, modalities), heads(f, labels, modalities)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b)
    for direction in ("official", "paper"):
        loss_fn = torch.compile(MutualMeanLoss(direction=direction), backend="eager", fullgraph=True)
        torch.testing.assert_close(
            loss_fn(ref.logits, ref.mean_logits, modalities),
            mutual_mean_loss(ref.logits, ref.mean_logits, modalities, direction=direction),
        )


def test_bf16_autocast_finite() -> None:
    heads = ModalityClassifiers(64, 10)
    f = torch.randn(6, 64) * 10
    labels, modalities = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = heads(f, labels, modalities)
        kl = {d: mutual_mean_loss(out.logits, out.mean_logits, modalities, direction=d) for d in ("official", "paper")}
    assert out.logits.dtype == torch.bfloat16
    assert out.visible_loss.dtype == torch.float32 and torch.isfinite(out.visible_loss)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in kl.values())
    (out.visible_loss + out.infrared_loss + kl["official"]).backward()
    assert torch.isfinite(heads.visible.weight.grad).all()


def test_extra_repr() -> None:
    assert ModalityClassifiers(14336, 395).extra_repr() == "14336, 395"
    assert MutualMeanLoss().extra_repr() == "direction='official'"
    assert repr(MutualMeanLoss(direction="paper")) == "MutualMeanLoss(direction='paper')"


# ------------------------------------------------------------------------------------------------ reduction


@pytest.mark.parametrize("direction", ["official", "paper"])
def test_mutual_mean_reduction(direction: str) -> None:
    """``"none"`` gives the per-row divergences; ``"mean"`` (the default, unchanged) and ``"sum"`` reduce them."""
    logits, mean_logits = torch.randn(6, 5, dtype=F64), torch.randn(6, 5, dtype=F64)
    modalities = torch.tensor([0, 1, 1, 0, 1, 1])
    log_p, log_q = F.log_softmax(logits, 1), F.log_softmax(mean_logits, 1)
    if direction == "official":
        expected = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)  # KL(p || q) per row
    else:
        expected = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(1)  # KL(q || p) per row
    rows = mutual_mean_loss(logits, mean_logits, modalities, direction=direction, reduction="none")
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(
        mutual_mean_loss(logits, mean_logits, modalities, direction=direction, reduction="sum"), expected.sum()
    )
    mean = mutual_mean_loss(logits, mean_logits, modalities, direction=direction)
    visible = modalities == 0
    reference = expected.mean() if direction == "official" else expected[visible].mean() + expected[~visible].mean()
    torch.testing.assert_close(mean, reference)
    module = MutualMeanLoss(direction=direction, reduction="none")
    torch.testing.assert_close(module(logits, mean_logits, modalities), rows)
    assert repr(module) == f"MutualMeanLoss(direction={direction!r}, reduction='none')"
    with pytest.raises(ValueError, match="`reduction`"):
        mutual_mean_loss(logits, mean_logits, modalities, reduction="batchmean")  # type: ignore[arg-type]
    assert mutual_mean_loss(logits[:0], mean_logits[:0], modalities[:0], reduction="none").shape == (0,)
