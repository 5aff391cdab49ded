"""What every figure of :mod:`vireid_layers.visualize` shares: the lazy matplotlib import and image conversion.

matplotlib is an optional dependency (the ``viz`` extra); it is imported only when a figure is drawn, so the
computations of the package (projections, pair distances, ranked lists, activation maps) run without it.
Figures are plain :class:`matplotlib.figure.Figure` objects, not registered with ``pyplot``: nothing is kept
alive by a global figure manager and no interactive backend is needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor
"""An image to draw: a file path, a PIL image, an :math:`(H, W)` / :math:`(H, W, 3)` array or a :math:`(3, H, W)`
/ :math:`(H, W)` tensor; floating-point values in :math:`[0, 1]`, integers in :math:`[0, 255]`."""

#: Frame colour of a gallery image of the query's identity.
MATCH_COLOR = "tab:green"
#: Frame colour of a gallery image of another identity.
NON_MATCH_COLOR = "tab:red"
#: Frame colour of a query image.
QUERY_COLOR = "tab:blue"
#: Marker of each modality in embedding maps: visible circles, infrared triangles.
MODALITY_MARKERS = {0: "o", 1: "^"}
MODALITY_NAMES = {0: "visible", 1: "infrared"}
_RANGE_SLACK = 1e-3  # floating-point display images may exceed [0, 1] by this much (resampling overshoot)


def new_figure(width: float, height: float) -> Figure:
    """A :class:`~matplotlib.figure.Figure` of ``width`` x ``height`` inches, outside ``pyplot``.

    Raises:
        ImportError: matplotlib is not installed; the message says how to install it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "vireid_layers.visualize draws with matplotlib, which is not installed: "
            "pip install 'vireid-layers[viz]' (or pip install matplotlib)"
        ) from err
    return Figure(figsize=(width, height))


def frame(ax: Axes, color: str, width: float = 3.0) -> None:
    """Hide the ticks of an image axes and draw its four spines as a frame of ``color``."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _as_array(image: ImageLike, name: str) -> np.ndarray:
    """A path, PIL image or tensor as a numpy array (:math:`(3, H, W)` tensors become :math:`(H, W, 3)`)."""
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, Tensor):
        array = image.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.permute(1, 2, 0)
        image = array.float().numpy() if array.is_floating_point() else array.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"`{name}` must be a path, a PIL image, a numpy array or a torch.Tensor, got {type(image).__name__}"
        )
    return image


def as_display_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """Convert an image to a float :math:`(H, W, 3)` array in :math:`[0, 1]` for ``imshow``.

    Args:
        image: see :data:`ImageLike`.
        name: the argument's name, for error messages.

    Raises:
        TypeError: an unsupported type.
        ValueError: a bad shape, a non-finite value, or a floating-point image outside :math:`[0, 1]` (a
            normalised network input rather than a displayable image).
    """
    image = _as_array(image, name)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`{name}` must have shape (H, W), (H, W, 3) or (3, H, W), got shape {image.shape}")
    if np.issubdtype(image.dtype, np.integer) or image.dtype == np.bool_:
        return image.astype(np.float32) / (255.0 if image.dtype != np.bool_ else 1.0)
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"`{name}` holds non-finite values")
    low, high = float(image.min()), float(image.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise ValueError(
            f"`{name}` must hold values in [0, 1] (a displayable image, not a normalised network input), got "
            f"values in [{low:.3g}, {high:.3g}]"
        )
    return np.clip(image, 0.0, 1.0)


def identity_colors(identities: Tensor) -> tuple[np.ndarray, Tensor]:
    """One RGBA colour per distinct identity and the colour index of every sample.

    Up to 10 identities take ``tab10``, up to 20 ``tab20``; more are spread over the hues of ``hsv``.

    Returns:
        ``(palette, index)``: a :math:`(U, 4)` array and the :math:`(N,)` position of each sample's identity.
    """
    from matplotlib import colormaps

    unique, index = torch.unique(identities, return_inverse=True)
    count = max(unique.numel(), 1)
    if count <= 10:
        palette = colormaps["tab10"](np.arange(count))
    elif count <= 20:
        palette = colormaps["tab20"](np.arange(count))
    else:
        palette = colormaps["hsv"](np.arange(count) / count)
    return np.asarray(palette), index


def spread(count: int, chosen: int | Sequence[int] | Tensor, name: str) -> list[int]:
    """Positions to show: ``chosen`` itself (validated), or that many positions spread evenly over ``count``."""
    if isinstance(chosen, Tensor):
        chosen = chosen.reshape(-1).tolist()
    if isinstance(chosen, bool):
        raise TypeError(f"`{name}` must be an int or a sequence of ints, got bool {chosen!r}")
    if isinstance(chosen, int):
        if chosen < 1:
            raise ValueError(f"`{name}` must be >= 1, got {chosen}")
        n = min(chosen, count)
        return sorted({round(i * (count - 1) / max(n - 1, 1)) for i in range(n)})
    positions = [int(p) for p in chosen]
    bad = [p for p in positions if not 0 <= p < count]
    if not positions or bad:
        raise ValueError(f"`{name}` must hold positions in [0, {count}), got {list(chosen)!r}")
    return positions


def check_features(features: Any, name: str = "features") -> Tensor:
    """A floating-point :math:`(N, D)` tensor with finite values, as float64 on the CPU (copied)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (N, D), got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, D), got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {features.dtype}")
    out = features.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"`{name}` holds non-finite values (NaN or inf): nothing meaningful can be drawn")
    return out


def check_vector(values: Any, n: int, name: str) -> Tensor:
    """An integer :math:`(N,)` tensor (a list is accepted), on the CPU."""
    if not isinstance(values, Tensor):
        try:
            values = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`{name}` must be an integer tensor of shape ({n},), got {type(values).__name__}") from err
    if values.is_floating_point() or values.is_complex():
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {values.dtype}")
    if values.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got shape {tuple(values.shape)}")
    return values.detach().cpu().long()


def check_modality_vector(values: Any, n: int, name: str = "modalities") -> Tensor:
    """:func:`check_vector` holding only 0 (visible) and 1 (infrared)."""
    out = check_vector(values, n, name)
    bad = sorted({int(v) for v in out[(out != 0) & (out != 1)].tolist()})
    if bad:
        raise ValueError(f"`{name}` must hold only 0 (visible) and 1 (infrared), got values {bad}")
    return out
