"""SYSU-MM01 :cite:`wu2017sysu` read from its published folder layout.

The layout, as distributed by the authors::

    SYSU-MM01/
      cam1/ cam2/ cam4/ cam5/     visible (RGB) cameras; cam1, cam2 indoor, cam4, cam5 outdoor
      cam3/ cam6/                 infrared cameras; cam3 indoor, cam6 outdoor
        0001/0001.jpg ...         one folder per identity ({pid:04d}), its images inside
      exp/train_id.txt            comma-separated identity ids; train and val ids are merged for training
      exp/val_id.txt              (395 identities), test ids form the test set (96 identities)
      exp/test_id.txt
      exp/rand_perm_cam.mat       optional: the official 10 gallery permutations, read by the evaluation
                                  protocol (:mod:`vireid_layers.evaluation.protocols`), not by this reader

Unlike the official scripts, nothing is pre-processed into ``.npy`` arrays and paths are parsed by their
components (never by character offsets counted from the end), so any file name length, image extension and
root path work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...modality import Modality
from ..records import ImageRecord, VIReIDDataset, relabel
from .folder import as_path, list_identity_folders, list_images, require_path

__all__ = [
    "SYSU_CAMERAS",
    "SYSU_INDOOR_IR_CAMERAS",
    "SYSU_INDOOR_RGB_CAMERAS",
    "SYSU_IR_CAMERAS",
    "SYSU_LAYOUT",
    "SYSU_PERMUTATION_FILE",
    "SYSU_RGB_CAMERAS",
    "SYSU_SAME_ROOM_CAMERAS",
    "read_id_file",
    "read_sysu_mm01",
]

#: Visible (RGB) cameras of SYSU-MM01: cam1, cam2 (indoor), cam4, cam5 (outdoor).
SYSU_RGB_CAMERAS: tuple[int, ...] = (1, 2, 4, 5)
#: Infrared cameras of SYSU-MM01: cam3 (indoor), cam6 (outdoor).
SYSU_IR_CAMERAS: tuple[int, ...] = (3, 6)
#: All six cameras, in order.
SYSU_CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
#: Indoor visible cameras (the gallery of indoor-search): cam1, cam2.
SYSU_INDOOR_RGB_CAMERAS: tuple[int, ...] = (1, 2)
#: Indoor infrared camera: cam3.
SYSU_INDOOR_IR_CAMERAS: tuple[int, ...] = (3,)
#: ``(RGB, infrared)``: cam2 and cam3 film the same indoor room, so evaluation never pairs them.
SYSU_SAME_ROOM_CAMERAS: tuple[int, int] = (2, 3)
#: The official gallery permutations, relative to the root; used only by the evaluation protocol.
SYSU_PERMUTATION_FILE = Path("exp", "rand_perm_cam.mat")

#: The expected layout, shown in every "not found" error.
SYSU_LAYOUT = """\
SYSU-MM01/
  cam1/ ... cam6/            one folder per camera (RGB: cam1, cam2, cam4, cam5; IR: cam3, cam6)
    0001/0001.jpg ...        one folder per identity ({pid:04d}) holding its images (.jpg/.jpeg/.png)
  exp/train_id.txt           comma-separated identity ids (train; merged with val for training)
  exp/val_id.txt             comma-separated identity ids (val)
  exp/test_id.txt            comma-separated identity ids (test)
SYSU-MM01 is distributed by its authors (Wu et al., ICCV 2017) on request; vireid-layers never downloads it."""

_ID_TOKEN = re.compile(r"\d+", re.ASCII)
_ID_SEPARATORS = re.compile(r"[\s,]+")


def read_id_file(path: Path) -> tuple[int, ...]:
    """Identity ids from a SYSU/LLCM id file such as ``exp/train_id.txt``: integers separated by commas.

    The official files hold one comma-separated line. Whitespace, newlines, trailing commas and a UTF-8 byte
    order mark are tolerated; every line is read.

    Args:
        path: the id file.

    Returns:
        The distinct ids, sorted.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a token is not a non-negative integer; the message names the file and the line.
    """
    ids: set[int] = set()
    text = path.read_text(encoding="utf-8-sig")
    for lineno, line in enumerate(text.splitlines(), start=1):
        for token in _ID_SEPARATORS.split(line.strip()):
            if not token:
                continue
            if _ID_TOKEN.fullmatch(token) is None:
                raise ValueError(
                    f"{path}, line {lineno}: expected comma-separated non-negative integer identity ids, got {token!r}"
                )
            ids.add(int(token))
    return tuple(sorted(ids))


def read_sysu_mm01(root: str | os.PathLike[str]) -> VIReIDDataset:
    """Read SYSU-MM01 :cite:`wu2017sysu` from its published layout (file lists only; no image is decoded).

    * ``train``: every image of the ``exp/train_id.txt`` and ``exp/val_id.txt`` identities (395 in the
      published split) from all six cameras, identities relabelled ``0..C-1`` in increasing order of the
      original id (:func:`~vireid_layers.data.relabel`), as the official pre-processing merges train and val.
    * ``test``: every image of the ``exp/test_id.txt`` identities from all six cameras, original ids kept.
      Queries (infrared cams 3, 6) and the gallery (visible cams 1, 2, 4, 5, sampled per trial) are chosen
      by the evaluation protocol, which may also read ``exp/rand_perm_cam.mat`` (:data:`SYSU_PERMUTATION_FILE`).

    Cameras come from the ``camN`` folder, identities from the identity folder below it (path components,
    never character offsets), modalities from :data:`SYSU_RGB_CAMERAS` / :data:`SYSU_IR_CAMERAS`. Records are
    sorted by path. Identity folders whose id is in none of the id files are ignored; an identity with no
    folder under some camera simply has no images there (as in the published data). Image files are those
    with an :data:`~vireid_layers.data.datasets.folder.IMAGE_EXTENSIONS` suffix, in any case.

    Args:
        root: the ``SYSU-MM01`` folder (see :data:`SYSU_LAYOUT`).

    Returns:
        The dataset, named ``"sysu"``; ``train_identities[label]`` is the original id of a training label.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: the root, a ``camN`` folder or an ``exp/*_id.txt`` file is missing; the message
            names the path and shows the expected layout.
        ValueError: an id file holds something other than integers, or a test id is also a train/val id.

    Examples:
        >>> import tempfile
        >>> from itertools import product
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for cam, pid in product(SYSU_CAMERAS, (7, 9)):
        ...         folder = Path(tmp, f"cam{cam}", f"{pid:04d}")
        ...         folder.mkdir(parents=True)
        ...         (folder / "0001.jpg").touch()
        ...     Path(tmp, "exp").mkdir()
        ...     for split, ids in [("train", "9,"), ("val", ""), ("test", "7")]:
        ...         _ = Path(tmp, "exp", f"{split}_id.txt").write_text(ids)
        ...     ds = read_sysu_mm01(tmp)
        >>> len(ds.train), len(ds.test), ds.train_identities
        (6, 6, (9,))
        >>> [(r.camera, r.identity, r.modality.name) for r in ds.train[2:4]]
        [(3, 0, 'INFRARED'), (4, 0, 'VISIBLE')]
    """
    root = require_path(as_path(root), dataset="SYSU-MM01", layout=SYSU_LAYOUT)
    camera_dirs = [require_path(root / f"cam{cam}", dataset="SYSU-MM01", layout=SYSU_LAYOUT) for cam in SYSU_CAMERAS]
    id_files = {
        split: require_path(root / "exp" / f"{split}_id.txt", dataset="SYSU-MM01", layout=SYSU_LAYOUT, kind="file")
        for split in ("train", "val", "test")
    }
    train_ids = set(read_id_file(id_files["train"])) | set(read_id_file(id_files["val"]))
    test_ids = set(read_id_file(id_files["test"]))
    overlap = sorted(train_ids & test_ids)
    if overlap:
        raise ValueError(
            f"SYSU-MM01: identities {overlap[:10]} are listed both in {id_files['test']} and in the train/val id "
            "files; the splits must be disjoint"
        )

    train: list[ImageRecord] = []
    test: list[ImageRecord] = []
    for camera, camera_dir in zip(SYSU_CAMERAS, camera_dirs, strict=True):  # camera_dir is root / f"cam{camera}"
        modality = Modality.INFRARED if camera in SYSU_IR_CAMERAS else Modality.VISIBLE
        for pid, folder in list_identity_folders(camera_dir):
            if pid in train_ids:
                split = train
            elif pid in test_ids:
                split = test
            else:
                continue
            split.extend(ImageRecord(path, pid, camera, modality) for path in list_images(folder))

    relabelled, mapping = relabel(train)
    return VIReIDDataset(
        name="sysu",
        root=root,
        train=tuple(sorted(relabelled)),
        test=tuple(sorted(test)),
        train_identities=tuple(sorted(mapping)),
    )
