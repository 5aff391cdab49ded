"""The identity-balanced cross-modality batch sampler of DDAG, AGW, CAJ and DEEN, seeded and DDP-aware.

Every batch holds :math:`P` distinct identities and, for each of them, :math:`K` visible and :math:`K`
infrared images: :math:`2PK` dataset indices. :class:`CrossModalityIdentitySampler` is a *batch* sampler
(it yields lists of indices), used as ``DataLoader(dataset, batch_sampler=sampler)`` over one dataset that
holds both modalities (for example an :class:`~vireid_layers.data.datasets.folder.ImageDataset` built from
``VIReIDDataset.train``).

It differs from the official ``IdentitySampler`` (``utils.py`` of DDAG/AGW/CAJ/DEEN) only where that one
misbehaves; the draws themselves follow it:

* ``len(sampler)`` is the number of batches an iteration yields (the official ``__len__`` returns the number
  of images :math:`N`, so ``len(loader)`` was off by one batch);
* the randomness comes from a :class:`torch.Generator` seeded from ``(seed, epoch)``, not NumPy's global RNG;
* identities may be any integers (the official code indexes lists by label value, so labels had to be
  ``0..C-1``), and identities with images in only one modality are never drawn;
* under DDP each rank receives different batches of one global sequence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .._validation import check_int
from ..modality import Modality
from .records import ImageRecord

__all__ = ["CrossModalityIdentitySampler", "EpochLength"]

#: ``"official"``, ``"all_images"`` or a positive number of (global) batches per epoch.
EpochLength = Literal["official", "all_images"] | int

_EPOCH_LENGTHS = ("official", "all_images")
_STATE_KEYS = ("seed", "epoch", "num_yielded", "num_replicas", "num_global_batches")


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the generator of one epoch: a hash of ``seed`` plus ``epoch`` times an odd constant.

    PyTorch's CPU generator (MT19937) keeps the low 32 bits of a seed, so the arithmetic is modulo
    :math:`2^{32}`; multiplying by an odd number is a bijection there, hence the epochs of one run always get
    different streams. Hashing ``seed`` (rather than ``seed + epoch``, as ``DistributedSampler`` does) keeps
    the run with seed 1 from replaying, shifted by one epoch, the run with seed 0.
    """
    base = int.from_bytes(hashlib.blake2b(str(seed).encode(), digest_size=8).digest(), "little")
    return (base + epoch * 0x9E3779B9) % 2**32


def _default_replicas() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class CrossModalityIdentitySampler(Sampler[list[int]]):
    r"""Batches of :math:`P` identities with :math:`K` visible and :math:`K` infrared images each.

    The official ``IdentitySampler`` of DDAG :cite:`ye2020ddag`, AGW :cite:`ye2021agw` and DEEN
    :cite:`zhang2023deen` as a seeded, DDP-aware batch sampler. For every batch it

    1. draws :math:`P` identities uniformly **without** replacement among the identities that have at least
       one visible and one infrared image (identities seen in one modality only are never drawn);
    2. draws, for each of them, :math:`K` indices among its visible images and :math:`K` among its infrared
       images: uniformly **with** replacement (``replacement=True``, the official draw, so an index may repeat
       within a batch) or, with ``replacement=False``, :math:`K` distinct images when the identity has at least
       :math:`K` in that modality (otherwise all of them, in random order, then draws with replacement to make
       up :math:`K`).

    Identities are drawn independently for every batch, as in the official code: an epoch does not promise to
    show every identity or every image.

    **Order inside a batch.** A batch is the list

    .. code-block:: text

       [v(id_1) x K, v(id_2) x K, ..., v(id_P) x K,  i(id_1) x K, i(id_2) x K, ..., i(id_P) x K]

    the visible block then the infrared block, each identity-major with the identities in the same order: the
    layout of the official ``torch.cat((visible, infrared))``. Nothing in vireid-layers depends on this order
    (every loss receives identities and modalities as tensors), so it is documented, not promised.

    **Epoch length** (``epoch_length``), in global batches :math:`G` (over all ranks):

    * ``"official"``: :math:`G = \lfloor N / (PK) \rfloor + 1` with :math:`N = \max(N_{vis}, N_{ir})` the
      larger modality's number of records (the official number of sampling rounds: 696 for SYSU-MM01 with
      :math:`P = 8`, :math:`K = 4`);
    * ``"all_images"``: :math:`G = \lceil (N_{vis} + N_{ir}) / (2PK) \rceil`, as many images drawn as the list
      holds, the length of an ordinary shuffled epoch at batch size :math:`2PK`;
    * an ``int``: exactly that many batches.

    **Distributed training.** All ranks build the same global sequence of batches from the shared ``seed``
    (so every rank must receive the same ``seed`` and ``epoch``) and rank :math:`r` of :math:`W` takes the
    batches :math:`r, r + W, r + 2W, \dots`: different batches on every rank, and their union is the global
    sequence. So that every rank runs the same number of steps, the global sequence is **extended** with
    further random batches to :math:`W \lceil G / W \rceil` (default), or, with ``drop_last=True``,
    **truncated** to :math:`W \lfloor G / W \rfloor` batches. ``len(sampler)`` is the per-rank count,
    :math:`\lceil G / W \rceil` or :math:`\lfloor G / W \rfloor`. The global sequence does not depend on
    :math:`W` apart from that extension or truncation: batch :math:`b` of an epoch is the same whatever the
    number of ranks.

    **Randomness.** Each epoch's batches come from a :class:`torch.Generator` seeded from ``(seed, epoch)``;
    call :meth:`set_epoch` before each epoch, as with
    :class:`~torch.utils.data.distributed.DistributedSampler`, or every epoch repeats the same batches. The
    global RNG is neither read nor advanced.

    **Resuming.** :meth:`state_dict` records the epoch and the number of batches this rank has handed out in
    it; after :meth:`load_state_dict`, the next iteration continues from that position with exactly the
    batches the interrupted run would have produced (an iteration started after a resume yields
    ``len(sampler) - num_yielded`` batches; ``len`` stays the full epoch). A ``DataLoader`` with workers
    pulls batches from the sampler ahead of the training loop (up to ``num_workers * prefetch_factor``), so a
    checkpoint taken mid-epoch should store the number of batches the loop has *consumed* as
    ``num_yielded`` rather than the sampler's own count.

    Args:
        records: the training records, both modalities in one list; the sampler yields indices into it.
        num_identities: :math:`P`, identities per batch (official: 8 for DDAG/AGW/CAJ, 6 for DEEN).
        num_instances: :math:`K`, images per identity **and per modality** (official: 4).
        replacement: draw the :math:`K` images of an identity with replacement (official) or, when it has
            enough, without.
        epoch_length: ``"official"``, ``"all_images"`` or a positive ``int`` number of global batches.
        seed: seed shared by all ranks.
        num_replicas: number of DDP ranks :math:`W`; default: the world size of the initialised
            ``torch.distributed`` process group, else 1.
        rank: this process's rank; default: ``torch.distributed.get_rank()`` when initialised, else 0.
        drop_last: truncate the global sequence to a multiple of :math:`W` instead of extending it.

    Raises:
        TypeError: an element of ``records`` is not an :class:`~vireid_layers.data.ImageRecord`, or an
            argument has the wrong type.
        ValueError: ``records`` is empty, fewer than ``num_identities`` identities have both modalities,
            ``epoch_length`` is not one of the allowed values, ``rank`` is not in ``[0, num_replicas)``, or
            ``drop_last`` leaves no batch for a rank.

    Examples:
        >>> from pathlib import Path
        >>> from vireid_layers.data import ImageRecord
        >>> from vireid_layers import Modality
        >>> records = [
        ...     ImageRecord(Path(f"{pid}_{m}_{j}.jpg"), pid, 1 + 2 * m, Modality(m))
        ...     for pid in range(5) for m in (0, 1) for j in range(3)
        ... ]
        >>> sampler = CrossModalityIdentitySampler(records, 2, 4, seed=0)
        >>> len(sampler), sampler.batch_size      # floor(15 / 8) + 1 batches of 2 * 2 * 4 indices
        (2, 16)
        >>> batch = next(iter(sampler))
        >>> [records[i].modality.name[0] for i in batch]
        ['V', 'V', 'V', 'V', 'V', 'V', 'V', 'V', 'I', 'I', 'I', 'I', 'I', 'I', 'I', 'I']
        >>> ids = [records[i].identity for i in batch]
        >>> ids[:8] == ids[8:] and len(set(ids)) == 2
        True
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        num_identities: int,
        num_instances: int,
        *,
        replacement: bool = True,
        epoch_length: EpochLength = "official",
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        records = list(records)
        for i, record in enumerate(records):
            if not isinstance(record, ImageRecord):
                raise TypeError(f"`records[{i}]` must be an ImageRecord, got {type(record).__name__} {record!r}")
        identities = torch.tensor([int(r.identity) for r in records], dtype=torch.long)
        modalities = torch.tensor([int(r.modality) for r in records], dtype=torch.long)
        self._setup(
            identities,
            modalities,
            num_identities,
            num_instances,
            replacement=replacement,
            epoch_length=epoch_length,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )

    @classmethod
    def from_labels(
        cls,
        identities: Tensor | Sequence[int],
        modalities: Tensor | Sequence[int],
        num_identities: int,
        num_instances: int,
        *,
        replacement: bool = True,
        epoch_length: EpochLength = "official",
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> CrossModalityIdentitySampler:
        """Build the sampler from an identity and a modality per dataset index instead of records.

        Args:
            identities: :math:`(N,)` integer identity of each dataset index (any integers).
            modalities: :math:`(N,)` modality of each index, 0 (visible) or 1 (infrared).
            num_identities: :math:`P`, as for the constructor.
            num_instances: :math:`K`, as for the constructor.
            replacement: as for the constructor.
            epoch_length: as for the constructor.
            seed: as for the constructor.
            num_replicas: as for the constructor.
            rank: as for the constructor.
            drop_last: as for the constructor.

        Returns:
            The sampler; it yields indices into ``range(N)``.

        Raises:
            TypeError: ``identities`` or ``modalities`` is not an integer vector.
            ValueError: their lengths differ, ``modalities`` holds a value other than 0 and 1, or as for the
                constructor.

        Examples:
            >>> s = CrossModalityIdentitySampler.from_labels([7, 7, 9, 9], [0, 1, 0, 1], 2, 1, epoch_length=3)
            >>> len(s), sorted(next(iter(s)))
            (3, [0, 1, 2, 3])
        """
        identities = torch.as_tensor(identities)
        modalities = torch.as_tensor(modalities)
        for name, value in (("identities", identities), ("modalities", modalities)):
            if value.ndim != 1:
                raise ValueError(f"`{name}` must have shape (N,), got shape {tuple(value.shape)}")
            if value.is_floating_point() or value.is_complex():
                raise TypeError(f"`{name}` must hold integers, got dtype {value.dtype}")
        if identities.shape != modalities.shape:
            raise ValueError(
                f"`identities` and `modalities` must have the same length, got {identities.numel()} "
                f"and {modalities.numel()}"
            )
        bad = (modalities != Modality.VISIBLE) & (modalities != Modality.INFRARED)
        if bool(bad.any()):
            values = modalities[bad].unique().tolist()
            raise ValueError(f"`modalities` must hold only 0 (visible) and 1 (infrared), got values {values}")
        sampler = cls.__new__(cls)
        Sampler.__init__(sampler)
        sampler._setup(
            identities.long(),
            modalities.long(),
            num_identities,
            num_instances,
            replacement=replacement,
            epoch_length=epoch_length,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )
        return sampler

    def _setup(
        self,
        identities: Tensor,
        modalities: Tensor,
        num_identities: int,
        num_instances: int,
        *,
        replacement: bool = True,
        epoch_length: EpochLength = "official",
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.num_identities = check_int(num_identities, "num_identities", minimum=1)
        self.num_instances = check_int(num_instances, "num_instances", minimum=1)
        if not isinstance(replacement, bool):
            raise TypeError(f"`replacement` must be a bool, got {type(replacement).__name__} {replacement!r}")
        if not isinstance(drop_last, bool):
            raise TypeError(f"`drop_last` must be a bool, got {type(drop_last).__name__} {drop_last!r}")
        self.replacement = replacement
        self.drop_last = drop_last
        self.seed = check_int(seed, "seed", minimum=-(2**63))
        if isinstance(epoch_length, str):
            if epoch_length not in _EPOCH_LENGTHS:
                raise ValueError(
                    f"`epoch_length` must be one of {list(_EPOCH_LENGTHS)} or a positive int, got {epoch_length!r}"
                )
        else:
            check_int(epoch_length, "epoch_length", minimum=1)
        self.epoch_length = epoch_length

        default_replicas, default_rank = _default_replicas()
        self.num_replicas = check_int(
            default_replicas if num_replicas is None else num_replicas, "num_replicas", minimum=1
        )
        self.rank = check_int(default_rank if rank is None else rank, "rank", minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"`rank` must be in [0, num_replicas) = [0, {self.num_replicas}), got {self.rank}")

        n = identities.numel()
        if n == 0:
            raise ValueError("`records` is empty: the sampler needs images of both modalities")
        self.num_records = n
        self.num_visible = int((modalities == Modality.VISIBLE).sum())
        self.num_infrared = n - self.num_visible

        # Index tables: the records of identity c (c indexing `self.identities`) and modality m are
        # `_order[_offsets[2c + m] : _offsets[2c + m] + _counts[2c + m]]`, in dataset order.
        unique, inverse = torch.unique(identities, return_inverse=True)
        per_modality = torch.zeros(unique.numel(), 2, dtype=torch.long)
        per_modality.index_put_((inverse, modalities), torch.ones_like(inverse), accumulate=True)
        eligible = (per_modality > 0).all(dim=1)
        num_eligible = int(eligible.sum())
        if num_eligible < self.num_identities:
            raise ValueError(
                f"`num_identities` (P = {self.num_identities}) must not exceed the number of identities with "
                f"both visible and infrared images, {num_eligible} (of {unique.numel()} identities)"
            )
        #: The identities that batches are drawn from (those with both modalities), in increasing order.
        self.identities: tuple[int, ...] = tuple(unique[eligible].tolist())
        rank_of = torch.full((unique.numel(),), -1, dtype=torch.long)
        rank_of[eligible] = torch.arange(num_eligible)
        keep = rank_of[inverse] >= 0
        key = rank_of[inverse] * 2 + modalities
        positions = torch.arange(n)[keep]
        self._order = positions[torch.argsort(key[keep], stable=True)]
        self._counts = per_modality[eligible].reshape(-1)
        self._offsets = torch.cumsum(self._counts, 0) - self._counts

        if len(self) == 0:
            raise ValueError(
                f"`drop_last=True` leaves no batch per rank: {self.num_batches} global batches for "
                f"num_replicas = {self.num_replicas} ranks"
            )
        self.epoch = 0
        self._num_yielded = 0
        self._resume = False

    # ------------------------------------------------------------------------------------------------ sizes

    @property
    def batch_size(self) -> int:
        """Indices per batch, :math:`2PK` (:math:`PK` visible and :math:`PK` infrared)."""
        return 2 * self.num_identities * self.num_instances

    @property
    def num_batches(self) -> int:
        """Global batches :math:`G` per epoch chosen by ``epoch_length``, before the split over ranks."""
        pk = self.num_identities * self.num_instances
        if self.epoch_length == "official":
            return max(self.num_visible, self.num_infrared) // pk + 1
        if self.epoch_length == "all_images":
            return -(-self.num_records // (2 * pk))
        return int(self.epoch_length)

    @property
    def num_global_batches(self) -> int:
        """Batches generated per epoch over all ranks: :math:`G` extended or truncated to a multiple of :math:`W`."""
        return len(self) * self.num_replicas

    def __len__(self) -> int:
        r"""Batches per rank and epoch: :math:`\lceil G/W \rceil`, or :math:`\lfloor G/W \rfloor` with ``drop_last``."""
        g, w = self.num_batches, self.num_replicas
        return g // w if self.drop_last else -(-g // w)

    # ------------------------------------------------------------------------------------------- sampling

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (call it with the same value on every rank).

        Changing the epoch starts it from its first batch; setting the epoch already current (for example the
        one restored by :meth:`load_state_dict`) keeps the position.
        """
        epoch = check_int(epoch, "epoch", minimum=0)
        if epoch != self.epoch:
            self.epoch = epoch
            self._num_yielded = 0
            self._resume = False

    def global_batches(self, epoch: int | None = None) -> Tensor:
        r"""All batches of an epoch over all ranks, the sequence that the ranks share out.

        Args:
            epoch: the epoch; default: the current one.

        Returns:
            :math:`(W \cdot \mathrm{len}, 2PK)` ``int64`` tensor of dataset indices; rank :math:`r` yields rows
            :math:`r, r + W, \dots`.
        """
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", minimum=0)
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.stack([self._draw_batch(generator) for _ in range(self.num_global_batches)])

    def _draw_batch(self, generator: torch.Generator) -> Tensor:
        """One batch, ``[visible block | infrared block]``, each ``(P, K)`` identity-major."""
        p, k = self.num_identities, self.num_instances
        chosen = torch.randperm(len(self.identities), generator=generator)[:p]
        slots = torch.stack([chosen * 2, chosen * 2 + 1])  # (2, P): [visible; infrared] table slots
        counts = self._counts[slots].unsqueeze(-1)  # (2, P, 1)
        uniform = torch.rand(2, p, k, generator=generator, dtype=torch.float64)
        with_replacement = (uniform * counts).long().clamp_(max=counts - 1)  # floor(u n), uniform on 0..n-1
        if self.replacement:
            position = with_replacement
        else:
            # A random order of each identity's images: sort random keys, the padding (key 2) goes last. The
            # first min(n, K) columns are distinct; columns >= n (only when n < K) take the with-replacement draw.
            width = max(int(counts.max()), k)
            keys = torch.rand(2, p, width, generator=generator)
            column = torch.arange(width)
            keys = torch.where(column < counts, keys, 2.0)
            distinct = keys.argsort(dim=-1)[..., :k]
            position = torch.where(column[:k] < counts, distinct, with_replacement)
        indices = self._order[self._offsets[slots].unsqueeze(-1) + position]  # (2, P, K)
        return indices.reshape(-1)

    def __iter__(self) -> Iterator[list[int]]:
        start = self._num_yielded if self._resume else 0
        self._resume = False
        self._num_yielded = start
        mine = self.global_batches()[self.rank :: self.num_replicas][start:].tolist()
        return self._serve(mine, start)

    def _serve(self, batches: list[list[int]], start: int) -> Iterator[list[int]]:
        for i, batch in enumerate(batches, start=start + 1):
            self._num_yielded = i
            yield batch

    # --------------------------------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, int]:
        """The position in the epoch sequence: ``seed``, ``epoch``, ``num_yielded`` and the split it belongs to.

        ``num_yielded`` counts the batches this rank has handed out in the current epoch (the same on every
        rank). See the class notes on ``DataLoader`` prefetching.

        Examples:
            >>> s = CrossModalityIdentitySampler.from_labels([0, 0, 1, 1], [0, 1, 0, 1], 1, 1, epoch_length=4)
            >>> s.set_epoch(3)
            >>> it = iter(s)
            >>> first = next(it)
            >>> s.state_dict()
            {'seed': 0, 'epoch': 3, 'num_yielded': 1, 'num_replicas': 1, 'num_global_batches': 4}
        """
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "num_yielded": self._num_yielded,
            "num_replicas": self.num_replicas,
            "num_global_batches": self.num_global_batches,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`: the next iteration continues that epoch exactly.

        Args:
            state: a mapping with the keys of :meth:`state_dict`.

        Raises:
            ValueError: a key is missing, ``num_yielded`` is outside ``[0, len(self)]``, or ``seed``,
                ``num_replicas`` or ``num_global_batches`` differ from this sampler's (the saved position would
                then refer to other batches).
        """
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"`state` is missing the keys {missing}; expected the keys {list(_STATE_KEYS)}")
        for key in ("seed", "num_replicas", "num_global_batches"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"`state[{key!r}]` = {state[key]} does not match this sampler's {key} = {getattr(self, key)}: "
                    "the saved position refers to a different sequence of batches"
                )
        num_yielded = check_int(int(state["num_yielded"]), "state['num_yielded']", minimum=0)
        if num_yielded > len(self):
            raise ValueError(f"`state['num_yielded']` must be in [0, {len(self)}], got {num_yielded}")
        self.epoch = check_int(int(state["epoch"]), "state['epoch']", minimum=0)
        self._num_yielded = num_yielded
        self._resume = True

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_identities={self.num_identities}, num_instances={self.num_instances}, "
            f"replacement={self.replacement}, epoch_length={self.epoch_length!r}, seed={self.seed}, "
            f"num_replicas={self.num_replicas}, rank={self.rank}, drop_last={self.drop_last}, "
            f"identities={len(self.identities)}, batches_per_rank={len(self)})"
        )
