"""The training loader of the cross-modality recipes: identity-balanced batches from both modalities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import DataLoader

from .._validation import check_int
from .datasets import ImageDataset
from .records import ImageRecord
from .sampler import CrossModalityIdentitySampler, EpochLength

__all__ = ["build_train_loader"]


def build_train_loader(
    records: Sequence[ImageRecord],
    transform: Callable[[Any], Any] | None,
    *,
    num_identities: int,
    num_instances: int,
    epoch_length: EpochLength = "official",
    seed: int = 0,
    num_workers: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    r"""A ``DataLoader`` of :math:`P` identities × :math:`K` visible + :math:`K` infrared images per batch.

    The loader of DEEN, AGW and DDAG: a :class:`~vireid_layers.data.CrossModalityIdentitySampler` as its
    ``batch_sampler`` over :class:`~vireid_layers.data.ImageDataset` ``(records, transform)``, so each batch
    is an :class:`~vireid_layers.data.ImageSample` of :math:`2PK` images (per DDP rank: its share of the global
    batch). :class:`~vireid_layers.engine.Trainer` finds the sampler on ``loader.batch_sampler``, sets its epoch
    and saves its position in checkpoints. Worker processes are kept alive between epochs.

    Args:
        records: training records of both modalities (``dataset.train``).
        transform: applied to each PIL image (:func:`~vireid_layers.data.build_train_transform`), or ``None``.
        num_identities: :math:`P` (official: 8 for AGW and DDAG, 6 for DEEN).
        num_instances: :math:`K` per identity and modality (official: 4).
        epoch_length: ``"official"``, ``"all_images"`` or a number of batches, see the sampler.
        seed: the sampler's seed (shared by all ranks).
        num_workers: loader worker processes.
        num_replicas: DDP world size; default: the initialised process group's.
        rank: this process's rank; default: the initialised process group's.
        pin_memory: pin batches in page-locked memory (for CUDA).

    Returns:
        The loader; ``len(loader)`` is the number of batches per epoch.

    Examples:
        >>> from pathlib import Path
        >>> from vireid_layers import Modality
        >>> records = [ImageRecord(Path(f"{i}-{m}.jpg"), i % 3, 1 + m, m) for i in range(12) for m in Modality]
        >>> loader = build_train_loader(records, None, num_identities=2, num_instances=2, epoch_length=5)
        >>> len(loader), type(loader.batch_sampler).__name__
        (5, 'CrossModalityIdentitySampler')
    """
    check_int(num_workers, "num_workers", minimum=0)
    sampler = CrossModalityIdentitySampler(
        records,
        num_identities,
        num_instances,
        epoch_length=epoch_length,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
    )
    return DataLoader(
        ImageDataset(records, transform),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
