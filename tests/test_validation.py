"""The one validation module: every check's message names the argument, the expected and the received value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from vireid_layers._validation import (
    check_batch_statistics,
    check_choice,
    check_embeddings,
    check_floating,
    check_int,
    check_labels,
    check_map,
    check_modalities,
    check_nonnegative,
    check_positive,
    check_probability,
    check_shape,
    check_tensor,
)


def _raises(error: type[Exception], message: str):
    return pytest.raises(error, match=re.escape(message))


# ----------------------------------------------------------------------------------------------- check_shape


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((2, 64, 8, 4), "(N, 64, H, W)"),
        ((0, 64, 8, 4), "(N, 64, H, W)"),
        ((5,), "(5,)"),
        ((5,), "(N,)"),
        ((3, 3), "(N, N)"),
        ((3,), "(*, 3)"),
        ((2, 7, 3), "(*, 3)"),
        ((4, 4), "(*, N, N)"),
        ((2, 3), "(N, D)"),
    ],
)
def test_check_shape_accepts(shape: tuple[int, ...], spec: str) -> None:
    x = torch.zeros(shape)
    assert check_shape(x, "x", spec) is x


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((2, 32, 8, 4), "(N, 64, H, W)"),  # a fixed size differs
        ((2, 64, 8), "(N, 64, H, W)"),  # rank
        ((2, 64, 8, 4, 1), "(N, 64, H, W)"),
        ((4,), "(5,)"),
        ((3, 4), "(N, N)"),  # a repeated name must repeat its size
        ((2, 4), "(*, 3)"),
        ((), "(*, 3)"),  # '*' is any number of leading dims, the named ones must be there
        ((2, 3, 4), "(*, N, N)"),
    ],
)
def test_check_shape_message(shape: tuple[int, ...], spec: str) -> None:
    with _raises(ValueError, f"`x` must have shape {spec}, got shape {shape}"):
        check_shape(torch.zeros(shape), "x", spec)


def test_check_shape_reason_and_type() -> None:
    with _raises(ValueError, "`labels` must have shape (4,), got shape (3,) (one per row)"):
        check_shape(torch.zeros(3), "labels", "(4,)", why="one per row")
    with _raises(TypeError, "`x` must be a torch.Tensor, got list [1.0]"):
        check_shape([1.0], "x", "(N,)")
    with _raises(TypeError, "`x` must be a torch.Tensor, got ndarray"):
        check_shape(np.zeros(3), "x", "(N,)")


def test_check_shape_legacy_rank_only() -> None:
    """``check_shape(x, name, spelled, ndim)``: the form the evaluation and model code still use checks the rank."""
    x = torch.zeros(2, 5)
    assert check_shape(x, "x", "(3, 5)", 2) is x  # the spelling is only the message
    with _raises(ValueError, "`x` must have shape (Q, G), got shape (2, 5, 1)"):
        check_shape(x[..., None], "x", "(Q, G)", 2)


def test_check_shape_compiles_fullgraph() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return check_shape(x, "x", "(N, 4, H, W)").sum()

    x = torch.randn(2, 4, 3, 3)
    assert torch.compile(f, backend="eager", fullgraph=True)(x) == x.sum()


# ----------------------------------------------------------------------------------------------- tensors


def test_check_floating_and_embeddings() -> None:
    with _raises(TypeError, "`x` must be a floating-point tensor, got dtype torch.int64"):
        check_floating(torch.zeros(2, dtype=torch.long), "x")
    with _raises(TypeError, "`x` must be a floating-point tensor, got dtype torch.bool"):
        check_embeddings(torch.zeros(2, 2, dtype=torch.bool), "x")
    with _raises(ValueError, "`generated` must have shape (K, N, D), got shape (2, 3)"):
        check_embeddings(torch.zeros(2, 3), "generated", 3)


def test_check_map_messages() -> None:
    x = torch.zeros(2, 8, 1, 1)
    assert check_map(x, "x", 8) is x
    with _raises(ValueError, "`x` must have shape (N, 8, H, W), got shape (2, 4, 1, 1)"):
        check_map(torch.zeros(2, 4, 1, 1), "x", 8)
    with _raises(ValueError, "`x` must have shape (N, C, H, W), got shape (2, 4, 1)"):
        check_map(torch.zeros(2, 4, 1), "x")
    with _raises(ValueError, "`x` must have a spatial size with H >= 3, W >= 1 (one row per part), got shape"):
        check_map(torch.zeros(2, 8, 2, 4), "x", min_height=3, why="one row per part")
    with _raises(ValueError, "H*W >= 2"):
        check_map(x, "x", min_positions=2)
    with _raises(TypeError, "`x` must be a floating-point tensor"):
        check_map(torch.zeros(2, 8, 1, 1, dtype=torch.int32), "x")


def test_check_batch_statistics() -> None:
    one = torch.zeros(1, 4, 1, 1)
    check_batch_statistics(one, "x", training=False, per_position=True)  # eval: fine
    check_batch_statistics(torch.zeros(0, 4, 1, 1), "x", training=True, per_position=True)  # empty: fine
    check_batch_statistics(torch.zeros(1, 4, 2, 1), "x", training=True, per_position=True)  # 2 positions
    with _raises(ValueError, "`x` gives its BatchNorm a single value per channel (N*H*W = 1)"):
        check_batch_statistics(one, "x", training=True, per_position=True)
    with _raises(ValueError, "(N = 1)"):
        check_batch_statistics(torch.zeros(1, 4, 3, 3), "x", training=True, per_position=False)


def test_check_labels_and_modalities() -> None:
    with _raises(ValueError, "`labels` must have shape (4,), got shape (3,)"):
        check_labels(torch.zeros(3, dtype=torch.long), 4)
    with _raises(TypeError, "`labels` must be an integer tensor, got dtype torch.float32"):
        check_labels(torch.zeros(4), 4)
    with _raises(ValueError, "`modalities` must have shape (2,), got shape (1, 2)"):
        check_modalities(torch.zeros(1, 2, dtype=torch.long), 2)
    with _raises(ValueError, "`modalities` must hold only 0 (visible) and 1 (infrared), got values [2, 5]"):
        check_modalities(torch.tensor([0, 2, 5, 2]), 4)
    with _raises(TypeError, "`modalities` must be an integer or bool tensor, got dtype torch.float32"):
        check_modalities(torch.zeros(2), 2)
    assert check_modalities(torch.tensor([True, False]), 2).dtype == torch.bool
    with _raises(TypeError, "`x` must be a torch.Tensor, got int 3"):
        check_tensor(3, "x")


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("nan")])
@pytest.mark.parametrize("check", [check_positive, check_nonnegative])
def test_non_finite_is_refused(check, value: float) -> None:
    """``nan < 0`` is false: the old ``check_positive`` accepted NaN (and inf); both are refused now."""
    with _raises(ValueError, f"`margin` must be a finite number, got {value}"):
        check(value, "margin")


def test_positive_and_nonnegative() -> None:
    assert check_positive(2, "p") == 2.0 and isinstance(check_positive(2, "p"), float)
    assert check_positive(np.float32(0.5), "p") == 0.5
    assert check_nonnegative(0, "margin") == 0.0
    assert check_positive(0.0, "eps", allow_zero=True) == 0.0
    with _raises(ValueError, "`p` must be > 0, got 0.0"):
        check_positive(0.0, "p")
    with _raises(ValueError, "`margin` must be >= 0, got -0.1"):
        check_nonnegative(-0.1, "margin")
    with _raises(TypeError, "`p` must be a real number, got str '3'"):
        check_positive("3", "p")
    with _raises(TypeError, "`p` must be a real number, got bool True"):
        check_positive(True, "p")
    with _raises(TypeError, "`p` must be a real number, got a torch.float32 tensor of shape (1,)"):
        check_positive(torch.ones(1), "p")


def test_int_probability_choice() -> None:
    assert check_int(np.int64(3), "parts") == 3
    with _raises(TypeError, "`parts` must be an int, got float 2.0"):
        check_int(2.0, "parts")
    with _raises(TypeError, "`parts` must be an int, got bool True"):
        check_int(True, "parts")
    with _raises(ValueError, "`workers` must be >= 0, got -1"):
        check_int(-1, "workers", minimum=0)
    assert check_probability(1, "dropout") == 1.0
    with _raises(ValueError, "`dropout` must be in [0, 1], got nan"):
        check_probability(math.nan, "dropout")
    with _raises(ValueError, "`dropout` must be in [0, 1], got 1.5"):
        check_probability(1.5, "dropout")
    with _raises(ValueError, "`reduction` must be one of ['mean', 'sum', 'none'], got 'max'"):
        check_choice("max", "reduction", ("mean", "sum", "none"))


def test_no_copies_left() -> None:
    """The checks live in one module: the former homes are gone or re-export it."""
    import importlib

    from vireid_layers import distances
    from vireid_layers.losses import _numerics

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("vireid_layers.layers._checks")
    assert not hasattr(_numerics, "check_finite_nonnegative")  # the models import _validation's
    assert distances.MIN_DISTANCE == 1e-6 == distances.SQUARED_DISTANCE_EPS**0.5
    for name in ("triplet", "cpm"):
        module = importlib.import_module(f"vireid_layers.losses.{name}")
        assert not hasattr(module, "_MIN_DISTANCE")
        assert module.MIN_DISTANCE is distances.MIN_DISTANCE
