"""Dataset previews: a labelled PNG grid of sample images, one row per identity and one column per camera.

:func:`save_sample_grid` works on any dataset in SYSU-MM01's layout (SYSU-MM01 itself, the built-in synthetic
dataset); it is also importable from :mod:`vireid_layers.data.datasets.synthetic`, where it used to live.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .._validation import check_int
from .datasets.folder import as_path, list_identity_folders, list_images, load_image
from .datasets.sysu import SYSU_CAMERAS, SYSU_IR_CAMERAS
from .records import VIReIDDataset

__all__ = ["save_sample_grid"]


def save_sample_grid(
    root_or_dataset: str | os.PathLike[str] | VIReIDDataset,
    path: str | os.PathLike[str],
    *,
    identities: int = 6,
    scale: int = 2,
) -> Path:
    """Save a PNG grid of sample images: one row per identity, one column per camera (1..6), labelled.

    Works on any dataset in SYSU-MM01's layout. The rows are the first ``identities`` identities (by id) that
    have images in all six cameras; each cell is the identity's first image in that camera, resized to the
    size of the first image times ``scale`` with nearest-neighbour sampling.

    Args:
        root_or_dataset: a dataset root, or a :class:`~vireid_layers.data.VIReIDDataset` (its ``root`` is used).
        path: the PNG file to write; its folder is created if missing.
        identities: number of rows (at least 1).
        scale: integer magnification of every image (at least 1).

    Returns:
        The absolute path of the written PNG.

    Raises:
        TypeError: ``root_or_dataset`` or ``path`` has the wrong type, or ``identities``/``scale`` is not an int.
        ValueError: ``identities`` or ``scale`` is below 1, or no identity has images in all six cameras.
        FileNotFoundError: a camera folder is missing.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from vireid_layers.data.datasets.synthetic import make_synthetic_dataset
        >>> from vireid_layers.data.preview import save_sample_grid
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = make_synthetic_dataset(
        ...         Path(tmp, "data"), num_identities=3, train_identities=2, images_per_camera=1, height=32, width=16
        ...     )
        ...     png = save_sample_grid(root, Path(tmp, "grid.png"), identities=2)
        ...     size = Image.open(png).size
        >>> size
        (244, 146)
    """
    root = root_or_dataset.root if isinstance(root_or_dataset, VIReIDDataset) else as_path(root_or_dataset)
    out = as_path(path, "path")
    identities = check_int(identities, "identities", minimum=1)
    scale = check_int(scale, "scale", minimum=1)
    folders: dict[int, dict[int, Path]] = {}
    for cam in SYSU_CAMERAS:
        cam_dir = root / f"cam{cam}"
        if not cam_dir.is_dir():
            raise FileNotFoundError(f"camera folder {cam_dir} does not exist")
        folders[cam] = {pid: folder for pid, folder in list_identity_folders(cam_dir) if list_images(folder)}
    common = sorted(set.intersection(*(set(f) for f in folders.values())))[:identities]
    if not common:
        raise ValueError(f"no identity of {root} has images in all six cameras")

    cells = [[load_image(list_images(folders[cam][pid])[0]) for cam in SYSU_CAMERAS] for pid in common]
    cw, ch = cells[0][0].width * scale, cells[0][0].height * scale
    font = ImageFont.load_default()
    header, left, gap = 14, 40, 2
    grid = Image.new("RGB", (left + len(SYSU_CAMERAS) * (cw + gap), header + len(common) * (ch + gap)), "white")
    draw = ImageDraw.Draw(grid)
    for j, cam in enumerate(SYSU_CAMERAS):
        kind = "IR" if cam in SYSU_IR_CAMERAS else "RGB"
        draw.text((left + j * (cw + gap) + 2, 2), f"cam{cam} {kind}", fill="black", font=font)
    for i, (pid, row) in enumerate(zip(common, cells, strict=True)):
        y = header + i * (ch + gap)
        draw.text((2, y + ch // 2 - 5), f"{pid:04d}", fill="black", font=font)
        for j, cell in enumerate(row):
            grid.paste(cell.resize((cw, ch), Image.Resampling.NEAREST), (left + j * (cw + gap), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG", optimize=True)
    return out
