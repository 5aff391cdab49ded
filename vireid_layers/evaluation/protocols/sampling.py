"""How protocols pick records: sorted candidates, the seeded gallery draw and the official permutation draw."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...data.records import ImageRecord, VIReIDDataset
from ...modality import Modality
from .sysu_permutation import SYSUPermutation

__all__ = ["candidates", "permutation_sample", "seeded_sample"]


def _sort_key(record: ImageRecord) -> tuple[int, int, str]:
    return (record.identity, record.camera, str(record.path))


def candidates(dataset: VIReIDDataset, modality: Modality, cameras: Iterable[int] | None) -> list[ImageRecord]:
    """Test records of one modality (and cameras), sorted by (identity, camera, path).

    Raises:
        TypeError: ``dataset`` is not a :class:`~vireid_layers.data.VIReIDDataset`.
    """
    if not isinstance(dataset, VIReIDDataset):
        raise TypeError(f"`dataset` must be a VIReIDDataset, got {type(dataset).__name__}")
    return sorted(dataset.select(dataset.test, modality=modality, cameras=cameras), key=_sort_key)


def _groups(records: Sequence[ImageRecord]) -> dict[tuple[int, int], list[int]]:
    """Indices of ``records`` per (identity, camera); within a group in the order of ``records``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault((record.identity, record.camera), []).append(index)
    return groups


def seeded_sample(records: Sequence[ImageRecord], cameras: Sequence[int], seed: int, shots: int) -> list[int]:
    """The official DEEN/AGW gallery draw, with a local ``random.Random(seed)``.

    ``records`` must be sorted by (identity, camera, path). For each identity (ascending) and each camera of
    ``cameras`` (in that order) that has images, one index is drawn with ``rng.choice`` over the group
    (``shots == 1``), or ``min(shots, n)`` with ``rng.sample`` (returned in path order). The global ``random``
    state is never touched.
    """
    groups = _groups(records)
    rng = random.Random(seed)
    chosen: list[int] = []
    for identity in sorted({r.identity for r in records}):
        for camera in cameras:
            members = groups.get((identity, camera))
            if not members:
                continue
            if shots == 1:
                chosen.append(rng.choice(members))
            else:
                chosen.extend(sorted(rng.sample(members, min(shots, len(members)))))
    return chosen


def _instance_number(record: ImageRecord) -> int | None:
    stem = Path(record.path).stem
    return int(stem) if stem.isdigit() else None


def permutation_sample(
    records: Sequence[ImageRecord], cameras: Sequence[int], permutation: SYSUPermutation, trial: int, shots: int
) -> list[int]:
    """MPANet's reading of ``rand_perm_cam.mat``: the first ``shots`` instances of ``perm[cam][id - 1][trial]``.

    Raises:
        ValueError: ``trial`` is beyond the permutation's trials, or it names a file that is not a record.
    """
    groups = _groups(records)
    chosen: list[int] = []
    for identity in sorted({r.identity for r in records}):
        for camera in cameras:
            members = groups.get((identity, camera))
            per_id = permutation.get(camera, ())
            if not members or not 1 <= identity <= len(per_id) or len(per_id[identity - 1]) == 0:
                continue  # the official MATLAB code skips empty permutations the same way
            rows = per_id[identity - 1]
            if trial >= len(rows):
                raise ValueError(
                    f"`trial` {trial} is out of range: the permutation has {len(rows)} trials for camera {camera}, "
                    f"identity {identity}"
                )
            by_instance = {_instance_number(records[i]): i for i in members}
            picked = []
            for instance in list(rows[trial])[:shots]:
                index = by_instance.get(int(instance))
                if index is None:
                    raise ValueError(
                        f"the SYSU-MM01 permutation selects cam{camera}/{identity:04d}/{int(instance):04d}, which is "
                        "not among the dataset's test records: the permutation file does not match the dataset"
                    )
                picked.append(index)
            chosen.extend(sorted(picked))
    return chosen
