"""The record types every dataset of the library produces: one image, one identity, one camera, one modality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..modality import Modality

__all__ = ["ImageRecord", "VIReIDDataset", "relabel"]


@dataclass(frozen=True, order=True)
class ImageRecord:
    """One image of a re-identification dataset.

    Records order by (path, identity, camera, modality), so sorting a list of records is deterministic.

    Attributes:
        path: absolute path of the image file.
        identity: person identity. Test records keep the dataset's own id; training records of a
            :class:`VIReIDDataset` are relabelled to ``0..C-1`` (see :func:`relabel`).
        camera: camera number as the dataset names it (SYSU-MM01 ``cam3`` is 3).
        modality: :attr:`Modality.VISIBLE` or :attr:`Modality.INFRARED`.

    Examples:
        >>> r = ImageRecord(Path("/data/SYSU-MM01/cam3/0001/0001.jpg"), 1, 3, Modality.INFRARED)
        >>> r.modality.name, r.camera
        ('INFRARED', 3)
    """

    path: Path
    identity: int
    camera: int
    modality: Modality


def relabel(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], dict[int, int]]:
    """Map identities to contiguous labels ``0..C-1`` in increasing order of the original id.

    Returns:
        The relabelled records (same order) and the ``original id -> label`` mapping.

    Examples:
        >>> rs = [ImageRecord(Path(p), i, 1, Modality.VISIBLE) for p, i in [("a", 42), ("b", 7), ("c", 42)]]
        >>> new, mapping = relabel(rs)
        >>> [r.identity for r in new], mapping
        ([1, 0, 1], {7: 0, 42: 1})
    """
    records = list(records)
    mapping = {pid: label for label, pid in enumerate(sorted({r.identity for r in records}))}
    return [replace(r, identity=mapping[r.identity]) for r in records], mapping


@dataclass(frozen=True)
class VIReIDDataset:
    """A visible-infrared dataset read from disk: sorted training and test records.

    Evaluation protocols (:mod:`vireid_layers.evaluation.protocols`) choose queries and galleries from
    ``test``; the training sampler draws from ``train``.

    Attributes:
        name: dataset name (``"sysu"``, ``"regdb"``, ``"llcm"``, ``"synthetic"``).
        root: dataset root directory.
        train: training records, identities relabelled to ``0..C-1``.
        test: every test record, with the dataset's own identity ids.
        train_identities: original id of every training label (``train_identities[label]``).
    """

    name: str
    root: Path
    train: tuple[ImageRecord, ...]
    test: tuple[ImageRecord, ...]
    train_identities: tuple[int, ...] = field(default=())

    @property
    def num_train_identities(self) -> int:
        """Number of training identities :math:`C`."""
        return len({r.identity for r in self.train})

    def hold_out(self, identities: Iterable[int]) -> tuple[VIReIDDataset, VIReIDDataset]:
        """Split a validation set off the training identities, for model selection without the test set.

        Args:
            identities: *original* ids (values of :attr:`train_identities`) of the training identities to hold
                out, e.g. SYSU-MM01's ``exp/val_id.txt``
                (:func:`~vireid_layers.data.datasets.sysu.read_id_file`) or a seeded sample of
                :attr:`train_identities`.

        Returns:
            ``(train, val)``. ``train`` is this dataset without the held-out identities, its training records
            relabelled ``0..C'-1`` in increasing order of the original id and :attr:`train_identities` updated,
            its ``test`` unchanged. ``val`` (named ``"<name>-val"``) has no training records and the held-out
            records as its ``test`` split with their original ids, so that the dataset's evaluation protocol
            (which draws queries and galleries from ``test``) runs on it unchanged.

        Raises:
            ValueError: ``identities`` is empty, names an id that is not a training identity, or would leave no
                training identity.

        Examples:
            >>> rs = [ImageRecord(Path(f"{i}{c}.jpg"), i, c, Modality(c % 2)) for i in range(3) for c in (1, 2)]
            >>> ds = VIReIDDataset("toy", Path("."), tuple(rs), (), train_identities=(10, 20, 30))
            >>> train, val = ds.hold_out([20])
            >>> train.train_identities, [r.identity for r in train.train], [r.identity for r in val.test]
            ((10, 30), [0, 0, 1, 1], [20, 20])
        """
        held = set(identities)
        if not held:
            raise ValueError("`identities` must name at least one training identity, got none")
        known = set(self.train_identities)
        unknown = sorted(held - known)
        if unknown:
            raise ValueError(f"`identities` must be training identities of {self.name!r}, got unknown ids {unknown}")
        if held == known:
            raise ValueError("`identities` would hold out every training identity; keep at least one for training")
        original = self.train_identities
        kept = [r for r in self.train if original[r.identity] not in held]
        val = tuple(replace(r, identity=original[r.identity]) for r in self.train if original[r.identity] in held)
        relabelled, mapping = relabel(replace(r, identity=original[r.identity]) for r in kept)
        train = replace(self, train=tuple(relabelled), train_identities=tuple(sorted(mapping)))
        return train, VIReIDDataset(f"{self.name}-val", self.root, (), val, ())

    def select(
        self, records: Sequence[ImageRecord], *, modality: Modality | None = None, cameras: Iterable[int] | None = None
    ) -> list[ImageRecord]:
        """Records of ``records`` with the given modality and/or cameras, in their order."""
        cams = None if cameras is None else set(cameras)
        return [
            r for r in records if (modality is None or r.modality == modality) and (cams is None or r.camera in cams)
        ]
