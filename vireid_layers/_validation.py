"""Input validation shared by every layer, loss and backbone: the one place where arguments are checked.

Each check raises :class:`TypeError` (wrong kind of value: not a tensor, wrong dtype, not a number) or
:class:`ValueError` (right kind, wrong value: a shape, a size, a range) with a message that names the argument,
says what was expected and what was received, e.g. ``"`x` must have shape (N, 64, H, W), got shape (2, 32, 8,
4)"``. The tensor checks read only shapes and dtypes (static under ``torch.compile``, so they keep
``fullgraph=True`` working); the one value check, the 0/1 content of a modality vector, is skipped while
tracing. The hyperparameter checks run on Python numbers, in constructors and at the top of the functionals.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_batch_statistics",
    "check_choice",
    "check_embeddings",
    "check_floating",
    "check_int",
    "check_labels",
    "check_map",
    "check_modalities",
    "check_nonnegative",
    "check_positive",
    "check_probability",
    "check_shape",
    "check_tensor",
]


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"


def check_tensor(x: object, name: str) -> Tensor:
    """Raise :class:`TypeError` unless ``x`` is a tensor.

    Examples:
        >>> check_tensor([1.0], "x")
        Traceback (most recent call last):
        ...
        TypeError: `x` must be a torch.Tensor, got list [1.0]
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {_describe(x)}")
    return x


def _parse_shape(shape: str) -> tuple[bool, list[int | str]]:
    """``"(*, N, 64)"`` -> ``(True, ["N", 64])``: whether leading dims are free, then one entry per dim."""
    body = shape.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    tokens = [t.strip() for t in body.split(",")]
    if tokens and tokens[-1] == "":  # "(N,)"
        tokens = tokens[:-1]
    leading = bool(tokens) and tokens[0] in ("*", "...")
    dims: list[int | str] = []
    for token in tokens[1:] if leading else tokens:
        if not token or token in ("*", "..."):
            raise ValueError(f"shape spec {shape!r}: '*' may only stand first, and no entry may be empty")
        dims.append(int(token) if token.lstrip("-").isdigit() else token)
    return leading, dims


def check_shape(x: object, name: str, shape: str, ndim: int | None = None, *, why: str = "") -> Tensor:
    """Raise unless ``x`` is a tensor of the shape ``shape``, spelled as the docs spell it.

    ``shape`` is a tuple written as a string: an integer entry is a fixed size, a name (``N``, ``C``, ``H``)
    is any size, the same name twice must be the same size, and a leading ``*`` stands for any number of
    leading dimensions (kornia's ``KORNIA_CHECK_SHAPE`` idea). The message names the argument and gives the
    expected and the received shape. Only shapes are read (static under ``torch.compile``).

    Args:
        x: the value to check.
        name: the argument's name, for the message.
        shape: the expected shape, e.g. ``"(N, 64, H, W)"``, ``f"({n},)"``, ``"(*, N, D)"``.
        ndim: legacy form (``check_shape(x, name, spelled, ndim)``): only the rank ``ndim`` is checked and
            ``shape`` is just the spelling for the message. Kept for the callers in ``evaluation/`` and
            ``models/``; new code passes the shape alone.
        why: a reason appended to the message (e.g. ``"to match `x` of shape (4, 3)"``).

    Returns:
        ``x``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` has another rank, or a fixed or repeated size differs.

    Examples:
        >>> check_shape(torch.zeros(2, 64, 8, 4), "x", "(N, 64, H, W)").shape
        torch.Size([2, 64, 8, 4])
        >>> check_shape(torch.zeros(2, 32, 8, 4), "x", "(N, 64, H, W)")
        Traceback (most recent call last):
        ...
        ValueError: `x` must have shape (N, 64, H, W), got shape (2, 32, 8, 4)
        >>> check_shape(torch.zeros(3, 3), "adjacency", "(*, 4, 4)", why="to match `h` of shape (4, 8)")
        Traceback (most recent call last):
        ...
        ValueError: `adjacency` must have shape (*, 4, 4), got shape (3, 3) (to match `h` of shape (4, 8))
    """
    x = check_tensor(x, name)
    if ndim is not None:
        ok = x.ndim == ndim
    else:
        leading, dims = _parse_shape(shape)
        ok = x.ndim >= len(dims) if leading else x.ndim == len(dims)
        if ok:
            actual = x.shape[x.ndim - len(dims) :]
            seen: dict[str, int] = {}
            for want, got in zip(dims, actual, strict=True):
                if isinstance(want, int):
                    ok = ok and got == want
                elif want in seen:
                    ok = ok and got == seen[want]
                else:
                    seen[want] = got
    if not ok:
        reason = f" ({why})" if why else ""
        raise ValueError(f"`{name}` must have shape {shape}, got shape {tuple(x.shape)}{reason}")
    return x


def check_floating(x: Tensor, name: str) -> Tensor:
    """Raise :class:`TypeError` unless ``x`` has a floating-point dtype (integer, bool and complex are refused).

    Examples:
        >>> check_floating(torch.zeros(2, dtype=torch.long), "x")
        Traceback (most recent call last):
        ...
        TypeError: `x` must be a floating-point tensor, got dtype torch.int64
    """
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_embeddings(x: object, name: str = "embeddings", ndim: int = 2) -> Tensor:
    """Check a floating-point embedding tensor of rank ``ndim`` (``(N, D)`` or ``(K, N, D)``)."""
    expected = {2: "(N, D)", 3: "(K, N, D)"}.get(ndim, f"of rank {ndim}")
    x = check_shape(x, name, expected, ndim)
    return check_floating(x, name)


def check_map(
    x: object,
    name: str,
    channels: int | None = None,
    *,
    min_height: int = 1,
    min_width: int = 1,
    min_positions: int = 1,
    why: str = "",
) -> Tensor:
    """Check a floating-point :math:`(N, C, H, W)` feature map with a non-empty (large enough) spatial size.

    Args:
        x: the tensor to check.
        name: the argument's name, for the message.
        channels: the required :math:`C`, or ``None`` for any.
        min_height: the smallest legal :math:`H`.
        min_width: the smallest legal :math:`W`.
        min_positions: the smallest legal :math:`H W`.
        why: the reason for the minimum size, appended to the message.

    Returns:
        ``x``.

    Examples:
        >>> check_map(torch.zeros(2, 8, 0, 3), "x", 8)
        Traceback (most recent call last):
        ...
        ValueError: `x` must have a spatial size with H >= 1, W >= 1, got shape (2, 8, 0, 3)
    """
    x = check_shape(x, name, f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)")
    check_floating(x, name)
    h, w = x.shape[2], x.shape[3]
    if h < min_height or w < min_width or h * w < min_positions:
        need = f"H >= {min_height}, W >= {min_width}" + (f", H*W >= {min_positions}" if min_positions > 1 else "")
        reason = f" ({why})" if why else ""
        raise ValueError(f"`{name}` must have a spatial size with {need}{reason}, got shape {tuple(x.shape)}")
    return x


def check_batch_statistics(x: Tensor, name: str, training: bool, *, per_position: bool) -> None:
    """Refuse a map whose BatchNorm would have a single value per channel in training mode.

    ``per_position=True`` for a ``BatchNorm2d`` (the statistics pool :math:`N H W` values), ``False`` for a
    ``BatchNorm1d`` on pooled features (:math:`N` values). An empty batch passes (its output is empty).
    """
    if not training:
        return
    values = x.shape[0] * (x.shape[2] * x.shape[3] if per_position else 1)
    if values == 1:
        what = "N*H*W" if per_position else "N"
        raise ValueError(
            f"`{name}` gives its BatchNorm a single value per channel ({what} = 1) in training mode, where batch "
            f"statistics need at least 2; got shape {tuple(x.shape)}. Use a larger batch or eval mode"
        )


def check_labels(labels: object, n: int, name: str = "labels") -> Tensor:
    """Check an integer label vector of length ``n`` (one label per row of the batch)."""
    labels = check_shape(labels, name, f"({n},)", why="one label per row of the batch")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {labels.dtype}")
    return labels


def check_modalities(modalities: object, n: int, name: str = "modalities") -> Tensor:
    """Check a modality vector of length ``n`` holding only 0 (visible) and 1 (infrared)."""
    modalities = check_shape(modalities, name, f"({n},)", why="one modality per row of the batch")
    if modalities.is_floating_point() or modalities.is_complex():
        raise TypeError(f"`{name}` must be an integer or bool tensor, got dtype {modalities.dtype}")
    if not torch.compiler.is_compiling() and modalities.numel() > 0:
        bad = (modalities != 0) & (modalities != 1)
        if bool(bad.any()):
            values = sorted({int(v) for v in modalities[bad].unique().tolist()})
            raise ValueError(f"`{name}` must hold only 0 (visible) and 1 (infrared), got values {values}")
    return modalities


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Check an integer hyperparameter that must be ``>= minimum``; returns it as a Python ``int``.

    Any :class:`numbers.Integral` (``int``, NumPy integers) is accepted; ``bool`` is rejected.

    Examples:
        >>> check_int(2.0, "parts")
        Traceback (most recent call last):
        ...
        TypeError: `parts` must be an int, got float 2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {_describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}")
    return value


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    r"""Check a real hyperparameter that must be finite and ``> 0`` (``>= 0`` with ``allow_zero``).

    NaN and :math:`\pm\infty` are refused: ``nan < 0`` is false, so a plain comparison let a NaN margin
    through, which silently made every hinge inactive.

    Examples:
        >>> check_positive(0.3, "margin")
        0.3
        >>> check_positive(float("nan"), "margin")
        Traceback (most recent call last):
        ...
        ValueError: `margin` must be a finite number, got nan
        >>> check_positive(0, "eps")
        Traceback (most recent call last):
        ...
        ValueError: `eps` must be > 0, got 0.0
    """
    value = _check_real(value, name)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}, got {value}")
    return value


def check_nonnegative(value: object, name: str) -> float:
    """Check a real hyperparameter that must be finite and ``>= 0`` (:func:`check_positive` with ``allow_zero``).

    Examples:
        >>> check_nonnegative(0, "margin")
        0.0
        >>> check_nonnegative(float("inf"), "margin")
        Traceback (most recent call last):
        ...
        ValueError: `margin` must be a finite number, got inf
    """
    return check_positive(value, name, allow_zero=True)


def check_probability(value: object, name: str) -> float:
    """Check a probability in [0, 1] (NaN is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {_describe(value)}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}")
    return float(value)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the allowed strings.

    Examples:
        >>> check_choice("max", "reduction", ("mean", "sum", "none"))
        Traceback (most recent call last):
        ...
        ValueError: `reduction` must be one of ['mean', 'sum', 'none'], got 'max'
    """
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return str(value)
