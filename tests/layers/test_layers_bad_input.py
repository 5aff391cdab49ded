"""Bad input for every public layer: one property test per layer (docs/robustness_layers.rst is its table).

For each layer the property draws the kind of input, the mode (training or eval) and the sizes:

* ``empty``: a batch of :math:`N = 0` gives an empty output of the right shape and dtype (as
  ``torchvision.ops`` do), and a backward pass through it works;
* ``one_row``: a batch of one sample gives a finite output of the right shape, or (only where a BatchNorm
  would have a single value per channel in training mode) a :class:`ValueError` naming the argument;
* ``integer``: an integer tensor in a floating-point argument raises :class:`TypeError` naming it;
* ``nonfinite``: a NaN, :math:`+\\infty` or :math:`-\\infty` at a random position of one sample's input gives a
  non-finite value in that sample's output (a NaN for a NaN input): never a plausible finite value.

Every public callable of ``vireid_layers.layers`` that takes a tensor has a case (checked below);
``sobel_kernels`` takes none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vireid_layers.layers as layers
from vireid_layers.layers import (
    CGSA,
    DEE,
    IWPA,
    MAM,
    MFA,
    PAM,
    GeM,
    NonLocal,
    SobelEdges,
    gem,
    graph_attention,
    sobel_edges,
)

Inputs = dict[str, torch.Tensor]


@dataclass
class Case:
    """A layer, how to build its inputs for ``n`` samples, and where sample ``i`` lands in its output."""

    name: str
    build: Callable[[], Callable[..., Any]]  # a fresh callable (module or functional) with its state
    inputs: Callable[[int, torch.Generator], Inputs]  # keyword inputs for a batch of n
    floating: tuple[str, ...]  # the floating-point arguments (integer input refused, non-finite injected)
    rows: Callable[[int, int], list[int]] = lambda i, n: [i]  # output rows that depend on sample i
    output: Callable[[Any], torch.Tensor] = lambda out: out
    batch_arg: str = "x"  # the argument named when a one-row training batch is refused
    one_row_training_refused: bool = False
    is_module: bool = True
    out_shape: Callable[[Inputs], tuple[int, ...]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=g)


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 2


CASES = [
    Case(
        "DEE",
        lambda: DEE(8),
        lambda n, g: {"x": _randn(g, n, 8, 5, 3)},
        ("x",),
        rows=lambda i, n: [i, n + i, 2 * n + i],
        out_shape=lambda inp: (3 * inp["x"].shape[0], 8, 5, 3),
    ),
    Case(
        "MFA-official",
        lambda: MFA(8, 4, stride=2),
        lambda n, g: {"x_high": _randn(g, n, 8, 3, 2), "x_low": _randn(g, n, 4, 6, 4)},
        ("x_high", "x_low"),
        out_shape=lambda inp: tuple(inp["x_high"].shape),
    ),
    Case(
        "MFA-paper",
        lambda: MFA(8, 4, stride=2, form="paper"),
        lambda n, g: {"x_high": _randn(g, n, 8, 3, 2), "x_low": _randn(g, n, 4, 5, 4)},
        ("x_high", "x_low"),
        out_shape=lambda inp: tuple(inp["x_high"].shape),
    ),
    Case(
        "IWPA",
        lambda: IWPA(8, parts=3),
        lambda n, g: {"x": _randn(g, n, 8, 6, 3), "global_feature": _randn(g, n, 8)},
        ("x", "global_feature"),
        one_row_training_refused=True,
        out_shape=lambda inp: (inp["x"].shape[0], 8),
    ),
    Case(
        "IWPA-paper",
        lambda: IWPA(8, parts=3, form="paper"),
        lambda n, g: {"x": _randn(g, n, 8, 6, 3)},
        ("x",),
        one_row_training_refused=True,
        out_shape=lambda inp: (inp["x"].shape[0], 8),
    ),
    Case(
        "CGSA",
        lambda: CGSA(8, 3, hidden=4, heads=2),
        lambda n, g: {"features": _randn(g, n, 8), "labels": _labels(n)},
        ("features",),
        out_shape=lambda inp: (inp["features"].shape[0], 3),
    ),
    Case(
        "graph_attention",
        lambda: graph_attention,
        lambda n, g: {
            "h": _randn(g, n, 4),
            "adjacency_mask": _labels(n)[:, None] == _labels(n)[None, :],
            "a_src": _randn(g, 4),
            "a_dst": _randn(g, 4),
        },
        ("h", "a_src", "a_dst"),
        is_module=False,
        out_shape=lambda inp: (inp["h"].shape[0], 4),
        extra={"inject": ("h",)},  # a NaN in the attention vector reaches every row: not a per-sample input
    ),
    Case(
        "MAM",
        lambda: MAM(8, reduction=2),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3)},
        ("x",),
        out_shape=lambda inp: tuple(inp["x"].shape),
    ),
    Case(
        "PAM",
        lambda: PAM(8, num_parts=3),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3)},
        ("x",),
        output=lambda out: out.features,
        out_shape=lambda inp: (inp["x"].shape[0], 32),
        extra={"masks": True},
    ),
    Case(
        "SobelEdges",
        lambda: SobelEdges(combine="magnitude"),
        lambda n, g: {"x": _randn(g, n, 3, 6, 5)},
        ("x",),
        out_shape=lambda inp: (inp["x"].shape[0], 1, 6, 5),
    ),
    Case(
        "sobel_edges",
        lambda: sobel_edges,
        lambda n, g: {"x": _randn(g, n, 3, 6, 5)},
        ("x",),
        is_module=False,
        out_shape=lambda inp: (inp["x"].shape[0], 1, 6, 5),
    ),
    Case(
        "GeM",
        lambda: GeM(),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3).abs()},
        ("x",),
        out_shape=lambda inp: (inp["x"].shape[0], 8),
    ),
    Case(
        "GeM-learnable",
        lambda: GeM(learnable=True),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3)},
        ("x",),
        out_shape=lambda inp: (inp["x"].shape[0], 8),
    ),
    Case(
        "gem",
        lambda: gem,
        lambda n, g: {"x": _randn(g, n, 8, 4, 3).abs()},
        ("x",),
        is_module=False,
        out_shape=lambda inp: (inp["x"].shape[0], 8),
    ),
    Case(
        "NonLocal",
        lambda: NonLocal(8),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3)},
        ("x",),
        out_shape=lambda inp: tuple(inp["x"].shape),
    ),
    Case(
        "NonLocal-corrected",
        lambda: NonLocal(8, form="corrected"),
        lambda n, g: {"x": _randn(g, n, 8, 4, 3)},
        ("x",),
        out_shape=lambda inp: tuple(inp["x"].shape),
    ),
]


def _activate(layer: Any, g: torch.Generator) -> None:
    """Random values in the zero-initialised output BatchNorms, so the attention paths contribute."""
    if not isinstance(layer, torch.nn.Module):
        return
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))


def _call(case: Case, layer: Any, inputs: Inputs) -> torch.Tensor:
    return case.output(layer(**inputs))


def test_every_public_layer_has_a_case() -> None:
    covered = {c.name.split("-")[0] for c in CASES}
    types = {"IWPAForm", "MFAForm", "NonLocalForm", "PAMOutput", "SobelCombine"}
    no_tensor_input = {"sobel_kernels"}
    assert set(layers.__all__) - types - no_tensor_input == covered


def _check_empty(case: Case, layer: Any, g: torch.Generator) -> None:
    inputs = case.inputs(0, g)
    for name in case.floating:
        inputs[name].requires_grad_(True)
    out = _call(case, layer, inputs)
    assert case.out_shape is not None
    assert tuple(out.shape) == case.out_shape(inputs) and out.shape[0] == 0 and out.dtype == torch.float32
    grads = torch.autograd.grad(out.sum(), [inputs[k] for k in case.floating], allow_unused=True)
    for name, grad in zip(case.floating, grads, strict=True):
        assert grad is None or grad.shape == inputs[name].shape


def _check_one_row(case: Case, layer: Any, g: torch.Generator, training: bool) -> None:
    inputs = case.inputs(1, g)
    if training and case.is_module and case.one_row_training_refused:
        with pytest.raises(ValueError, match=rf"`{case.batch_arg}`.*training"):
            _call(case, layer, inputs)
        layer.eval()
    out = _call(case, layer, inputs)
    assert case.out_shape is not None
    assert tuple(out.shape) == case.out_shape(inputs) and torch.isfinite(out).all()


def _check_integer(case: Case, layer: Any, inputs: Inputs, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(case.floating), label="argument")
    inputs[name] = inputs[name].round().to(data.draw(st.sampled_from([torch.int64, torch.int32, torch.bool])))
    with pytest.raises(TypeError, match=rf"`{name}`.*floating"):
        _call(case, layer, inputs)


def _check_nonfinite(case: Case, layer: Any, inputs: Inputs, n: int, value: float, data: st.DataObject) -> None:
    """One entry of one sample's input is NaN / +-inf: that sample's output must not be finite."""
    name = data.draw(st.sampled_from(case.extra.get("inject", case.floating)), label="argument")
    sample = data.draw(st.integers(0, n - 1), label="sample")
    t = inputs[name]
    t[sample].view(-1)[data.draw(st.integers(0, t[sample].numel() - 1), label="position")] = value
    rows = _call(case, layer, inputs)[case.rows(sample, n)]
    if math.isnan(value):
        assert rows.isnan().any(), f"NaN in `{name}` of sample {sample} vanished from its output"
    else:
        assert (~torch.isfinite(rows)).any(), f"{value} in `{name}` of sample {sample} became a finite output"
    if case.extra.get("masks") and math.isnan(value):  # PAM's pattern maps: NaN stays NaN
        assert layer(**inputs).masks[sample].isnan().any()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(deadline=None, max_examples=40)
@given(
    kind=st.sampled_from(["empty", "one_row", "integer", "nonfinite"]),
    training=st.booleans(),
    n=st.integers(2, 5),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    data=st.data(),
)
def test_bad_input(case: Case, kind: str, training: bool, n: int, value: float, data: st.DataObject) -> None:
    """The property of the module docstring, for one layer: empty, one-row, integer or non-finite input."""
    g = torch.Generator().manual_seed(n)
    layer = case.build()
    _activate(layer, g)
    if case.is_module:
        layer.train(training)
    if kind == "empty":
        _check_empty(case, layer, g)
    elif kind == "one_row":
        _check_one_row(case, layer, g, training)
    elif kind == "integer":
        _check_integer(case, layer, case.inputs(n, g), data)
    else:
        _check_nonfinite(case, layer, case.inputs(n, g), n, value, data)
