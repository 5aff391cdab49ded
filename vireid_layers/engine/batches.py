"""How the trainer handles batches it knows nothing about: the model call, the DDP gather, the device, the loader.

The defaults cover tensors, tuples, named tuples and mappings; a collaborator passes its own ``forward`` or
``gather`` to :class:`~vireid_layers.engine.Trainer` for anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .distributed import gather_nested

__all__ = ["default_device", "default_forward", "default_gather", "find_sampler", "progress_bar", "to_device"]


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on a batch: ``model(batch)`` (a tensor), ``model(**batch)`` (a mapping), else ``model(*batch)``.

    A batch of another structure (e.g. named fields of which the model takes only some) needs a ``forward``
    of its own, ``Trainer(..., forward=lambda model, batch: model(batch.inputs))``.

    Examples:
        >>> default_forward(lambda x, y: x + y, (torch.ones(1), torch.ones(1)))
        tensor([2.])
    """
    if isinstance(batch, Tensor):
        return model(batch)
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


def default_gather(output: Any, batch: Any) -> tuple[Any, Any]:
    """Merge ``output`` and ``batch`` of every DDP rank: ``output.gather()`` when defined, else tensor by tensor.

    Every tensor of ``batch`` (and of an output without ``gather``) is concatenated along dim 0 in rank order with
    an autograd-aware all-gather (:func:`~vireid_layers.engine.gather_nested`).
    """
    gather = getattr(output, "gather", None)
    if callable(gather) and not isinstance(output, Tensor):  # Tensor.gather is an indexing op, not a collective
        return gather(), gather_nested(batch)
    return gather_nested(output), gather_nested(batch)


def to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    """Every tensor of a (nested) batch on ``device``; 4-D floating-point ones channels-last when asked."""
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, channels_last) for v in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def find_sampler(loader: Any) -> Any:
    """The batch sampler or sampler of ``loader`` that has ``set_epoch`` (the trainer drives it), or ``None``."""
    for attr in ("batch_sampler", "sampler"):
        sampler = getattr(loader, attr, None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            return sampler
    return None


def progress_bar(loader: Any, epoch: int) -> Any:
    """A tqdm bar over ``loader`` when tqdm is installed and stderr is a terminal, else ``None``."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(loader, desc=f"epoch {epoch}", leave=False)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
