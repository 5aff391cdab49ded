"""The dataset on disk: the manifest, the identity splits, the expected files and the preparation of a root."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..sysu import SYSU_CAMERAS
from .renderer import SYNTHETIC_GENERATOR_VERSION

__all__ = ["SYNTHETIC_JPEG_QUALITY", "SYNTHETIC_MANIFEST", "expected_images", "read_manifest"]

#: Name of the manifest file written at the dataset root.
SYNTHETIC_MANIFEST = "synthetic.json"
#: JPEG quality of every image (chroma is not subsampled, so thin coloured stripes survive).
SYNTHETIC_JPEG_QUALITY = 95
#: The ``generator`` field of every manifest: the package's import path (that of the former single module).
_GENERATOR = "vireid_layers.data.datasets.synthetic"
_OWN_NAMES = (*(f"cam{c}" for c in SYSU_CAMERAS), "exp")


def _splits(seed: int, num_identities: int, train_identities: int) -> dict[str, list[int]]:
    """Split ids ``1..num_identities`` at random (stream ``(seed, 0, 0, 0)``); one train id in eight is "val"."""
    order = np.random.default_rng([seed, 0, 0, 0]).permutation(np.arange(1, num_identities + 1))
    train = order[:train_identities]
    num_val = train_identities // 8
    return {
        "train": sorted(int(i) for i in train[num_val:]),
        "val": sorted(int(i) for i in train[:num_val]),
        "test": sorted(int(i) for i in order[train_identities:]),
    }


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the synthetic dataset in ``root`` as a dict, or ``None`` when ``root`` has none.

    Args:
        root: the dataset root.

    Returns:
        The parsed :data:`SYNTHETIC_MANIFEST`: ``generator``, ``version``, ``parameters``, ``complete``,
        ``image_format``, ``num_images`` and ``splits`` (``train``, ``val``, ``test`` id lists).

    Raises:
        ValueError: the file is not JSON or was not written by :func:`make_synthetic_dataset`.

    Examples:
        >>> from pathlib import Path
        >>> read_manifest(Path("/no/such/dataset")) is None
        True
    """
    path = root / SYNTHETIC_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable synthetic-dataset manifest: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        raise ValueError(f"{path} is not a manifest written by {_GENERATOR}")
    return manifest


def _write_manifest(root: Path, params: dict[str, int], splits: dict[str, list[int]], complete: bool) -> None:
    manifest = {
        "generator": _GENERATOR,
        "version": SYNTHETIC_GENERATOR_VERSION,
        "parameters": params,
        "complete": complete,
        "image_format": {"format": "JPEG", "quality": SYNTHETIC_JPEG_QUALITY, "subsampling": "4:4:4"},
        "num_images": params["num_identities"] * len(SYSU_CAMERAS) * params["images_per_camera"],
        "splits": splits,
    }
    tmp = root / (SYNTHETIC_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / SYNTHETIC_MANIFEST)


def _prepare_root(root: Path, params: dict[str, int], overwrite: bool) -> bool:
    """Decide what to do with an existing root; returns True when a complete, identical dataset is there."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"`root` {root} exists and is not a directory")
    manifest = read_manifest(root) if root.is_dir() else None
    if manifest is None:
        clashes = [name for name in (*_OWN_NAMES, SYNTHETIC_MANIFEST) if (root / name).exists()]
        if clashes:
            raise FileExistsError(
                f"`root` {root} already holds {clashes} but no {SYNTHETIC_MANIFEST}: it is not a synthetic dataset "
                "written by make_synthetic_dataset, so nothing is overwritten; choose another root or remove them"
            )
        return False
    same = manifest.get("version") == SYNTHETIC_GENERATOR_VERSION and manifest.get("parameters") == params
    if same:
        return bool(manifest.get("complete"))
    if not overwrite:
        old = {"version": manifest.get("version"), **(manifest.get("parameters") or {})}
        new = {"version": SYNTHETIC_GENERATOR_VERSION, **params}
        diff = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
        raise FileExistsError(
            f"`root` {root} holds a synthetic dataset generated with other parameters (existing, requested): "
            f"{diff}; pass overwrite=True to replace it, or choose another root"
        )
    for name in _OWN_NAMES:
        if (root / name).exists():
            shutil.rmtree(root / name)
    return False


def expected_images(root: Path, params: dict[str, Any]) -> list[tuple[Path, int, int, int]]:
    """Every image a synthetic dataset with these parameters holds, camera by camera, then id, then number.

    Args:
        root: the dataset root.
        params: the manifest's ``parameters`` (``num_identities`` and ``images_per_camera`` are used).

    Returns:
        ``(path, identity, camera, index)`` for every image, ``path`` being ``root/cam{c}/{id:04d}/{n:04d}.jpg``.

    Examples:
        >>> from pathlib import Path
        >>> files = expected_images(Path("/d"), {"num_identities": 2, "images_per_camera": 3})
        >>> len(files), files[0][0].as_posix(), files[-1][1:]
        (36, '/d/cam1/0001/0001.jpg', (2, 6, 3))
    """
    return [
        (root / f"cam{cam}" / f"{pid:04d}" / f"{index:04d}.jpg", pid, cam, index)
        for cam in SYSU_CAMERAS
        for pid in range(1, params["num_identities"] + 1)
        for index in range(1, params["images_per_camera"] + 1)
    ]


def _write_id_files(root: Path, splits: dict[str, list[int]]) -> None:
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        text = ",".join(str(i) for i in ids) + "\n"
        path = root / "exp" / f"{split}_id.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
