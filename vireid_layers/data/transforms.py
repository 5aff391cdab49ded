r"""Training augmentations of the VI-ReID methods on ``torchvision.transforms.v2``, and their official pipelines.

Building blocks (all operate on a float :math:`(C, H, W)` tensor *after* normalisation, as in the official
code, and draw their randomness from torch, optionally from a given :class:`torch.Generator`):

* :class:`RandomErasingFill`: random erasing :cite:`zhong2020erasing` as the VI-ReID code bases implement it
  (area fraction :math:`U(s_l, s_h)`, aspect ratio :math:`U(r_1, r_2)`, up to 100 attempts, a constant fill
  per channel);
* :class:`ChannelRandomErasing`: CAJ's :cite:`ye2021caj` erasing, the former with CIFAR-10 means as fill;
* :class:`ChannelAdapGray` and :class:`ChannelExchange`: CAJ's channel augmentations.

Official training pipelines, built by name with :func:`build_train_transform`. Every pipeline accepts a PIL
image or a ``uint8`` tensor :math:`(C, H, W)` (grey images become three identical channels), and returns a
``float32`` tensor :math:`(3, H, W)` normalised with the ImageNet mean and standard deviation.

========================== ========= =====================================================================
name                       H × W     steps after *load* (to PIL, to RGB, Lanczos resize to H × W)
========================== ========= =====================================================================
``deen_sysu``              384 × 144 Pad(10) → RandomGrayscale(0.5) → RandomCrop → HFlip(0.5) → ToTensor →
                                     Normalize → RandomErasingFill(0.5, (0.2, 0.8), fill ImageNet mean)
``deen_regdb``             384 × 144 as ``deen_sysu``, erasing scale (0.02, 0.4)
``deen_llcm``              384 × 144 as ``deen_regdb``
``ddag``, ``agw``          288 × 144 Pad(10) → RandomCrop → HFlip(0.5) → ToTensor → Normalize
``agw_llcm``               288 × 144 ``agw`` → RandomErasingFill(0.5, (0.02, 0.4), fill 0)
``caj_visible``            288 × 144 ``agw`` → ChannelRandomErasing(0.5)
``caj_visible_exchange``   288 × 144 ``agw`` → ChannelRandomErasing(0.5) → ChannelExchange(gray=2)
``caj_infrared``           288 × 144 ``agw`` → ChannelRandomErasing(0.5) → ChannelAdapGray(0.5)
``mso``                    288 × 144 as ``agw`` (MSO has no official code: the paper's random crop and flip, with
                                     the pad of the AGW code it builds on)
``mpanet``                 384 × 128 *no Lanczos resize*: to PIL, to RGB, Resize (bilinear) → HFlip(0.5) →
                                     Pad(10, fill 127) → RandomCrop → ToTensor → Normalize → torchvision
                                     ``RandomErasing()`` (p 0.5, scale (0.02, 0.33), log-uniform ratio
                                     (0.3, 3.3), fill 0)
``light``                  64 × 32   *not official*, for tiny images where a 10-pixel pad and crop would be
                                     huge (the quick synthetic runs of the examples): ToImage → RGB → Resize
                                     (bilinear, antialiased) → HFlip(0.5) → ToTensor → Normalize
``light_gray``             64 × 32   *not official*: ``light`` with RandomGrayscale(0.5) (DEEN's) before the flip
========================== ========= =====================================================================

The *load* step stands in for the official data loaders, which resize every image to the network input with
PIL's Lanczos filter (``Image.ANTIALIAS``) when the dataset is built; the 10-pixel pad followed by a crop to
the same size is then a random translation of at most 10 pixels. ToTensor is ``ToImage`` followed by
``ToDtype(float32, scale=True)``.

The pipelines draw their randomness from torch's global generator, which ``DataLoader`` seeds differently in
every worker; do not give a :class:`torch.Generator` to a transform used inside ``DataLoader`` workers, since
each worker would receive a copy of it in the same state and the workers would then draw identical
augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from .._validation import check_int, check_probability

__all__ = [
    "CIFAR_MEAN",
    "GRAY_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAIN_PIPELINES",
    "ChannelAdapGray",
    "ChannelExchange",
    "ChannelRandomErasing",
    "RandomErasingFill",
    "TrainPipeline",
    "build_test_transform",
    "build_train_transform",
    "random_erasing_params",
    "register_pipeline",
    "replicate_channel",
    "weighted_gray",
]

#: ImageNet channel means (RGB), used by ``Normalize`` and as DEEN's erasing fill.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: CIFAR-10 channel means, the fill of CAJ's ``ChannelRandomErasing`` (and of the AGW ``random_erasing.py``).
CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: Weights of the grey image of CAJ's channel augmentations (ITU-R 601 luma, as written in the code).
GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.5870, 0.1140)


# --------------------------------------------------------------------------------------------------- checks


def _check_range(value: object, name: str, *, low: float, high: float | None = None) -> tuple[float, float]:
    """Check a ``(min, max)`` pair with ``low <= min <= max`` (``<= high`` when given)."""
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"`{name}` must be a pair of numbers (min, max), got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    upper = "" if high is None else f" <= {high}"
    if not (low <= lo <= hi and (high is None or hi <= high)) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"`{name}` must satisfy {low} <= min <= max{upper}, got {value!r}")
    return lo, hi


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _is_plain_tensor(x: Any) -> bool:
    return isinstance(x, Tensor) and not isinstance(x, tv_tensors.TVTensor)


def _reject_pil(flat_inputs: list[Any], name: str) -> None:
    if any(isinstance(x, PIL.Image.Image) for x in flat_inputs):
        raise TypeError(
            f"{name} operates on normalised image tensors (C, H, W), got a PIL image: place it after "
            "ToImage/ToDtype/Normalize in the pipeline, as the official code does"
        )


def _check_three_channels(image: Tensor, name: str) -> None:
    if image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"{name} needs a 3-channel image of shape (..., 3, H, W), got shape {tuple(image.shape)}")


# ----------------------------------------------------------------------------------------------- functional


def random_erasing_params(
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int] | None:
    r"""Draw the rectangle of the official random erasing :cite:`zhong2020erasing` for an :math:`H \times W` image.

    Each attempt draws an area :math:`A = U(s_l, s_h) \cdot HW` and an aspect ratio :math:`r = U(r_1, r_2)`
    and sets

    .. math::

       h = \operatorname{round}\big(\sqrt{A r}\big), \qquad w = \operatorname{round}\big(\sqrt{A / r}\big);

    the first attempt with :math:`h < H` and :math:`w < W` is kept, and its top-left corner is drawn uniformly
    in :math:`\{0, \dots, H - h\} \times \{0, \dots, W - w\}`. This is the loop of ``random_erasing.py`` of
    DEEN, AGW and CAJ (round half to even, as Python's ``round``). It differs from
    :class:`torchvision.transforms.v2.RandomErasing`, which draws the ratio log-uniformly, makes 10 attempts
    and requires :math:`h \le H`, :math:`w \le W`. All attempts are drawn at once from torch; the
    distribution is the official one, the random stream is not (the official code uses Python's ``random``).

    Args:
        height: image height :math:`H`.
        width: image width :math:`W`.
        scale: :math:`(s_l, s_h)`, range of the erased fraction of the image area.
        ratio: :math:`(r_1, r_2)`, range of the aspect ratio :math:`h / w` (official: ``(0.3, 1 / 0.3)``).
        attempts: number of attempts (official: 100).
        generator: source of randomness; default: torch's global generator.

    Returns:
        ``(top, left, h, w)``, or ``None`` when no attempt fits in the image.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> top, left, h, w = random_erasing_params(288, 144, scale=(0.02, 0.4), generator=g)
        >>> 0 <= top <= 288 - h and 0 <= left <= 144 - w
        True
    """
    lo, hi = _check_range(scale, "scale", low=0.0, high=1.0)
    r_lo, r_hi = _check_range(ratio, "ratio", low=0.0)
    if r_lo <= 0:
        raise ValueError(f"`ratio` must be positive, got {ratio!r}")
    height = check_int(height, "height")
    width = check_int(width, "width")
    attempts = check_int(attempts, "attempts")
    u = torch.rand(2, attempts, generator=generator, dtype=torch.float64)
    area = height * width * (lo + (hi - lo) * u[0])
    aspect = r_lo + (r_hi - r_lo) * u[1]
    h = torch.round(torch.sqrt(area * aspect))
    w = torch.round(torch.sqrt(area / aspect))
    fits = (h < height) & (w < width)
    if not bool(fits.any()):
        return None
    first = int(torch.argmax(fits.to(torch.uint8)))  # the first attempt that fits
    h_box, w_box = int(h[first]), int(w[first])
    top = int(torch.randint(0, height - h_box + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - w_box + 1, (1,), generator=generator))
    return top, left, h_box, w_box


def replicate_channel(image: Tensor, channel: int) -> Tensor:
    """Copy one channel of an RGB image into all three (CAJ's channel-exchange branches 0, 1, 2).

    Args:
        image: :math:`(*, 3, H, W)` image.
        channel: 0 (R), 1 (G) or 2 (B).

    Returns:
        A new tensor of the same shape, type and dtype whose three channels equal ``image[..., channel, :, :]``.

    Examples:
        >>> replicate_channel(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1), 1).flatten().tolist()
        [2.0, 2.0, 2.0]
    """
    _check_three_channels(image, "replicate_channel")
    if channel not in (0, 1, 2):
        raise ValueError(f"`channel` must be 0, 1 or 2, got {channel!r}")
    out = image.narrow(-3, channel, 1).expand(image.shape).clone()
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


def weighted_gray(image: Tensor) -> Tensor:
    r"""Replace the three channels by the grey value :math:`0.2989 R + 0.5870 G + 0.1140 B` (CAJ's grey branch).

    The weights apply to the channels as they are; in the CAJ pipelines those are the *normalised* channels.
    Integer images are computed in ``float32`` and rounded back to their dtype.

    Args:
        image: :math:`(*, 3, H, W)` image.

    Returns:
        A new tensor of the same shape, type and dtype with three identical channels.

    Examples:
        >>> weighted_gray(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)).flatten().tolist()
        [0.2989000082015991, 0.2989000082015991, 0.2989000082015991]
    """
    _check_three_channels(image, "weighted_gray")
    x = image.as_subclass(Tensor)
    if not x.is_floating_point():
        x = x.float()
    r, g, b = x.unbind(-3)
    gray = GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b  # the official expression and order
    if not image.is_floating_point():
        info = torch.iinfo(image.dtype)
        gray = gray.round().clamp(info.min, info.max).to(image.dtype)
    out = gray.unsqueeze(-3).expand(image.shape).clone()
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


# -------------------------------------------------------------------------------------------------- modules


class _TensorTransform(v2.Transform):
    """A v2 transform of image tensors only: plain tensors and ``tv_tensors.Image`` / ``Video``; PIL is refused."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Video, _is_plain_tensor)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        _reject_pil(flat_inputs, type(self).__name__)


class RandomErasingFill(_TensorTransform):
    r"""Random erasing :cite:`zhong2020erasing` as DEEN, AGW and CAJ implement it: a box filled with constants.

    With probability ``p`` a rectangle drawn by :func:`random_erasing_params` (area fraction
    :math:`U(s_l, s_h)`, aspect ratio :math:`U(r_1, r_2)`, up to ``attempts`` tries) is filled with ``fill[c]``
    in channel :math:`c`; otherwise, or when no attempt fits, the image is returned unchanged. The fill is
    written into the tensor as it is, so in the official pipelines (erasing after ``Normalize``) DEEN's fill
    ``(0.485, 0.456, 0.406)`` lands in *normalised* space (it is not the mean colour). A batch
    :math:`(*, C, H, W)` receives the same rectangle in every image, like torchvision's transform; apply it per
    image (in the dataset) for independent rectangles.

    Per-dataset ranges of DEEN :cite:`zhang2023deen`: SYSU-MM01 :math:`(0.2, 0.8)`, RegDB and LLCM
    :math:`(0.02, 0.4)`; always :math:`r_1 = 0.3`, ``p = 0.5``.

    Args:
        p: probability of erasing.
        scale: :math:`(s_l, s_h)`, range of the erased area fraction.
        ratio: :math:`(r_1, r_2)`, range of the aspect ratio :math:`h / w`.
        fill: one value for every channel, or one per channel (a 1-channel image takes ``fill[0]``, as in the
            official code).
        attempts: number of attempts to find a rectangle that fits.
        generator: source of randomness; default: torch's global generator (see the module notes on
            ``DataLoader`` workers).

    Shape:
        - Input: :math:`(*, C, H, W)` floating-point tensor (plain or ``tv_tensors.Image``).
        - Output: same shape, type and dtype (a new tensor).

    Examples:
        >>> erase = RandomErasingFill(1.0, scale=(0.2, 0.8), generator=torch.Generator().manual_seed(0))
        >>> out = erase(torch.full((3, 24, 12), 5.0))
        >>> out.shape, bool((out != 5.0).any())
        (torch.Size([3, 24, 12]), True)
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.4),
        ratio: tuple[float, float] = (0.3, 1 / 0.3),
        fill: float | Sequence[float] = IMAGENET_MEAN,
        attempts: int = 100,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.p = check_probability(p, "p")
        self.scale = _check_range(scale, "scale", low=0.0, high=1.0)
        self.ratio = _check_range(ratio, "ratio", low=0.0)
        if self.ratio[0] <= 0:
            raise ValueError(f"`ratio` must be positive, got {ratio!r}")
        if isinstance(fill, (int, float)) and not isinstance(fill, bool):
            self.fill: tuple[float, ...] = (float(fill),)
        elif isinstance(fill, Sequence) and len(fill) > 0 and all(isinstance(v, (int, float)) for v in fill):
            self.fill = tuple(float(v) for v in fill)
        else:
            raise TypeError(f"`fill` must be a number or a non-empty sequence of numbers, got {fill!r}")
        self.attempts = check_int(attempts, "attempts")
        self.generator = _check_generator(generator)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw whether to erase (probability ``p``) and the rectangle, ``{"box": (top, left, h, w) | None}``."""
        if not flat_inputs or float(torch.rand(1, generator=self.generator)) >= self.p:
            return {"box": None}
        height, width = flat_inputs[0].shape[-2:]
        box = random_erasing_params(
            int(height),
            int(width),
            scale=self.scale,
            ratio=self.ratio,
            attempts=self.attempts,
            generator=self.generator,
        )
        return {"box": box}

    def _fill_values(self, image: Tensor) -> Tensor:
        channels = image.shape[-3]
        if len(self.fill) == 1:
            values = self.fill * channels
        elif channels == 1:
            values = self.fill[:1]
        elif len(self.fill) == channels:
            values = self.fill
        else:
            raise ValueError(f"`fill` has {len(self.fill)} values for an image with {channels} channels")
        return torch.tensor(values, dtype=image.dtype, device=image.device).view(channels, 1, 1)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Fill the drawn rectangle of a copy of ``inpt``; return ``inpt`` itself when there is none."""
        if inpt.ndim < 3:
            raise ValueError(f"{type(self).__name__} needs an image of shape (..., C, H, W), got {tuple(inpt.shape)}")
        if not inpt.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} needs a floating-point image (after ToDtype/Normalize), got {inpt.dtype}"
            )
        fill = self._fill_values(inpt)
        box = params["box"]
        if box is None:
            return inpt
        top, left, h, w = box
        out = inpt.clone()
        out[..., top : top + h, left : left + w] = fill
        return out

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        generator = ", generator=<torch.Generator>" if self.generator is not None else ""
        return (
            f"p={self.p}, scale={self.scale}, ratio=({self.ratio[0]}, {self.ratio[1]:.4g}), fill={self.fill}, "
            f"attempts={self.attempts}{generator}"
        )


class ChannelRandomErasing(RandomErasingFill):
    """CAJ's ``ChannelRandomErasing`` :cite:`ye2021caj`: :class:`RandomErasingFill` filling with CIFAR-10 means.

    Despite its name it erases one rectangle in all channels; the fill ``(0.4914, 0.4822, 0.4465)`` is
    written into the normalised tensor. Defaults are CAJ's: ``p = 0.5``, scale :math:`(0.02, 0.4)`, ratio
    :math:`(0.3, 1/0.3)`, 100 attempts.

    Args:
        p: probability of erasing.
        scale: range of the erased area fraction.
        ratio: range of the aspect ratio.
        fill: fill per channel.
        attempts: number of attempts.
        generator: source of randomness; default: torch's global generator.

    Examples:
        >>> ChannelRandomErasing()
        ChannelRandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.333), fill=(0.4914, 0.4822, 0.4465), attempts=100)
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.4),
        ratio: tuple[float, float] = (0.3, 1 / 0.3),
        fill: float | Sequence[float] = CIFAR_MEAN,
        attempts: int = 100,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, scale=scale, ratio=ratio, fill=fill, attempts=attempts, generator=generator)


class ChannelAdapGray(_TensorTransform):
    r"""CAJ's ``ChannelAdapGray`` :cite:`ye2021caj`: replicate a random channel, or (sometimes) turn grey.

    Draws :math:`i` uniformly in :math:`\{0, 1, 2, 3\}`. For :math:`i \in \{0, 1, 2\}` every channel becomes
    channel :math:`i` (:func:`replicate_channel`); for :math:`i = 3` the image becomes the weighted grey
    :math:`0.2989 R + 0.5870 G + 0.1140 B` (:func:`weighted_gray`) with probability ``p`` and stays unchanged
    otherwise. With ``p = 0.5``: R, G, B replicated 25 % each, grey 12.5 %, unchanged 12.5 %. CAJ applies it
    to the infrared images, after normalisation and :class:`ChannelRandomErasing`.

    Args:
        p: probability of the grey image in the fourth branch (not of the transform as a whole: the official
            ``probability`` check at the top is commented out).
        generator: source of randomness; default: torch's global generator.

    Shape:
        - Input: :math:`(*, 3, H, W)` tensor (a batch gets one draw for all its images).
        - Output: same shape, type and dtype.

    Examples:
        >>> t = ChannelAdapGray(generator=torch.Generator().manual_seed(0))
        >>> out = t(torch.randn(3, 8, 4))
        >>> out.shape
        torch.Size([3, 8, 4])
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = check_probability(p, "p")
        self.generator = _check_generator(generator)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the branch (0-3) and, for branch 3, whether to turn grey."""
        branch = int(torch.randint(0, 4, (1,), generator=self.generator))
        gray = branch == 3 and float(torch.rand(1, generator=self.generator)) < self.p
        return {"branch": branch, "gray": gray}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the drawn branch."""
        _check_three_channels(inpt, type(self).__name__)
        if params["branch"] < 3:
            return replicate_channel(inpt, params["branch"])
        return weighted_gray(inpt) if params["gray"] else inpt

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"p={self.p}" + (", generator=<torch.Generator>" if self.generator is not None else "")


class ChannelExchange(_TensorTransform):
    r"""CAJ's ``ChannelExchange`` :cite:`ye2021caj`: replicate a random channel, or turn grey.

    Draws :math:`i` uniformly in :math:`\{0, \dots, \mathrm{gray}\}`: for :math:`i \le 2` every channel
    becomes channel :math:`i`, for :math:`i \ge 3` the image becomes the weighted grey
    :math:`0.2989 R + 0.5870 G + 0.1140 B`. With the official ``gray = 2`` the grey branch is unreachable
    and each channel is replicated with probability 1/3; ``gray = 3`` gives 1/4 each. CAJ applies it to a
    second copy of the visible image.

    Args:
        gray: upper bound (inclusive) of the draw; ``>= 3`` enables the grey branch.
        generator: source of randomness; default: torch's global generator.

    Shape:
        - Input: :math:`(*, 3, H, W)` tensor (a batch gets one draw for all its images).
        - Output: same shape, type and dtype.

    Examples:
        >>> t = ChannelExchange(gray=2, generator=torch.Generator().manual_seed(0))
        >>> out = t(torch.randn(3, 8, 4))
        >>> bool((out[0] == out[1]).all() and (out[1] == out[2]).all())
        True
    """

    def __init__(self, gray: int = 2, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(gray, bool) or not isinstance(gray, int):
            raise TypeError(f"`gray` must be an int, got {type(gray).__name__} {gray!r}")
        if gray < 0:
            raise ValueError(f"`gray` must be >= 0, got {gray}")
        self.gray = gray
        self.generator = _check_generator(generator)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the branch, uniform in ``0..gray``."""
        return {"branch": int(torch.randint(0, self.gray + 1, (1,), generator=self.generator))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the drawn branch."""
        _check_three_channels(inpt, type(self).__name__)
        if params["branch"] < 3:
            return replicate_channel(inpt, params["branch"])
        return weighted_gray(inpt)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        return f"gray={self.gray}" + (", generator=<torch.Generator>" if self.generator is not None else "")


# ------------------------------------------------------------------------------------------------ pipelines


def _load(height: int, width: int) -> list[Any]:
    """To PIL, to RGB, Lanczos resize: what the official loaders do to every image when building the dataset."""
    return [v2.ToPILImage(), v2.RGB(), v2.Resize((height, width), interpolation=InterpolationMode.LANCZOS)]


def _to_normalized_tensor() -> list[Any]:
    """``ToTensor`` then ImageNet ``Normalize``."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _pad_crop_flip(height: int, width: int) -> list[Any]:
    return [v2.Pad(10), v2.RandomCrop((height, width)), v2.RandomHorizontalFlip(0.5)]


def _deen(scale: tuple[float, float]) -> Callable[[int, int], v2.Compose]:
    def build(height: int, width: int) -> v2.Compose:
        return v2.Compose(
            [
                *_load(height, width),
                v2.Pad(10),
                v2.RandomGrayscale(0.5),
                v2.RandomCrop((height, width)),
                v2.RandomHorizontalFlip(0.5),
                *_to_normalized_tensor(),
                RandomErasingFill(0.5, scale=scale, ratio=(0.3, 1 / 0.3), fill=IMAGENET_MEAN),
                v2.ToPureTensor(),
            ]
        )

    return build


def _agw(*extra: Callable[[], Any]) -> Callable[[int, int], v2.Compose]:
    def build(height: int, width: int) -> v2.Compose:
        return v2.Compose(
            [
                *_load(height, width),
                *_pad_crop_flip(height, width),
                *_to_normalized_tensor(),
                *(make() for make in extra),
                v2.ToPureTensor(),
            ]
        )

    return build


def _mpanet(height: int, width: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.ToPILImage(),
            v2.RGB(),
            v2.Resize((height, width), interpolation=InterpolationMode.BILINEAR),
            v2.RandomHorizontalFlip(0.5),
            v2.Pad(10, fill=127),
            v2.RandomCrop((height, width)),
            *_to_normalized_tensor(),
            v2.RandomErasing(),
            v2.ToPureTensor(),
        ]
    )


def _light(*, gray: bool) -> Callable[[int, int], v2.Compose]:
    """Resize (bilinear, antialiased), optionally grey with probability 0.5, flip: for tiny images."""

    def build(height: int, width: int) -> v2.Compose:
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RGB(),
                v2.Resize((height, width), antialias=True),
                *([v2.RandomGrayscale(0.5)] if gray else []),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                v2.ToPureTensor(),
            ]
        )

    return build


@dataclass(frozen=True)
class TrainPipeline:
    """A named training pipeline: its builder, its official input size and a one-line description.

    Attributes:
        build: ``build(height, width)`` returns the transform.
        height: official input height.
        width: official input width.
        description: the steps, for listings and error messages.
    """

    build: Callable[[int, int], Callable[[Any], Tensor]]
    height: int
    width: int
    description: str = ""


#: The official training pipelines by name; :func:`register_pipeline` adds more. See the module docstring.
TRAIN_PIPELINES: dict[str, TrainPipeline] = {
    "deen_sysu": TrainPipeline(
        _deen((0.2, 0.8)), 384, 144, "DEEN SYSU-MM01: pad, grayscale 0.5, crop, flip, erasing (0.2, 0.8)"
    ),
    "deen_regdb": TrainPipeline(
        _deen((0.02, 0.4)), 384, 144, "DEEN RegDB: pad, grayscale 0.5, crop, flip, erasing (0.02, 0.4)"
    ),
    "deen_llcm": TrainPipeline(
        _deen((0.02, 0.4)), 384, 144, "DEEN LLCM: pad, grayscale 0.5, crop, flip, erasing (0.02, 0.4)"
    ),
    "ddag": TrainPipeline(_agw(), 288, 144, "DDAG: pad, crop, flip"),
    "agw": TrainPipeline(_agw(), 288, 144, "AGW: pad, crop, flip"),
    "agw_llcm": TrainPipeline(
        _agw(lambda: RandomErasingFill(0.5, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), fill=0.0)),
        288,
        144,
        "AGW of the LLCM repository: pad, crop, flip, erasing (0.02, 0.4) fill 0",
    ),
    "caj_visible": TrainPipeline(
        _agw(ChannelRandomErasing), 288, 144, "CAJ visible: pad, crop, flip, channel random erasing"
    ),
    "caj_visible_exchange": TrainPipeline(
        _agw(ChannelRandomErasing, ChannelExchange),
        288,
        144,
        "CAJ visible copy: pad, crop, flip, channel random erasing, channel exchange (gray=2)",
    ),
    "caj_infrared": TrainPipeline(
        _agw(ChannelRandomErasing, ChannelAdapGray),
        288,
        144,
        "CAJ infrared: pad, crop, flip, channel random erasing, channel-adaptive grey",
    ),
    "mso": TrainPipeline(_agw(), 288, 144, "MSO (no official code; its AGW base's): pad, crop, flip"),
    "mpanet": TrainPipeline(
        _mpanet, 384, 128, "MPANet: resize, flip, pad (fill 127), crop, torchvision random erasing"
    ),
}


def register_pipeline(
    name: str, build: Callable[[int, int], Callable[[Any], Tensor]], *, height: int, width: int, description: str = ""
) -> None:
    """Add a training pipeline to :data:`TRAIN_PIPELINES`, so :func:`build_train_transform` can build it by name.

    Args:
        name: the new name.
        build: ``build(height, width)`` returning the transform.
        height: default input height.
        width: default input width.
        description: one line listing the steps.

    Raises:
        ValueError: ``name`` is already registered.
        TypeError: ``build`` is not callable.

    Examples:
        >>> register_pipeline("deen_sysu", TRAIN_PIPELINES["deen_sysu"].build, height=384, width=144)
        Traceback (most recent call last):
        ...
        ValueError: training pipeline 'deen_sysu' is already registered
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if name in TRAIN_PIPELINES:
        raise ValueError(f"training pipeline {name!r} is already registered")
    if not callable(build):
        raise TypeError(f"`build` must be callable, got {type(build).__name__}")
    TRAIN_PIPELINES[name] = TrainPipeline(build, check_int(height, "height"), check_int(width, "width"), description)


register_pipeline("light", _light(gray=False), height=64, width=32, description="tiny images: resize (bilinear), flip")
register_pipeline(
    "light_gray",
    _light(gray=True),
    height=64,
    width=32,
    description="tiny images: resize (bilinear), grayscale 0.5 (as DEEN), flip",
)


def build_train_transform(name: str, *, height: int | None = None, width: int | None = None) -> Callable[[Any], Tensor]:
    """Build an official training pipeline by name (see the table of the module docstring).

    Args:
        name: one of :data:`TRAIN_PIPELINES` (``"deen_sysu"``, ``"deen_regdb"``, ``"deen_llcm"``, ``"ddag"``,
            ``"agw"``, ``"agw_llcm"``, ``"caj_visible"``, ``"caj_visible_exchange"``, ``"caj_infrared"``,
            ``"mso"``, ``"mpanet"``; ``"light"`` and ``"light_gray"`` for tiny images).
        height: output height; default: the pipeline's official one.
        width: output width; default: the pipeline's official one.

    Returns:
        A ``v2.Compose`` mapping a PIL image or ``uint8`` tensor to a normalised ``float32`` :math:`(3, H, W)`
        tensor.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered names) or non-positive size.

    Examples:
        >>> import PIL.Image
        >>> transform = build_train_transform("deen_sysu")
        >>> transform(PIL.Image.new("RGB", (64, 128))).shape
        torch.Size([3, 384, 144])
    """
    if name not in TRAIN_PIPELINES:
        raise ValueError(f"unknown training pipeline {name!r}; registered pipelines: {sorted(TRAIN_PIPELINES)}")
    spec = TRAIN_PIPELINES[name]
    height = spec.height if height is None else check_int(height, "height")
    width = spec.width if width is None else check_int(width, "width")
    return spec.build(height, width)


def build_test_transform(
    height: int, width: int, *, interpolation: InterpolationMode = InterpolationMode.LANCZOS
) -> v2.Compose:
    """The official test transform: to PIL, to RGB, resize, ToTensor, ImageNet normalisation.

    DEEN, DDAG, AGW and CAJ resize with Lanczos (``Image.ANTIALIAS``) when they load the test images; MPANet
    resizes bilinearly (``interpolation=InterpolationMode.BILINEAR``).

    Args:
        height: output height (DEEN 384, DDAG/AGW/CAJ 288, MPANet 384 or 256 on RegDB).
        width: output width (144; MPANet 128).
        interpolation: resampling filter of the resize.

    Returns:
        A ``v2.Compose`` mapping a PIL image or ``uint8`` tensor to a normalised ``float32`` :math:`(3, H, W)`
        tensor.

    Examples:
        >>> import PIL.Image
        >>> build_test_transform(288, 144)(PIL.Image.new("L", (50, 100))).shape
        torch.Size([3, 288, 144])
    """
    height = check_int(height, "height")
    width = check_int(width, "width")
    return v2.Compose(
        [
            v2.ToPILImage(),
            v2.RGB(),
            v2.Resize((height, width), interpolation=interpolation),
            *_to_normalized_tensor(),
            v2.ToPureTensor(),
        ]
    )
