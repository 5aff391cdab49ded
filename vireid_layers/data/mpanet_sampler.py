"""The batch layout of MPANet's official sampler :cite:`wu2021mpanet`: identity blocks, modalities alternating."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .records import ImageRecord
from .sampler import CrossModalityIdentitySampler, EpochLength

__all__ = ["MPANetIdentitySampler"]


class MPANetIdentitySampler(CrossModalityIdentitySampler):
    r""":class:`CrossModalityIdentitySampler` with the batch layout of MPANet's official sampler.

    The official ``RandomIdentitySampler`` of :cite:`wu2021mpanet` (``sampler: identity_random``, batch
    ``p_size * k_size`` = 16 × 8 for SYSU-MM01, 12 × 10 for RegDB) lays every identity out as **one contiguous
    block** of :math:`2K` rows in which infrared and visible images **alternate**, infrared first:

    .. code-block:: text

       [i(id_1), v(id_1), i(id_1), v(id_1), ... (2K rows),  i(id_2), v(id_2), ...,  ...,  i(id_P), v(id_P), ...]

    with :math:`K` = ``k_size / 2`` images per modality (4 for SYSU-MM01, 5 for RegDB). The official center
    cluster loss reads its anchors at the block starts :math:`0, 2K, 4K, \dots`; the library's
    :class:`~vireid_layers.CenterClusterLoss` computes the same value from the labels, in any order, so this
    layout is needed only to feed a batch to code that relies on the order (the official loss, a converted
    training loop).

    Which images are drawn is the parent class's: :math:`P` identities with both modalities per batch, drawn
    without replacement among the identities, and :math:`K` images per modality of each (``replacement``), with
    its seeding, DDP split and resume; only the order inside a batch differs. The official sampler instead
    walks through an epoch without replacement (the larger modality of each identity subsampled to the smaller
    one, leftovers dropped); ``epoch_length="all_images"`` (the default here) gives an epoch of about as many
    images as the training list, close to the official epoch.

    Args:
        records: the training records, both modalities in one list.
        num_identities: :math:`P` (official 16 for SYSU-MM01, 12 for RegDB).
        num_instances: :math:`K`, images per identity **and per modality** (official 4 for SYSU-MM01, 5 for
            RegDB: half of ``k_size``).
        replacement: as :class:`CrossModalityIdentitySampler`.
        epoch_length: as :class:`CrossModalityIdentitySampler`; default ``"all_images"`` here
            (:meth:`~CrossModalityIdentitySampler.from_labels` keeps its own default, ``"official"``).
        seed: as :class:`CrossModalityIdentitySampler`.
        num_replicas: as :class:`CrossModalityIdentitySampler`.
        rank: as :class:`CrossModalityIdentitySampler`.
        drop_last: as :class:`CrossModalityIdentitySampler`.

    Examples:
        >>> from pathlib import Path
        >>> from vireid_layers import Modality
        >>> from vireid_layers.data import ImageRecord, MPANetIdentitySampler
        >>> records = [
        ...     ImageRecord(Path(f"{pid}_{m}_{j}.jpg"), pid, 1 + 2 * m, Modality(m))
        ...     for pid in range(5) for m in (0, 1) for j in range(3)
        ... ]
        >>> sampler = MPANetIdentitySampler(records, 2, 2, seed=0)
        >>> batch = next(iter(sampler))
        >>> [records[i].modality.name[0] for i in batch]
        ['I', 'V', 'I', 'V', 'I', 'V', 'I', 'V']
        >>> ids = [records[i].identity for i in batch]
        >>> len(set(ids[:4])) == len(set(ids[4:])) == 1 and ids[0] != ids[4]
        True
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        num_identities: int,
        num_instances: int,
        *,
        replacement: bool = True,
        epoch_length: EpochLength = "all_images",
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            records,
            num_identities,
            num_instances,
            replacement=replacement,
            epoch_length=epoch_length,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )

    def _draw_batch(self, generator: torch.Generator) -> Tensor:
        """The parent's batch ``[visible (P, K) | infrared (P, K)]`` laid out as ``(P, K, [infrared, visible])``."""
        batch = super()._draw_batch(generator)
        p, k = self.num_identities, self.num_instances
        return batch.view(2, p, k).flip(0).permute(1, 2, 0).reshape(-1)
