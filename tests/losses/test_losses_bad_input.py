"""Bad input for every public loss: non-finite values, huge values, empty and one-row batches, integer inputs.

One hypothesis property per loss (parametrised over :data:`CASES`, every public loss and its forms), drawing the
kind of bad input, the input it goes into and the position. The contract (``docs/robustness_losses.rst``):

* a NaN anywhere in any floating-point input gives a NaN loss (or a ``ValueError``), never a finite number,
  also where the row is masked out of the computation (one identity, a single DEE branch, an identity seen in
  one modality only); :math:`\\pm\\infty` gives a non-finite loss (or a ``ValueError``), except
  :math:`-\\infty` in log-probabilities, which is a valid value (probability 0);
* inputs scaled by :math:`10^{20}` (finite, but their float32 squares overflow) give either a non-finite loss
  or the float64 loss of the same inputs to float32 accuracy, never a plausible wrong number (the batch-hard
  triplet loss used to return 0.0);
* an empty batch gives a finite zero connected to the graph; a one-row batch a finite value with finite
  gradients;
* an integer tensor where a floating-point one is expected is a ``TypeError`` that names the argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import vireid_layers as vl
from vireid_layers.losses import ModalityClassifiers, MutualMeanLoss, PEFLoss

F64 = torch.float64
KINDS = ("nan", "inf", "-inf", "huge", "empty", "one_row", "integer")

#: ``make(n, generator, dtype) -> (loss, floats)``: ``loss(**floats)`` is the scalar the case checks; ``floats``
#: are the floating-point inputs by argument name (labels, modalities and parameters are fixed by ``make``).
Make = Callable[[int, torch.Generator, torch.dtype], tuple[Callable[..., Tensor], dict[str, Tensor]]]


@dataclass(frozen=True)
class LossCase:
    """One loss (or form of a loss) with the way to build its inputs."""

    name: str
    make: Make
    #: inputs where -inf is a valid value (log-probabilities)
    neg_inf_valid: tuple[str, ...] = ()


def _ids(n: int, g: torch.Generator, num_ids: int = 3) -> tuple[Tensor, Tensor]:
    """Labels in a few identities and random modalities: degenerate layouts are legal and drawn too."""
    return torch.randint(0, num_ids, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)


def _randn(g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=F64).to(dtype)


def _triplet(n, g, dtype):
    labels, _ = _ids(n, g)
    return (lambda embeddings: vl.HardTripletLoss()(embeddings, labels)), {"embeddings": _randn(g, dtype, n, 6)}


def _wrt(**kwargs) -> Make:
    def make(n, g, dtype):
        labels, _ = _ids(n, g)
        loss = vl.WRTLoss(**kwargs)
        return (lambda embeddings: loss(embeddings, labels)), {"embeddings": _randn(g, dtype, n, 6)}

    return make


def _cpm(form: str) -> Make:
    def make(n, g, dtype):
        labels, modalities = _ids(n, g)
        loss = vl.CPMLoss(form=form)
        floats = {"original": _randn(g, dtype, n, 6), "generated": _randn(g, dtype, 2, n, 6)}
        return (lambda original, generated: loss(original, generated, labels, modalities)), floats

    return make


def _orthogonal(n, g, dtype):
    branches = int(torch.randint(1, 4, (), generator=g))  # a single branch has no pair to carry a NaN
    return (lambda generated: vl.OrthogonalLoss()(generated)), {"generated": _randn(g, dtype, branches, n, 6)}


def _cmcc(normalize: bool) -> Make:
    def make(n, g, dtype):
        labels, modalities = _ids(n, g)
        loss = vl.CMCCLoss(normalize=normalize)
        return (lambda embeddings: loss(embeddings, labels, modalities)), {"embeddings": _randn(g, dtype, n, 6)}

    return make


def _center_cluster(anchors: str) -> Make:
    def make(n, g, dtype):
        labels, _ = _ids(n, g)
        loss = vl.CenterClusterLoss(anchors=anchors)
        return (lambda embeddings: loss(embeddings, labels)), {"embeddings": _randn(g, dtype, n, 6)}

    return make


def _separation(n, g, dtype):
    parts = int(torch.randint(1, 4, (), generator=g))  # one map: no pair to carry a NaN
    masks = torch.rand(n, parts, 3, 2, generator=g, dtype=F64).to(dtype)
    return (lambda masks: vl.SeparationLoss()(masks)), {"masks": masks}


def _graph(n, g, dtype):
    labels = torch.randint(0, 4, (n,), generator=g)
    log_probs = torch.randn(n, 4, generator=g, dtype=F64).log_softmax(1).to(dtype)
    return (lambda log_probs: vl.GraphAttentionLoss()(log_probs, labels)), {"log_probs": log_probs}


def _mutual_mean(direction: str) -> Make:
    def make(n, g, dtype):
        _, modalities = _ids(n, g)
        loss = MutualMeanLoss(direction=direction)
        floats = {"logits": _randn(g, dtype, n, 5), "mean_logits": _randn(g, dtype, n, 5)}
        return (lambda logits, mean_logits: loss(logits, mean_logits, modalities)), floats

    return make


def _modality_classifiers(n, g, dtype):
    labels, modalities = _ids(n, g)
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=g)))
    heads = ModalityClassifiers(6, 3).to(dtype)  # the same weights in both dtypes

    def loss(features):
        out = heads(features, labels, modalities)
        return out.visible_loss + out.infrared_loss

    return loss, {"features": _randn(g, dtype, n, 6)}


_PEF: dict[torch.dtype, PEFLoss] = {}


def _pef(n, g, dtype):
    if dtype not in _PEF:  # one random VGG per dtype (building it is the slow part)
        torch.manual_seed(0)
        _PEF[dtype] = PEFLoss(weights=None).to(dtype)  # the same weights in both dtypes
    loss = _PEF[dtype]
    _, modalities = _ids(n, g)
    floats = {
        "features": torch.rand(n, 64, 16, 16, generator=g, dtype=F64).to(dtype),
        "images": _randn(g, dtype, n, 3, 32, 32),
    }
    return (lambda features, images: loss(features, images, modalities)), floats


CASES = [
    LossCase("HardTripletLoss", _triplet),
    LossCase("WRTLoss", _wrt()),
    LossCase("WRTLoss-official", _wrt(form="official")),
    LossCase("WRTLoss-normalize", _wrt(normalize=True)),
    LossCase("CPMLoss-official", _cpm("official")),
    LossCase("CPMLoss-paper", _cpm("paper")),
    LossCase("OrthogonalLoss", _orthogonal),
    LossCase("CMCCLoss", _cmcc(True)),
    LossCase("CMCCLoss-raw", _cmcc(False)),
    LossCase("CenterClusterLoss-official", _center_cluster("official")),
    LossCase("CenterClusterLoss-paper", _center_cluster("paper")),
    LossCase("SeparationLoss", _separation),
    LossCase("GraphAttentionLoss", _graph, neg_inf_valid=("log_probs",)),
    LossCase("MutualMeanLoss-official", _mutual_mean("official")),
    LossCase("MutualMeanLoss-paper", _mutual_mean("paper")),
    LossCase("ModalityClassifiers", _modality_classifiers),
    LossCase("PEFLoss", _pef),
]


def test_every_public_loss_has_a_case() -> None:
    """A new public loss must get a case here (and a row in docs/robustness_losses.rst)."""
    losses = {
        name
        for name in vl.losses.__all__
        if isinstance(getattr(vl.losses, name), type)
        and issubclass(getattr(vl.losses, name), torch.nn.Module)
        and not name.endswith(("Form", "Normalization", "Direction", "Anchors", "Entry", "Output"))
    }
    covered = {case.name.split("-")[0] for case in CASES}
    assert losses <= covered, f"no bad-input case for {sorted(losses - covered)}"


def _call(loss: Callable[..., Tensor], floats: dict[str, Tensor]) -> Tensor:
    out = loss(**floats)
    assert out.ndim == 0, "every case checks a scalar"
    return out


def _check_non_finite(case: LossCase, data: st.DataObject, kind: str, g: torch.Generator) -> None:
    n = data.draw(st.integers(1, 7), label="n")
    loss, floats = case.make(n, g, torch.float32)
    name = data.draw(st.sampled_from(sorted(floats)), label="input")
    x = floats[name].clone()
    x.view(-1)[data.draw(st.integers(0, x.numel() - 1), label="position")] = float(kind)
    floats[name] = x.requires_grad_(True)
    try:
        out = _call(loss, floats)
    except ValueError as error:  # refusing is allowed: the message must name the input
        assert f"`{name}`" in str(error)
        return
    if kind == "nan":
        assert torch.isnan(out), f"a NaN in `{name}` gave {out.item()}"
    elif kind == "-inf" and name in case.neg_inf_valid:
        assert not torch.isnan(out)  # a log-probability of -inf is a probability of 0: a valid input
    else:
        assert not torch.isfinite(out), f"an {kind} in `{name}` gave {out.item()}"


def _check_huge(case: LossCase, data: st.DataObject, g: torch.Generator) -> None:
    n = data.draw(st.integers(2, 7), label="n")
    state = g.get_state()
    loss32, floats32 = case.make(n, g, torch.float32)
    g.set_state(state)
    loss64, _ = case.make(n, g, F64)
    scaled = {k: v * 1e20 for k, v in floats32.items()}
    try:
        out = _call(loss32, scaled)
    except ValueError:
        return
    if not torch.isfinite(out):
        return  # overflow reported as a non-finite value: fine
    expected = _call(loss64, {k: v.to(F64) * 1e20 for k, v in floats32.items()}).item()
    assert math.isfinite(expected)
    assert out.item() == pytest.approx(expected, rel=1e-3, abs=1e-4 * max(1.0, abs(expected))), (
        f"float32 inputs of size 1e20 gave {out.item()}, the float64 loss is {expected}"
    )


def _check_batch(case: LossCase, kind: str, g: torch.Generator) -> None:
    loss, floats = case.make(0 if kind == "empty" else 1, g, torch.float32)
    floats = {k: v.requires_grad_(True) for k, v in floats.items()}
    out = _call(loss, floats)
    assert torch.isfinite(out) and out.requires_grad
    if kind == "empty":
        assert out.item() == 0.0
    grads = torch.autograd.grad(out, list(floats.values()), allow_unused=True)
    assert all(gr is None or torch.isfinite(gr).all() for gr in grads)


def _check_integer(case: LossCase, data: st.DataObject, g: torch.Generator) -> None:
    loss, floats = case.make(3, g, torch.float32)
    name = data.draw(st.sampled_from(sorted(floats)), label="input")
    floats[name] = floats[name].round().to(data.draw(st.sampled_from([torch.int64, torch.int32, torch.uint8])))
    with pytest.raises(TypeError, match=f"`{name}`"):
        _call(loss, floats)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data(), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16))
def test_bad_input(case: LossCase, data: st.DataObject, kind: str, seed: int) -> None:
    """Non-finite, huge, empty, one-row and integer inputs: NaN or an error, never a plausible number."""
    g = torch.Generator().manual_seed(seed)
    if kind in ("nan", "inf", "-inf"):
        _check_non_finite(case, data, kind, g)
    elif kind == "huge":
        _check_huge(case, data, g)
    elif kind in ("empty", "one_row"):
        _check_batch(case, kind, g)
    else:
        _check_integer(case, data, g)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nan_everywhere_gives_nan(case: LossCase) -> None:
    """The deterministic core of the property: one NaN in each input, at the first position, gives NaN."""
    for name in case.make(4, torch.Generator().manual_seed(0), torch.float32)[1]:
        loss, floats = case.make(4, torch.Generator().manual_seed(0), torch.float32)
        floats[name].view(-1)[0] = float("nan")
        assert torch.isnan(_call(loss, floats)), name


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda v: vl.HardTripletLoss(margin=v), "margin"),
        (lambda v: vl.CPMLoss(margin=v), "margin"),
        (lambda v: vl.CenterClusterLoss(margin=v), "margin"),
        (lambda v: vl.WRTLoss(eps=v), "eps"),
    ],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_hyperparameters(factory: Callable[[float], object], name: str, value: float) -> None:
    """``margin=nan`` used to be accepted (every hinge inactive: a loss of 0.0)."""
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number, got {value}"):
        factory(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_hyperparameters_functional(value: float) -> None:
    x, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="`margin`"):
        vl.hard_triplet_loss(x, labels, margin=value)
    with pytest.raises(ValueError, match="`margin`"):
        vl.cpm_loss(x, x.unsqueeze(0), labels, modalities, margin=value)
    with pytest.raises(ValueError, match="`margin`"):
        vl.center_cluster_loss(x, labels, margin=value)
    with pytest.raises(ValueError, match="`eps`"):
        vl.wrt_loss(x, labels, eps=value)
    with pytest.raises(ValueError, match="`weight`"):
        vl.DynamicDualAggregation().update(1.0, weight=value)
