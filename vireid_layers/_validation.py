"""Input validation shared by every layer and loss.

Each check raises :class:`TypeError` or :class:`ValueError` with a message that names the argument, says
what was expected and what was received. The checks only read shapes, dtypes and (for modalities) values,
so they are cheap; the value check on modalities is skipped while tracing with ``torch.compile``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_embeddings",
    "check_int",
    "check_labels",
    "check_modalities",
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
    """Raise :class:`TypeError` unless ``x`` is a tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {_describe(x)}")
    return x


def check_shape(x: object, name: str, expected: str, ndim: int) -> Tensor:
    """Raise unless ``x`` is a tensor of rank ``ndim``; ``expected`` is the shape spelled for the message."""
    x = check_tensor(x, name)
    if x.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {expected}, got shape {tuple(x.shape)}")
    return x


def check_embeddings(x: object, name: str = "embeddings", ndim: int = 2) -> Tensor:
    """Check a floating-point embedding tensor of rank ``ndim`` (``(N, D)`` or ``(K, N, D)``)."""
    expected = {2: "(N, D)", 3: "(K, N, D)"}.get(ndim, f"of rank {ndim}")
    x = check_shape(x, name, expected, ndim)
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_labels(labels: object, n: int, name: str = "labels") -> Tensor:
    """Check an integer label vector of length ``n``."""
    labels = check_shape(labels, name, f"({n},)", 1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},) to match the embeddings, got {tuple(labels.shape)}")
    return labels


def check_modalities(modalities: object, n: int, name: str = "modalities") -> Tensor:
    """Check a modality vector of length ``n`` holding only 0 (visible) and 1 (infrared)."""
    modalities = check_shape(modalities, name, f"({n},)", 1)
    if modalities.is_floating_point() or modalities.is_complex():
        raise TypeError(f"`{name}` must be an integer or bool tensor, got dtype {modalities.dtype}")
    if modalities.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},) to match the embeddings, got {tuple(modalities.shape)}")
    if not torch.compiler.is_compiling() and modalities.numel() > 0:
        bad = (modalities != 0) & (modalities != 1)
        if bool(bad.any()):
            values = sorted({int(v) for v in modalities[bad].unique().tolist()})
            raise ValueError(f"`{name}` must hold only 0 (visible) and 1 (infrared), got values {values}")
    return modalities


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Check an integer hyperparameter that must be ``>= minimum``; returns it as a Python ``int``.

    Any :class:`numbers.Integral` (``int``, NumPy integers) is accepted; ``bool`` is rejected.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Check a real hyperparameter that must be > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number, got {_describe(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}, got {value}")
    return float(value)


def check_probability(value: float, name: str) -> float:
    """Check a probability in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number, got {_describe(value)}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}")
    return float(value)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the allowed strings."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return str(value)
