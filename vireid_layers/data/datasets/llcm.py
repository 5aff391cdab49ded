"""LLCM :cite:`zhang2023deen` (Low-Light Cross-Modality) read from its published folder layout.

The layout, as the DEEN code base reads it::

    LLCM/
      idx/train_vis.txt             one "relative/path label" line per visible training image (labels 0..712)
      idx/train_nir.txt             one "relative/path label" line per near-infrared training image
      idx/test_id.txt               comma-separated test identity ids (351 identities)
      train_vis/cam{N}/{pid:04d}/...   training images, as listed in the index files
      train_nir/cam{N}/{pid:04d}/...
      test_vis/cam1/ ... cam9/{pid:04d}/...        visible test images
      test_nir/cam1/ cam2/ cam4/ ... cam9/{pid:04d}/...   near-infrared test images (no cam3)

Visible and near-infrared images share physical camera numbers. The published statistics are 713 training
identities with 16,946 visible + 13,975 near-infrared images (30,921) and 351 test identities; the paper's
test modality counts (8,680 + 7,166) do not add up to its test total (13,909), so they are not asserted
anywhere (see :mod:`vireid_layers.data.verify`).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ...modality import Modality
from ..records import ImageRecord, VIReIDDataset, relabel
from .folder import as_path, list_identity_folders, list_images, require_path
from .regdb import read_index_file
from .sysu import read_id_file

__all__ = [
    "LLCM_LAYOUT",
    "LLCM_NIR_CAMERAS",
    "LLCM_VIS_CAMERAS",
    "camera_from_path",
    "read_llcm",
]

#: Visible test cameras (``test_vis/cam1`` ... ``cam9``).
LLCM_VIS_CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
#: Near-infrared test cameras: the official camera list has no cam3.
LLCM_NIR_CAMERAS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 8, 9)

#: The expected layout, shown in every "not found" error.
LLCM_LAYOUT = """\
LLCM/
  idx/train_vis.txt              one "relative/path label" line per visible training image
  idx/train_nir.txt              one "relative/path label" line per near-infrared training image
  idx/test_id.txt                comma-separated test identity ids
  test_vis/cam1/ ... cam9/       visible test cameras, each with {pid:04d}/ identity folders of images
  test_nir/cam1/ cam2/ cam4/ ... cam9/   near-infrared test cameras (no cam3), same structure
LLCM is distributed by its authors (Zhang and Wang, CVPR 2023) after signing a licence agreement;
vireid-layers never downloads it."""

_CAMERA_DIR = re.compile(r"cam(\d+)", re.ASCII)


def camera_from_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> int | None:
    """Camera number from the first ``camN`` folder of ``path`` below ``root``.

    Only whole folder names count (``cam3`` does; ``camera_data`` and a file ``0001_cam3.jpg`` do not), and
    only the part of the path below ``root``, so a root such as ``/data/cam5/LLCM`` is never mistaken for a
    camera folder.

    Args:
        path: image (or folder) path.
        root: the dataset root; ``None`` searches every folder of ``path``.

    Returns:
        ``N`` of the first ``camN`` folder, or ``None`` when there is none.

    Examples:
        >>> camera_from_path("/data/cam5/LLCM/test_nir/cam4/0001/a.jpg", "/data/cam5/LLCM")
        4
        >>> camera_from_path("train_vis/0001/cam2.jpg") is None
        True
    """
    path = Path(path)
    if root is not None:
        with contextlib.suppress(ValueError):  # a path outside root: search all of it
            path = path.relative_to(root)
    for part in path.parts[:-1]:
        match = _CAMERA_DIR.fullmatch(part)
        if match is not None:
            return int(match.group(1))
    return None


def read_llcm(root: str | os.PathLike[str]) -> VIReIDDataset:
    """Read LLCM :cite:`zhang2023deen` from its published layout (file lists only; no image is decoded).

    * ``train``: the images of ``idx/train_vis.txt`` (visible) and ``idx/train_nir.txt`` (near-infrared).
      Labels are kept when they are ``0..C-1`` as in the official files, otherwise relabelled ``0..C-1`` in
      increasing order of the file's label; ``train_identities`` keeps the file's labels. The camera is the
      ``camN`` folder of the listed path (:func:`camera_from_path`), or ``0`` when the path has none.
    * ``test``: every image of the ``idx/test_id.txt`` identities under ``test_vis/cam{1..9}/{pid:04d}/`` and
      ``test_nir/cam{1,2,4..9}/{pid:04d}/`` (:data:`LLCM_VIS_CAMERAS`, :data:`LLCM_NIR_CAMERAS`; a
      ``test_nir/cam3`` folder, if present, is not read, as in the official code), with original ids and the
      camera of the ``camN`` folder. Identity folders not in the id file are ignored.

    Paths are parsed by their components below the root, never by searching the string for ``"cam"``, so a
    root such as ``/home/camille/LLCM`` works. Records are sorted by path.

    Args:
        root: the ``LLCM`` folder (see :data:`LLCM_LAYOUT`).

    Returns:
        The dataset, named ``"llcm"``.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: the root, an ``idx`` file or a test camera folder is missing; the message names
            the path and shows the expected layout.
        ValueError: an index line or the id file is malformed (file and line named).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for folder, cams in (("test_vis", LLCM_VIS_CAMERAS), ("test_nir", LLCM_NIR_CAMERAS)):
        ...         for cam in cams:
        ...             Path(tmp, folder, f"cam{cam}", "0005").mkdir(parents=True)
        ...     Path(tmp, "test_nir", "cam2", "0005", "a.jpg").touch()
        ...     Path(tmp, "idx").mkdir()
        ...     _ = Path(tmp, "idx", "test_id.txt").write_text("5")
        ...     _ = Path(tmp, "idx", "train_vis.txt").write_text("train_vis/cam7/0001/x.jpg 0")
        ...     _ = Path(tmp, "idx", "train_nir.txt").write_text("train_nir/cam1/0001/y.jpg 0")
        ...     ds = read_llcm(tmp)
        >>> [(r.camera, r.identity, r.modality.name) for r in ds.train + ds.test]
        [(1, 0, 'INFRARED'), (7, 0, 'VISIBLE'), (2, 5, 'INFRARED')]
    """
    root = require_path(as_path(root), dataset="LLCM", layout=LLCM_LAYOUT)
    idx = root / "idx"

    train: list[ImageRecord] = []
    for name, modality in (("train_vis", Modality.VISIBLE), ("train_nir", Modality.INFRARED)):
        index = require_path(idx / f"{name}.txt", dataset="LLCM", layout=LLCM_LAYOUT, kind="file")
        for path, label in read_index_file(index, root):
            camera = camera_from_path(path, root)
            train.append(ImageRecord(path, label, 0 if camera is None else camera, modality))

    test_ids = set(read_id_file(require_path(idx / "test_id.txt", dataset="LLCM", layout=LLCM_LAYOUT, kind="file")))
    test: list[ImageRecord] = []
    for folder, cameras, modality in (
        ("test_vis", LLCM_VIS_CAMERAS, Modality.VISIBLE),
        ("test_nir", LLCM_NIR_CAMERAS, Modality.INFRARED),
    ):
        for camera in cameras:
            camera_dir = require_path(root / folder / f"cam{camera}", dataset="LLCM", layout=LLCM_LAYOUT)
            for pid, id_dir in list_identity_folders(camera_dir):
                if pid in test_ids:
                    test.extend(ImageRecord(path, pid, camera, modality) for path in list_images(id_dir))

    relabelled, mapping = relabel(train)  # the identity map for the official 0..712 labels
    return VIReIDDataset(
        name="llcm",
        root=root,
        train=tuple(sorted(relabelled)),
        test=tuple(sorted(test)),
        train_identities=tuple(sorted(mapping)),
    )
