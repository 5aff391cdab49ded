"""RegDB :cite:`nguyen2017regdb` read from its published folder layout and trial index files.

The layout, with the ten train/test identity splits ("trials") distributed as index files::

    RegDB/
      Visible/{pid}/...             visible images
      Thermal/{pid}/...             thermal images
      idx/train_visible_{t}.txt     t = 1..10; one "relative/path label" line per image, paths relative
      idx/train_thermal_{t}.txt     to the RegDB root (Visible/... or Thermal/...)
      idx/test_visible_{t}.txt
      idx/test_thermal_{t}.txt

Each trial has 206 training and 206 test identities, 10 visible and 10 thermal images each (2,060 images per
modality and split). Published results average over the ten trials, one model per trial.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...modality import Modality
from ..records import ImageRecord, VIReIDDataset, relabel
from .folder import as_path, require_path

__all__ = [
    "REGDB_LAYOUT",
    "REGDB_THERMAL_CAMERA",
    "REGDB_TRIALS",
    "REGDB_VISIBLE_CAMERA",
    "read_index_file",
    "read_regdb",
]

#: The ten published trials (train/test identity splits).
REGDB_TRIALS: tuple[int, ...] = tuple(range(1, 11))
#: Camera number given to every visible image. RegDB has one camera per modality; the official
#: ``eval_regdb`` gives camera 1 to the (visible) queries and 2 to the (thermal) gallery so that its
#: same-camera removal never removes anything, and these constants keep that convention.
REGDB_VISIBLE_CAMERA = 1
#: Camera number given to every thermal image (see :data:`REGDB_VISIBLE_CAMERA`).
REGDB_THERMAL_CAMERA = 2

#: The expected layout, shown in every "not found" error.
REGDB_LAYOUT = """\
RegDB/
  Visible/{pid}/...              visible images
  Thermal/{pid}/...              thermal images
  idx/train_visible_{t}.txt      t = 1..10; one "relative/path label" line per image,
  idx/train_thermal_{t}.txt      paths relative to the RegDB root
  idx/test_visible_{t}.txt
  idx/test_thermal_{t}.txt
RegDB is distributed by its authors (Nguyen et al., Sensors 2017) on request; vireid-layers never downloads it."""

_LABEL = re.compile(r"\d+", re.ASCII)


def read_index_file(path: Path, root: Path) -> list[tuple[Path, int]]:
    r"""Parse a RegDB/LLCM index file: one ``relative/path label`` line per image.

    Fields are separated by whitespace (the official files use one space), so paths must not contain spaces.
    Blank lines, ``\r\n`` line ends and a UTF-8 byte order mark are tolerated. The images are not opened.

    Args:
        path: the index file.
        root: the dataset root the relative paths start from.

    Returns:
        ``(root / relative_path, label)`` per line, in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not ``path label`` with a non-negative integer label (the message names the
            file and the line number), or the file holds no line at all.
    """
    entries: list[tuple[Path, int]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or _LABEL.fullmatch(fields[1]) is None:
            raise ValueError(
                f"{path}, line {lineno}: expected 'relative/path label' with a non-negative integer label, "
                f"got {line.strip()!r}"
            )
        entries.append((root / fields[0], int(fields[1])))
    if not entries:
        raise ValueError(f"{path} holds no 'relative/path label' line")
    return entries


def _check_trial(trial: object) -> int:
    if isinstance(trial, bool) or not isinstance(trial, int):
        raise TypeError(f"`trial` must be an int in {list(REGDB_TRIALS)}, got {type(trial).__name__} {trial!r}")
    if trial not in REGDB_TRIALS:
        raise ValueError(f"`trial` must be one of {list(REGDB_TRIALS)}, got {trial}")
    return trial


def read_regdb(root: str | os.PathLike[str], trial: int = 1) -> VIReIDDataset:
    r"""Read one trial of RegDB :cite:`nguyen2017regdb` from its index files (no image is opened).

    * ``train``: the images of ``idx/train_visible_{trial}.txt`` and ``idx/train_thermal_{trial}.txt``. The
      official files already number the 206 identities ``0..205``, in which case the labels are kept as they
      are; any other label set is relabelled ``0..C-1`` in increasing order of the file's label
      (:func:`~vireid_layers.data.relabel`), and ``train_identities`` keeps the file's labels.
    * ``test``: the images of ``idx/test_visible_{trial}.txt`` and ``idx/test_thermal_{trial}.txt``, with the
      identity of the label column.

    Visible images get camera :data:`REGDB_VISIBLE_CAMERA` (1) and thermal images camera
    :data:`REGDB_THERMAL_CAMERA` (2), the convention of the official ``eval_regdb`` for visible queries and a
    thermal gallery. Records are sorted by path. Only the index files are read: a listed image that is
    missing surfaces when it is loaded, or earlier with ``python -m vireid_layers.data.verify``.

    Args:
        root: the ``RegDB`` folder (see :data:`REGDB_LAYOUT`).
        trial: which of the ten splits, ``1..10``.

    Returns:
        The dataset, named ``"regdb"``.

    Raises:
        TypeError: ``root`` is not a path or ``trial`` is not an int.
        ValueError: ``trial`` is not in ``1..10``, or an index line is malformed (file and line named).
        FileNotFoundError: the root or an index file is missing; the message names the path and shows the
            expected layout.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Path(tmp, "idx").mkdir()
        ...     for split in ("train", "test"):
        ...         for folder in ("Visible", "Thermal"):
        ...             lines = [f"{folder}/{pid}/{folder[0]}_{pid}.bmp {pid - 1}" for pid in (1, 2)]
        ...             _ = Path(tmp, "idx", f"{split}_{folder.lower()}_3.txt").write_text("\n".join(lines))
        ...     ds = read_regdb(tmp, trial=3)
        >>> [(r.path.name, r.identity, r.camera, r.modality.name) for r in ds.train]  # doctest: +NORMALIZE_WHITESPACE
        [('T_1.bmp', 0, 2, 'INFRARED'), ('T_2.bmp', 1, 2, 'INFRARED'),
         ('V_1.bmp', 0, 1, 'VISIBLE'), ('V_2.bmp', 1, 1, 'VISIBLE')]
    """
    trial = _check_trial(trial)
    root = require_path(as_path(root), dataset="RegDB", layout=REGDB_LAYOUT)
    sources = (
        ("visible", REGDB_VISIBLE_CAMERA, Modality.VISIBLE),
        ("thermal", REGDB_THERMAL_CAMERA, Modality.INFRARED),
    )
    splits: dict[str, list[ImageRecord]] = {"train": [], "test": []}
    for split, records in splits.items():
        for name, camera, modality in sources:
            index = root / "idx" / f"{split}_{name}_{trial}.txt"
            require_path(index, dataset="RegDB", layout=REGDB_LAYOUT, kind="file")
            records.extend(ImageRecord(path, label, camera, modality) for path, label in read_index_file(index, root))

    train, mapping = relabel(splits["train"])  # the identity map for the official 0..205 labels
    return VIReIDDataset(
        name="regdb",
        root=root,
        train=tuple(sorted(train)),
        test=tuple(sorted(splits["test"])),
        train_identities=tuple(sorted(mapping)),
    )
