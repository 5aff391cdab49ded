"""Writing and reading the synthetic dataset: :func:`make_synthetic_dataset` and :func:`read_synthetic`."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ...._validation import check_int
from ...records import VIReIDDataset
from ..folder import as_path
from ..sysu import read_sysu_mm01
from .manifest import (
    SYNTHETIC_JPEG_QUALITY,
    SYNTHETIC_MANIFEST,
    _prepare_root,
    _splits,
    _write_id_files,
    _write_manifest,
    expected_images,
    read_manifest,
)
from .renderer import render_synthetic_image

__all__ = ["make_synthetic_dataset", "read_synthetic"]


def make_synthetic_dataset(
    root: str | os.PathLike[str],
    *,
    num_identities: int = 48,
    train_identities: int = 32,
    images_per_camera: int = 4,
    height: int = 64,
    width: int = 32,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Render the synthetic cross-modality person dataset and write it to ``root`` in SYSU-MM01's layout.

    Identities ``1..num_identities`` are split at random (from ``seed``) into ``train_identities`` training
    identities, of which one in eight is listed in ``exp/val_id.txt`` (SYSU-MM01's readers merge train and
    val), and test identities. Every identity gets ``images_per_camera`` images in each of the six cameras
    (visible cams 1, 2, 4, 5; infrared cams 3, 6), written as ``cam{c}/{id:04d}/{n:04d}.jpg``
    (:func:`render_synthetic_image`). A manifest, :data:`SYNTHETIC_MANIFEST`, records the generator version,
    the parameters, the splits and whether generation finished.

    Calling it again with the same parameters on a complete dataset only checks that the files are there (a
    missing image is rendered again; the output is deterministic, so it is the same file). An unfinished
    dataset with the same parameters is rendered again. A dataset with other parameters raises, unless
    ``overwrite=True``, which deletes its ``cam*`` and ``exp`` folders first. A root holding ``cam*``/``exp``
    folders without a manifest (a real SYSU-MM01, say) is never written to.

    Args:
        root: the dataset folder; created if missing. Entries other than ``cam1..cam6``, ``exp`` and the
            manifest are left alone.
        num_identities: number of identities (2..9999).
        train_identities: how many of them are training (train + val) identities, ``1..num_identities - 1``;
            the others are test identities.
        images_per_camera: images of every identity in every camera (at least 1).
        height: image height in pixels (at least 16).
        width: image width in pixels (at least 8).
        seed: non-negative seed; the same seed and parameters give byte-identical files.
        overwrite: replace a synthetic dataset generated with other parameters.

    Returns:
        The absolute dataset root, ready for :func:`read_synthetic`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range; the message names it.
        FileExistsError: ``root`` holds a different synthetic dataset (and ``overwrite`` is false), holds
            dataset folders without a manifest, or is a file.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = make_synthetic_dataset(
        ...         tmp, num_identities=4, train_identities=2, images_per_camera=1, height=32, width=16
        ...     )
        ...     names = sorted(p.name for p in root.iterdir())
        ...     files = sorted(p.name for p in (root / "cam3").iterdir())
        >>> names
        ['cam1', 'cam2', 'cam3', 'cam4', 'cam5', 'cam6', 'exp', 'synthetic.json']
        >>> files
        ['0001', '0002', '0003', '0004']
    """
    root = as_path(root)
    params = {
        "num_identities": check_int(num_identities, "num_identities", minimum=2),
        "train_identities": check_int(train_identities, "train_identities", minimum=1),
        "images_per_camera": check_int(images_per_camera, "images_per_camera", minimum=1),
        "height": check_int(height, "height", minimum=16),
        "width": check_int(width, "width", minimum=8),
        "seed": check_int(seed, "seed", minimum=0),
    }
    if num_identities > 9999:
        raise ValueError(f"`num_identities` must be at most 9999 (4-digit folders), got {num_identities!r}")
    if images_per_camera > 9999:
        raise ValueError(f"`images_per_camera` must be at most 9999 (4-digit names), got {images_per_camera!r}")
    if train_identities >= num_identities:
        raise ValueError(
            f"`train_identities` must be smaller than `num_identities` ({num_identities}) so that test identities "
            f"remain, got {train_identities!r}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool, got {type(overwrite).__name__} {overwrite!r}")

    complete = _prepare_root(root, params, overwrite)
    splits = _splits(params["seed"], num_identities, train_identities)
    files = expected_images(root, params)
    if complete:
        files = [f for f in files if not f[0].is_file()]
    else:
        root.mkdir(parents=True, exist_ok=True)
        _write_manifest(root, params, splits, complete=False)
    for path, pid, cam, index in files:
        image = render_synthetic_image(pid, cam, index, seed=params["seed"], height=height, width=width)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="JPEG", quality=SYNTHETIC_JPEG_QUALITY, subsampling=0)
    _write_id_files(root, splits)
    if not complete:
        _write_manifest(root, params, splits, complete=True)
    return root


def read_synthetic(root: str | os.PathLike[str]) -> VIReIDDataset:
    """Read a synthetic dataset written by :func:`make_synthetic_dataset`, with the SYSU-MM01 reader.

    This is :func:`~vireid_layers.data.datasets.sysu.read_sysu_mm01` (train = train + val identities, all six
    cameras, relabelled; test = test identities with their own ids) under the name ``"synthetic"``. It never
    generates anything: call :func:`make_synthetic_dataset` first.

    Args:
        root: the dataset folder.

    Returns:
        The dataset, named ``"synthetic"``.

    Raises:
        FileNotFoundError: ``root`` has no manifest (generate the dataset first), or a layout file is missing.
        ValueError: the manifest says the generation did not finish, or is not a synthetic-dataset manifest.

    Examples:
        >>> import tempfile
        >>> import vireid_layers
        >>> from vireid_layers.data.datasets.synthetic import make_synthetic_dataset, read_synthetic
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = make_synthetic_dataset(
        ...         tmp, num_identities=4, train_identities=2, images_per_camera=1, height=32, width=16
        ...     )
        ...     ds = read_synthetic(root)
        >>> ds.name, len(ds.train), len(ds.test), ds.num_train_identities
        ('synthetic', 12, 12, 2)
        >>> sorted({r.camera for r in ds.test if r.modality == vireid_layers.Modality.INFRARED})
        [3, 6]
    """
    path = as_path(root)
    manifest = read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"{path / SYNTHETIC_MANIFEST} does not exist: generate the dataset first with "
            f"make_synthetic_dataset({str(path)!r})"
        )
    if not manifest.get("complete"):
        raise ValueError(
            f"the synthetic dataset in {path} is incomplete (generation was interrupted): run make_synthetic_dataset "
            "on it again with the same parameters"
        )
    return replace(read_sysu_mm01(path), name="synthetic")
