"""Readers for SYSU-MM01, RegDB, LLCM and the built-in synthetic dataset, and the dataset registry.

Each reader takes the dataset's root folder in its published layout and returns a
:class:`~vireid_layers.data.VIReIDDataset` of sorted records; :class:`ImageDataset` turns records into a
``torch`` dataset that decodes images lazily.

The registry (:data:`DATASETS`, :func:`register_dataset`, :func:`build_dataset`) exists for the config/CLI
boundary, where a dataset is named by a string; library code calls the readers directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..._validation import check_choice
from ..records import VIReIDDataset
from .folder import IMAGE_EXTENSIONS, ImageDataset, ImageReadError, ImageSample, as_path, load_image
from .llcm import LLCM_NIR_CAMERAS, LLCM_VIS_CAMERAS, read_llcm
from .regdb import REGDB_THERMAL_CAMERA, REGDB_TRIALS, REGDB_VISIBLE_CAMERA, read_regdb
from .sysu import SYSU_IR_CAMERAS, SYSU_RGB_CAMERAS, read_sysu_mm01

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageReadError",
    "ImageSample",
    "LLCM_NIR_CAMERAS",
    "LLCM_VIS_CAMERAS",
    "REGDB_THERMAL_CAMERA",
    "REGDB_TRIALS",
    "REGDB_VISIBLE_CAMERA",
    "SYSU_IR_CAMERAS",
    "SYSU_RGB_CAMERAS",
    "build_dataset",
    "detect_dataset",
    "load_image",
    "read_llcm",
    "read_regdb",
    "read_sysu_mm01",
    "register_dataset",
]


def _read_synthetic(root: str | os.PathLike[str], **kwargs: Any) -> VIReIDDataset:
    """Read the built-in synthetic dataset; :mod:`.synthetic` is imported on first use."""
    from .synthetic import read_synthetic

    return read_synthetic(root, **kwargs)


#: Dataset name -> reader ``reader(root, **kwargs) -> VIReIDDataset``. Extend it with :func:`register_dataset`.
DATASETS: dict[str, Callable[..., VIReIDDataset]] = {
    "llcm": read_llcm,
    "regdb": read_regdb,
    "synthetic": _read_synthetic,
    "sysu": read_sysu_mm01,
}


def register_dataset(name: str, reader: Callable[..., VIReIDDataset]) -> None:
    """Add a dataset reader to :data:`DATASETS` under ``name``.

    Args:
        name: the key :func:`build_dataset` and the ``--dataset`` command-line options accept.
        reader: a callable ``reader(root, **kwargs)`` returning a :class:`~vireid_layers.data.VIReIDDataset`.

    Raises:
        TypeError: ``name`` is not a string or ``reader`` is not callable.
        ValueError: ``name`` is empty or already registered (existing entries are never overwritten).

    Examples:
        >>> register_dataset("sysu", read_sysu_mm01)
        Traceback (most recent call last):
        ...
        ValueError: dataset 'sysu' is already registered (to read_sysu_mm01); choose another name
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError("`name` must be a non-empty string, got ''")
    if not callable(reader):
        raise TypeError(f"`reader` must be callable, got {type(reader).__name__} {reader!r}")
    if name in DATASETS:
        existing = getattr(DATASETS[name], "__name__", repr(DATASETS[name]))
        raise ValueError(f"dataset {name!r} is already registered (to {existing}); choose another name")
    DATASETS[name] = reader


def build_dataset(name: str, root: str | os.PathLike[str], **kwargs: Any) -> VIReIDDataset:
    """Read the dataset registered as ``name`` from ``root``.

    Args:
        name: a key of :data:`DATASETS` (``"llcm"``, ``"regdb"``, ``"synthetic"``, ``"sysu"``, or a
            registered one).
        root: the dataset's root folder.
        **kwargs: passed to the reader, such as ``trial=3`` for RegDB.

    Returns:
        The dataset.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.

    Examples:
        >>> build_dataset("market1501", "/data")
        Traceback (most recent call last):
        ...
        ValueError: `name` must be one of ['llcm', 'regdb', 'synthetic', 'sysu'], got 'market1501'
    """
    check_choice(name, "name", sorted(DATASETS))
    return DATASETS[name](root, **kwargs)


# What marks each built-in layout's root, checked in this order (a synthetic root is also a SYSU-MM01 layout).
_LAYOUT_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("synthetic", ("synthetic.json",)),
    ("sysu", ("exp/train_id.txt", "cam1")),
    ("llcm", ("idx/train_vis.txt", "idx/test_id.txt")),
    ("regdb", ("idx", "Visible", "Thermal")),
)


def detect_dataset(root: str | os.PathLike[str]) -> str | None:
    """The name of the built-in dataset whose published layout ``root`` holds, or ``None``.

    Only a few marker paths are looked up (``synthetic.json``; ``exp/train_id.txt`` and ``cam1/`` for
    SYSU-MM01; ``idx/train_vis.txt`` and ``idx/test_id.txt`` for LLCM; ``idx/``, ``Visible/`` and ``Thermal/``
    for RegDB); nothing is read. ``vireid-verify`` uses it when ``--dataset`` is
    not given. Registered datasets other than the built-in ones are never detected.

    Args:
        root: a folder.

    Returns:
        ``"synthetic"``, ``"sysu"``, ``"llcm"``, ``"regdb"``, or ``None`` when no layout matches.

    Raises:
        TypeError: ``root`` is not a ``str`` or :class:`os.PathLike`.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     before = detect_dataset(tmp)
        ...     for name in ("idx", "Visible", "Thermal"):
        ...         (Path(tmp) / name).mkdir()
        ...     after = detect_dataset(tmp)
        >>> before, after
        (None, 'regdb')
    """
    path = as_path(root)
    for name, markers in _LAYOUT_MARKERS:
        if all((path / marker).exists() for marker in markers):
            return name
    return None
