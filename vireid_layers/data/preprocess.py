"""The model's test transform as one object: camera frames, PIL images or files in, a normalised batch out."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from .._validation import check_int
from .datasets import load_image
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["OFFICIAL_TEST_INPUTS", "ImagePreprocessor"]

_INTERPOLATIONS = {
    "lanczos": InterpolationMode.LANCZOS,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

#: The official test input of each model (height, width, resampling filter of the resize): DEEN 384×144, DDAG,
#: AGW and MSO 288×144, all resized with PIL's Lanczos filter (``Image.ANTIALIAS``) when the test images are
#: loaded; MPANet 384×128 resized bilinearly (256×128 for its RegDB configuration).
OFFICIAL_TEST_INPUTS: dict[str, tuple[int, int, str]] = {
    "AGW": (288, 144, "lanczos"),
    "DDAG": (288, 144, "lanczos"),
    "DEEN": (384, 144, "lanczos"),
    "MPANet": (384, 128, "bilinear"),
    "MSO": (288, 144, "lanczos"),
}

Image = Any  # PIL.Image.Image, a uint8 tensor or array, or a path


def _check_floats(values: Sequence[float], name: str, positive: bool) -> tuple[float, float, float]:
    if isinstance(values, (str, bytes)) or len(values) != 3:
        raise ValueError(f"`{name}` must hold 3 numbers (one per RGB channel), got {values!r}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ValueError(f"`{name}` must hold 3 finite{' positive' if positive else ''} numbers, got {values!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class ImagePreprocessor:
    r"""A model's test transform for inference: images as they come, a normalised float batch out.

    Each image is turned into a PIL image (grey images become three identical channels), resized to
    ``height × width`` with ``interpolation``, scaled to :math:`[0, 1]` and normalised,
    :math:`(x / 255 - \mu_c) / \sigma_c`: the official test transform of the VI-ReID code bases
    (:func:`~vireid_layers.data.build_test_transform` with the default mean and standard deviation, ImageNet's).
    Images are resized one by one on the CPU, as the official loaders do; the result is a float32 batch.

    Accepted images, alone or in a list or tuple (of any mix):

    * a ``PIL.Image.Image`` (any mode PIL converts to RGB);
    * a ``uint8`` tensor :math:`(3, H, W)`, :math:`(1, H, W)` or :math:`(H, W)` (``torchvision.io.decode_image``),
      or a batch :math:`(N, C, H, W)` of them;
    * a ``uint8`` NumPy array :math:`(H, W, 3)` or :math:`(H, W)` (a camera frame in RGB order; convert
      OpenCV's BGR frames with ``frame[..., ::-1]``);
    * a file path (``str`` or ``os.PathLike``), read with :func:`~vireid_layers.data.load_image`.

    Build one for a saved model with :meth:`from_pretrained`, for a model class with :meth:`official`.

    Args:
        height: output height.
        width: output width.
        interpolation: ``"lanczos"`` (the official filter of DEEN, DDAG, AGW), ``"bilinear"`` (MPANet),
            ``"bicubic"`` or ``"nearest"``.
        mean: per-channel mean :math:`\mu` (RGB, on the :math:`[0, 1]` scale); default ImageNet's.
        std: per-channel standard deviation :math:`\sigma`; default ImageNet's.

    Shape:
        - Output: :math:`(N, 3, \text{height}, \text{width})` float32, one row per input image (:math:`N = 1`
          for a single image).

    Examples:
        >>> import PIL.Image
        >>> import torch
        >>> from vireid_layers.data import ImagePreprocessor
        >>> preprocess = ImagePreprocessor.official("DEEN")
        >>> preprocess.height, preprocess.width, preprocess.interpolation
        (384, 144, 'lanczos')
        >>> frame = torch.randint(0, 256, (3, 480, 200), dtype=torch.uint8)
        >>> preprocess([frame, PIL.Image.new("L", (64, 128))]).shape
        torch.Size([2, 3, 384, 144])
    """

    height: int
    width: int
    interpolation: str = "lanczos"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    _transform: v2.Compose = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "height", check_int(self.height, "height"))
        object.__setattr__(self, "width", check_int(self.width, "width"))
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"`interpolation` must be one of {list(_INTERPOLATIONS)}, got {self.interpolation!r}")
        object.__setattr__(self, "mean", _check_floats(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _check_floats(self.std, "std", positive=True))
        transform = v2.Compose(
            [
                v2.ToPILImage(),
                v2.RGB(),
                v2.Resize((self.height, self.width), interpolation=_INTERPOLATIONS[self.interpolation]),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
                v2.ToPureTensor(),
            ]
        )
        object.__setattr__(self, "_transform", transform)

    @classmethod
    def official(cls, model: str) -> ImagePreprocessor:
        """The official test transform of a model (see :data:`OFFICIAL_TEST_INPUTS`).

        Args:
            model: the class name, ``"DEEN"``, ``"AGW"``, ``"DDAG"``, ``"MPANet"`` or ``"MSO"``.

        Raises:
            ValueError: an unknown name (the message lists the known ones).
        """
        if model not in OFFICIAL_TEST_INPUTS:
            raise ValueError(f"`model` must be one of {sorted(OFFICIAL_TEST_INPUTS)}, got {model!r}")
        height, width, interpolation = OFFICIAL_TEST_INPUTS[model]
        return cls(height, width, interpolation=interpolation)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePreprocessor:
        """Rebuild from :meth:`as_dict` (the ``"preprocess"`` entry of a saved model's ``config.json``).

        Raises:
            ValueError: a key is missing or unknown; the message names it.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"`data` must be a mapping, got {type(data).__name__}")
        keys = ("height", "width", "interpolation", "mean", "std")
        for key in data:
            if key not in keys:
                raise ValueError(f"config.json: 'preprocess' has the unknown key {key!r} (known: {list(keys)})")
        for key in ("height", "width"):
            if key not in data:
                raise ValueError(f"config.json: 'preprocess' lacks the key {key!r}")
        return cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in data.items()})

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **kwargs: Any) -> ImagePreprocessor:
        """The preprocessing stored with a model by :func:`~vireid_layers.hub.save_pretrained`.

        Args:
            source: the directory, or a Hugging Face Hub repository id (needs the ``hub`` extra).
            kwargs: ``revision`` / ``cache_dir`` of :func:`~vireid_layers.hub.load_config`.
        """
        from ..hub import load_config  # the hub reads the file (or downloads it); data does not depend on it

        config = load_config(source, **kwargs)
        if "preprocess" not in config:
            raise ValueError(f"config.json of {str(source)!r} lacks the key 'preprocess'")
        return cls.from_dict(config["preprocess"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (lists for mean and std)."""
        return {
            "height": self.height,
            "width": self.width,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def __call__(self, images: Image | Sequence[Image]) -> Tensor:
        """Preprocess one image or a list of images into a :math:`(N, 3, H, W)` float32 batch.

        Raises:
            TypeError: an image of another type, or a tensor / array that is not ``uint8``.
            ValueError: an empty list, or an image of another shape (the message gives the index).
        """
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("`images` must hold at least one image, got an empty sequence")
        out = []
        for index, item in enumerate(items):
            where = "`images`" if len(items) == 1 and not isinstance(images, (list, tuple)) else f"`images[{index}]`"
            out.extend(self._transform(frame) for frame in self._frames(item, where))
        return torch.stack(out)

    def _frames(self, item: Image, where: str) -> list[Any]:
        """The PIL images / CHW uint8 tensors / HWC arrays of one item (a tensor batch gives several)."""
        if isinstance(item, PIL.Image.Image):
            return [item]
        if isinstance(item, (str, os.PathLike)):
            return [load_image(item)]
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise TypeError(f"{where} must be a uint8 array (a camera frame), got dtype {item.dtype}")
            if item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3)):
                return [np.ascontiguousarray(item)]
            raise ValueError(f"{where} must be an array of shape (H, W, 3), (H, W, 1) or (H, W), got {item.shape}")
        if isinstance(item, Tensor):
            return _tensor_frames(item, where)
        raise TypeError(
            f"{where} must be a PIL image, a uint8 tensor or array, or a file path, got {type(item).__name__}"
        )


def _tensor_frames(item: Tensor, where: str) -> list[Tensor]:
    """The :math:`(C, H, W)` uint8 images of a tensor image or batch."""
    if item.dtype != torch.uint8:
        raise TypeError(
            f"{where} must be a uint8 tensor (values 0..255, as decoded from a file or a camera), got dtype "
            f"{item.dtype}; a float tensor is ambiguous (scale 0..1 or 0..255?): convert it first"
        )
    item = item.detach().cpu()
    if item.ndim == 2:
        item = item.unsqueeze(0)
    if item.ndim == 3 and item.shape[0] in (1, 3):
        return [item]
    if item.ndim == 4 and item.shape[1] in (1, 3):
        return list(item)
    raise ValueError(
        f"{where} must be a uint8 tensor of shape (3, H, W), (1, H, W), (H, W) or (N, C, H, W) with C in "
        f"(1, 3), got shape {tuple(item.shape)}"
    )
