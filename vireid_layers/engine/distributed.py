"""Distributed data parallel helpers: process-group set-up from ``torchrun``'s environment and gathers.

A loss that mines the whole batch (every pair of rows, per-class centres) must see every rank's rows. The
trainer therefore gathers the model outputs (through the output's own ``gather()`` when it defines one, else
:func:`gather_nested`) with :func:`torch.distributed.nn.functional.all_gather`, which is differentiable: each
rank computes the same loss on the global batch and receives the gradient of its own rows. Since every rank
back-propagates the same loss, each rank's gradient is ``world_size`` times its share; DDP's gradient averaging
divides by ``world_size`` again, so the result equals the single-process gradient of the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .._distributed import all_gather_cat, distributed_info

__all__ = ["all_gather_cat", "distributed_info", "gather_nested", "init_distributed", "is_main_process"]


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only process)."""
    return distributed_info()[0] == 0


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Initialise the default process group from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ...).

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised. With CUDA the process uses GPU
    ``LOCAL_RANK`` and NCCL, otherwise gloo.

    Returns:
        ``(rank, world_size, device)``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def gather_nested(value: Any, dim: int = 0) -> Any:
    """:func:`all_gather_cat` applied to every tensor of a nested tuple / list / mapping / named tuple.

    Non-tensor leaves are returned unchanged. Named tuples are rebuilt with their own type.
    """
    if isinstance(value, Tensor):
        return all_gather_cat(value, dim) if value.dim() > 0 else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(gather_nested(v, dim) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(gather_nested(v, dim) for v in value)
    if isinstance(value, Mapping):
        return {k: gather_nested(v, dim) for k, v in value.items()}
    return value
