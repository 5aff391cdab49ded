"""The one collective every layer of the package may need: a differentiable all-gather (private helper).

It lives at the bottom of the package, next to ``_validation``, so that model outputs
(:meth:`vireid_layers.models.DEENOutput.gather`) and the training engine (:mod:`vireid_layers.engine.distributed`,
which re-exports it) share it without ``models`` importing ``engine``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_cat", "distributed_info"]


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_cat(tensor: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``tensor`` of every rank along ``dim``, differentiably when it requires grad.

    Every rank must pass the same shape. Without a process group, ``tensor`` is returned.

    Examples:
        >>> all_gather_cat(torch.ones(2, 3)).shape  # a single process: the tensor itself
        torch.Size([2, 3])
    """
    _, world = distributed_info()
    if world == 1:
        return tensor
    if tensor.requires_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(tensor.contiguous())
    else:
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
    return torch.cat(list(parts), dim=dim)
