"""The renderer: one image of the synthetic dataset from ``(seed, identity, camera, image number)`` alone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...._validation import check_int
from ..sysu import SYSU_CAMERAS
from .cameras import _CAMERAS
from .figure import _draw_person, _sample_pose
from .identities import _identity_attributes
from .scene import _background, _gaussian_blur, _light_visible, _paint_person, _sensor_infrared, _uniform

__all__ = ["SYNTHETIC_GENERATOR_VERSION", "render_synthetic_image"]

#: Version of the generative model. It is stored in the manifest; a change of the renderer that changes any
#: pixel must increase it, so that an old dataset on disk is recognised as different.
SYNTHETIC_GENERATOR_VERSION = 3

_SS = 2  # supersampling factor: figures are drawn at twice the output size and box-filtered down


def _check_image_args(identity: int, camera: int, index: int, seed: int, height: int, width: int) -> None:
    check_int(identity, "identity", minimum=1)
    if identity > 9999:
        raise ValueError(f"`identity` must be at most 9999 (4-digit folders), got {identity!r}")
    check_int(camera, "camera", minimum=1)
    if camera not in _CAMERAS:
        raise ValueError(f"`camera` must be one of {SYSU_CAMERAS}, got {camera!r}")
    check_int(index, "index", minimum=1)
    check_int(seed, "seed", minimum=0)
    check_int(height, "height", minimum=16)
    check_int(width, "width", minimum=8)


def render_synthetic_image(
    identity: int, camera: int, index: int, *, seed: int = 0, height: int = 64, width: int = 32
) -> Image.Image:
    """Render one image of the synthetic dataset, independently of every other image.

    The image depends only on its arguments: its random numbers come from
    ``np.random.default_rng([seed, identity, camera, index])`` and the identity's latent attributes from
    streams keyed by ``(seed, identity)``. :func:`make_synthetic_dataset` writes exactly this image, JPEG
    encoded (quality :data:`SYNTHETIC_JPEG_QUALITY`, no chroma subsampling), to
    ``cam{camera}/{identity:04d}/{index:04d}.jpg``.

    Args:
        identity: person id, ``1..9999``.
        camera: SYSU-MM01 camera number, ``1..6``; cameras 3 and 6 are infrared.
        index: image number within the identity's folder, from 1.
        seed: dataset seed (a non-negative int).
        height: image height in pixels (at least 16).
        width: image width in pixels (at least 8).

    Returns:
        An ``RGB`` image of size ``width x height``; infrared images have three equal channels.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is out of range; the message names it.

    Examples:
        >>> img = render_synthetic_image(7, 3, 1, height=32, width=16)
        >>> img.size, img.mode
        ((16, 32), 'RGB')
        >>> r, g, b = img.split()
        >>> r.tobytes() == g.tobytes() == b.tobytes()  # infrared: grey
        True
    """
    _check_image_args(identity, camera, index, seed, height, width)
    cam = _CAMERAS[camera]
    ident = _identity_attributes(int(seed), int(identity))
    rng = np.random.default_rng([int(seed), int(identity), int(camera), int(index)])
    hc, wc = height * _SS, width * _SS

    pose = _sample_pose(rng, cam, ident, hc, wc)
    labels, geo = _draw_person(ident, pose, hc, wc)
    background = _background(rng, cam, hc, wc)
    person = _paint_person(labels, ident, pose, geo, cam.infrared)
    scene = np.where((labels > 0)[..., None], person, background)
    scene = _sensor_infrared(rng, cam, scene, wc) if cam.infrared else _light_visible(rng, cam, scene, wc)

    image = scene.reshape(height, _SS, width, _SS, -1).mean(axis=(1, 3))  # box-filter the supersampled canvas
    image = _gaussian_blur(image, _uniform(rng, cam.blur))
    sigma = _uniform(rng, cam.noise)
    if cam.infrared:  # sensor noise plus column (fixed-pattern-like) noise, one grey channel
        image = image + rng.normal(0.0, sigma, size=image.shape) + rng.normal(0.0, sigma / 2, size=(1, width, 1))
    else:
        dark = 1.0 + 3.0 * max(0.0, 0.35 - float(image.mean()))  # noisier when the image is dark
        image = image + rng.normal(0.0, sigma * dark, size=image.shape)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if cam.infrared:
        pixels = np.repeat(pixels, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels))
