"""Images on disk: listing image folders, checking a dataset layout, and a lazy :class:`ImageDataset`.

The dataset readers (:mod:`~vireid_layers.data.datasets.sysu`, :mod:`~vireid_layers.data.datasets.regdb`,
:mod:`~vireid_layers.data.datasets.llcm`) only list files; :class:`ImageDataset` decodes an image when it is
indexed, so building a dataset takes seconds and memory stays flat.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from ..records import ImageRecord

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageReadError",
    "ImageSample",
    "MissingImageError",
    "as_path",
    "list_identity_folders",
    "list_images",
    "load_image",
    "require_path",
    "verify_command",
]

#: File-name suffixes (compared case-insensitively) that :func:`list_images` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png")

_DIGITS = re.compile(r"\d+", re.ASCII)


_MARKER = "cannot read image "


class ImageReadError(OSError):
    r"""An image of a dataset cannot be read: missing, not permitted, corrupt, truncated or not an image.

    The one exception type :func:`load_image` and :class:`ImageDataset` raise for a bad image file. Its message
    is one line that starts with ``cannot read image <path>:`` and gives the reason; raised by
    :class:`ImageDataset`, it also names the command that lists every bad file of the dataset
    (``vireid-verify --check-images <root>``). A training script can catch it and print ``str(err)``.

    When a ``DataLoader`` worker raised it, ``DataLoader`` raises it again in the main process with the worker's
    whole traceback as the message; the constructor keeps the one line of the original message and stores the
    traceback text in :attr:`details`.

    Args:
        message: the message (of a multi-line message, the last line holding ``cannot read image`` is kept).
        path: the image file, stored as :attr:`path` (``None`` when not known).

    Examples:
        >>> err = ImageReadError("cannot read image /d/0001.jpg: truncated", path="/d/0001.jpg")
        >>> str(err), err.path, isinstance(err, OSError)
        ('cannot read image /d/0001.jpg: truncated', '/d/0001.jpg', True)
        >>> worker = "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback ...\n"
        >>> str(ImageReadError(worker + "ImageReadError: cannot read image /d/0001.jpg: truncated\n"))
        'cannot read image /d/0001.jpg: truncated'
    """

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        text = str(message)
        self.details = ""
        if "\n" in text.strip():
            lines = [line for line in text.splitlines() if _MARKER in line]
            if lines:
                self.details = text
                text = lines[-1][lines[-1].index(_MARKER) :]
            else:
                text = " ".join(text.split())
        super().__init__(text)
        self.path = path


class MissingImageError(ImageReadError, FileNotFoundError):
    """An image file a dataset lists does not exist: an :class:`ImageReadError` and a :class:`FileNotFoundError`."""


def as_path(root: object, name: str = "root") -> Path:
    """Return ``root`` as an absolute, normalised :class:`~pathlib.Path` (symbolic links are kept, not resolved).

    Raises:
        TypeError: ``root`` is not a ``str`` or :class:`os.PathLike`.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a str or os.PathLike, got {type(root).__name__} {root!r}")
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def require_path(path: Path, *, dataset: str, layout: str, kind: str = "directory") -> Path:
    r"""Raise a :class:`FileNotFoundError` that names ``path`` and shows the expected layout, unless it exists.

    Args:
        path: the directory or file the layout requires.
        dataset: dataset name used in the message (``"SYSU-MM01"``).
        layout: a text drawing of the expected folder layout, appended to the message.
        kind: ``"directory"`` or ``"file"``: what ``path`` must be.

    Returns:
        ``path``, unchanged.

    Raises:
        FileNotFoundError: ``path`` does not exist, or exists but is not a ``kind``.

    Examples:
        >>> require_path(Path("/no/such/dir"), dataset="Demo", layout="Demo/\n  a/")
        Traceback (most recent call last):
        ...
        FileNotFoundError: Demo: directory /no/such/dir does not exist. Expected layout:
        Demo/
          a/
    """
    exists = path.is_dir() if kind == "directory" else path.is_file()
    if not exists:
        problem = "does not exist" if not path.exists() else f"is not a {kind}"
        raise FileNotFoundError(f"{dataset}: {kind} {path} {problem}. Expected layout:\n{layout}")
    return path


def list_images(directory: Path) -> list[Path]:
    """The image files directly inside ``directory``, sorted by file name.

    Only names ending in one of :data:`IMAGE_EXTENSIONS` (any case) are kept, so stray files such as
    ``Thumbs.db`` or ``.DS_Store`` are skipped. Nothing is opened or decoded.

    Args:
        directory: an existing directory.

    Returns:
        The sorted image paths (``directory / name``).
    """
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS]
    return [directory / name for name in sorted(names)]


def list_identity_folders(directory: Path) -> list[tuple[int, Path]]:
    """The identity folders directly inside ``directory``: sub-folders named by digits only (``0001``).

    Other entries (files, ``.DS_Store``, ``exp``) are skipped. Nothing below the folders is read.

    Args:
        directory: an existing directory, such as ``SYSU-MM01/cam1``.

    Returns:
        ``(identity, folder)`` pairs sorted by identity, the identity being the folder name as an integer.
    """
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.is_dir() and _DIGITS.fullmatch(e.name)]
    return sorted((int(name), directory / name) for name in names)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode one image as 3-channel RGB.

    Grey (``L``) infrared and thermal images are replicated to three identical channels by PIL's
    ``convert("RGB")``, so both modalities enter a network with the same number of channels (the choice of
    every official VI-ReID code base; a 1-channel stem is the alternative, see the backbone builder).

    Args:
        path: image file.

    Returns:
        The decoded ``RGB`` image.

    Raises:
        MissingImageError: ``path`` does not exist (an :class:`ImageReadError` and a :class:`FileNotFoundError`).
        ImageReadError: the file cannot be opened or decoded; the one-line message names the path and the reason.

    Examples:
        >>> load_image("/no/such/image.jpg")
        Traceback (most recent call last):
        ...
        vireid_layers.data.datasets.folder.MissingImageError: cannot read image /no/such/image.jpg: no such file
    """
    name = os.fspath(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise MissingImageError(f"{_MARKER}{name}: no such file", path=name) from err
    except Exception as err:  # PIL plugins raise OSError, ValueError, SyntaxError, struct.error, ... on bad data
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # one line
        raise ImageReadError(f"{_MARKER}{name}: {reason}", path=name) from err


def _dataset_root_of(path: Path) -> Path | None:
    """The nearest folder above ``path`` (at most five levels up) that holds a known dataset layout."""
    from . import detect_dataset  # the registry package imports this module

    for parent in list(path.parents)[:5]:
        if detect_dataset(parent) is not None:
            return parent
    return None


def verify_command(path: str | os.PathLike[str]) -> str:
    """The ``vireid-verify`` command that checks every image of the dataset holding the image ``path``.

    The dataset root is the nearest folder above ``path`` with a known layout
    (:func:`~vireid_layers.data.datasets.detect_dataset`); when none is found the command shows
    ``<dataset root>`` instead.

    Args:
        path: an image file of a dataset (it need not exist).

    Returns:
        ``vireid-verify --check-images <root>``, the root quoted for a POSIX shell where needed.

    Examples:
        >>> verify_command("/no/such/dataset/cam3/0001/0001.jpg")
        'vireid-verify --check-images <dataset root>'
    """
    root = _dataset_root_of(as_path(path, "path"))
    return f"vireid-verify --check-images {'<dataset root>' if root is None else shlex.quote(str(root))}"


class ImageSample(NamedTuple):
    """One item of :class:`ImageDataset`; the default ``DataLoader`` collate batches each field.

    Attributes:
        image: the transformed image; without a transform a ``uint8`` tensor of shape :math:`(3, H, W)`.
        identity: identity label of the record.
        camera: camera number of the record.
        modality: ``0`` (visible) or ``1`` (infrared), the values of :class:`~vireid_layers.Modality`.
    """

    image: Tensor | Any
    identity: int
    camera: int
    modality: int


class ImageDataset(Dataset[ImageSample]):
    """A map-style dataset over image records that decodes each image lazily when it is indexed.

    Images are opened with PIL and converted to RGB; grey infrared images therefore become three identical
    channels (see :func:`load_image`). The optional ``transform`` receives that PIL image (torchvision
    ``transforms`` and ``transforms.v2`` both accept it); without one, the image is returned as a ``uint8``
    tensor of shape :math:`(3, H, W)`.

    Args:
        records: the records to serve, in this order (for example ``dataset.train`` of a
            :class:`~vireid_layers.data.VIReIDDataset`).
        transform: callable applied to the PIL image, or ``None``.

    Raises:
        TypeError: an element of ``records`` is not an :class:`~vireid_layers.data.ImageRecord`, or
            ``transform`` is not callable.
        ImageReadError: when indexed, the image is missing (:class:`MissingImageError`) or cannot be decoded;
            the one-line message names the file and ends with the ``vireid-verify --check-images <root>``
            command that lists every bad image of the dataset (:func:`verify_command`).

    Examples:
        >>> import tempfile
        >>> from vireid_layers import Modality
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp) / "0001.png"
        ...     Image.new("L", (4, 8), color=200).save(path)
        ...     sample = ImageDataset([ImageRecord(path, 0, 3, Modality.INFRARED)])[0]
        >>> sample.image.shape, sample.image.dtype, sample.camera, sample.modality
        (torch.Size([3, 8, 4]), torch.uint8, 3, 1)
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Image.Image], Any] | None = None) -> None:
        records = tuple(records)
        for i, record in enumerate(records):
            if not isinstance(record, ImageRecord):
                raise TypeError(f"`records[{i}]` must be an ImageRecord, got {type(record).__name__} {record!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"`transform` must be callable or None, got {type(transform).__name__} {transform!r}")
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageSample:
        record = self.records[index]
        try:
            image = load_image(record.path)
        except ImageReadError as err:  # the same type, its one line extended by the command that finds every bad file
            hint = f"{err}; to list every missing or unreadable image run: {verify_command(record.path)}"
            raise type(err)(hint, path=err.path) from err
        out = self.transform(image) if self.transform is not None else pil_to_tensor(image)
        return ImageSample(out, int(record.identity), int(record.camera), int(record.modality))
