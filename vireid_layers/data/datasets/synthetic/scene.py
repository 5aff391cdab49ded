"""Painting and imaging: the person's colours or temperatures, the camera's background, light and sensor.

Visible cameras apply an illumination gain, a light colour, a side gradient and sometimes low light
(:func:`_light_visible`); infrared cameras apply an automatic gain over the scene's temperatures
(:func:`_sensor_infrared`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .cameras import Box, Range, _Camera
from .figure import _Pose
from .identities import _LOWER, _PATTERNS, _UPPER, _hsv, _Identity


@lru_cache(maxsize=16)
def _grid(hc: int, wc: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float64) + 0.5
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _pattern_mask(kind: int, period: float, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Where a garment shows its second colour/material; ``u, v`` are body coordinates in person heights."""
    name = _PATTERNS[kind]
    if name == "plain":
        return None
    iu, iv = np.floor(u / period), np.floor(v / period)
    if name == "hstripes":
        return iv % 2 == 1
    if name == "vstripes":
        return iu % 2 == 1
    if name == "checks":
        return (iu + iv) % 2 == 1
    fu, fv = u / period - iu - 0.5, v / period - iv - 0.5  # dots
    return fu * fu + fv * fv < 0.3**2


def _paint_person(
    labels: np.ndarray, ident: _Identity, pose: _Pose, geo: dict[str, float], infrared: bool
) -> np.ndarray:
    """Person appearance per pixel: RGB ``(h, w, 3)`` or temperature ``(h, w, 1)``, patterns and shading."""
    yy, xx = _grid(*labels.shape)
    u, v = (xx - pose.cx) / pose.size, (yy - geo["shoulder_y"]) / pose.size
    lut = ident.temps[:, None] if infrared else ident.colours
    out = lut[labels]
    for part, kind, period, second in (
        (_UPPER, ident.upper_pattern, ident.upper_period, ident.upper2_temp if infrared else ident.upper2),
        (_LOWER, ident.lower_pattern, ident.lower_period, ident.lower2_temp if infrared else ident.lower2),
    ):
        mask = _pattern_mask(kind, period, u, v)
        if mask is not None:
            out = np.where((mask & (labels == part))[..., None], np.asarray(second, dtype=np.float64), out)
    # Round bodies: darker (visible) or cooler (infrared) towards the silhouette's sides.
    shade = 1.0 - 0.22 * np.clip(((xx - pose.cx) / (0.5 * geo["sw"] + 1e-6)) ** 2, 0.0, 1.0)
    return out * shade[..., None]


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _colour(rng: np.random.Generator, box: Box, infrared: bool) -> np.ndarray:
    if infrared:
        return np.array([_uniform(rng, box[0])])
    return _hsv(_uniform(rng, box[0]), _uniform(rng, box[1]), _uniform(rng, box[2]))


def _background(rng: np.random.Generator, cam: _Camera, hc: int, wc: int) -> np.ndarray:
    """Camera-specific background: two graded regions split at a horizon, then random clutter shapes."""
    ch = 1 if cam.infrared else 3
    horizon = _uniform(rng, cam.horizon) * hc
    top0, top1 = _colour(rng, cam.top, cam.infrared), _colour(rng, cam.top, cam.infrared)
    bot0, bot1 = _colour(rng, cam.bottom, cam.infrared), _colour(rng, cam.bottom, cam.infrared)
    y = np.arange(hc, dtype=np.float64)[:, None] + 0.5
    t_top = np.clip(y / max(horizon, 1.0), 0.0, 1.0)
    t_bot = np.clip((y - horizon) / max(hc - horizon, 1.0), 0.0, 1.0)
    rows = np.where(y < horizon, top0 + (top1 - top0) * t_top, bot0 + (bot1 - bot0) * t_bot)  # (hc, ch)
    rows = np.clip(np.rint(rows * 255.0), 0, 255).astype(np.uint8)
    full = np.broadcast_to(rows[:, None, :], (hc, wc, ch))
    image = Image.fromarray(np.ascontiguousarray(full[..., 0] if cam.infrared else full))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(cam.clutter[0], cam.clutter[1] + 1))):
        box = cam.palette[int(rng.integers(len(cam.palette)))]
        value = np.clip(np.rint(_colour(rng, box, cam.infrared) * 255.0), 0, 255).astype(int)
        fill = int(value[0]) if cam.infrared else tuple(int(c) for c in value)
        x0, y0 = rng.uniform(-0.2, 1.0) * wc, rng.uniform(-0.1, 1.0) * hc
        w, h = rng.uniform(0.08, 0.6) * wc, rng.uniform(0.05, 0.45) * hc
        shape = rng.random()
        if shape < 0.5:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        elif shape < 0.75:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.line([(x0, y0), (x0 + rng.uniform(-0.3, 0.3) * wc, y0 + h)], fill=fill, width=int(rng.integers(1, 4)))
    return np.asarray(image, dtype=np.float64).reshape(hc, wc, ch) / 255.0


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``(h, w, c)`` array with reflected borders."""
    if sigma < 0.05:
        return image
    radius = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = image.shape[:2]
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect" if h > radius else "edge")
    out = sum(k[i] * padded[i : i + h] for i in range(len(k)))
    padded = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect" if w > radius else "edge")
    return sum(k[i] * padded[:, i : i + w] for i in range(len(k)))


def _light_visible(rng: np.random.Generator, cam: _Camera, image: np.ndarray, wc: int) -> np.ndarray:
    """Illumination of a visible camera: gain, light colour, a side gradient and, sometimes, low light."""
    gain = _uniform(rng, cam.brightness)
    tint = np.asarray(cam.tint) * (1.0 + rng.normal(0.0, 0.04, size=3))
    x = (np.arange(wc, dtype=np.float64) + 0.5) / wc - 0.5
    side = 1.0 + cam.side_light * rng.uniform(-1.0, 1.0) * x
    image = image * (gain * tint) * side[None, :, None]
    if rng.random() < cam.low_light:  # dim scene: darker, contrast-compressed, colour-shifted (like LLCM)
        image = rng.uniform(0.25, 0.5) * np.clip(image, 0.0, 1.0) ** rng.uniform(1.3, 1.8)
        image = image * (1.0 + rng.normal(0.0, 0.12, size=3))
    return np.clip(image, 0.0, 1.0)


def _sensor_infrared(rng: np.random.Generator, cam: _Camera, temperature: np.ndarray, wc: int) -> np.ndarray:
    """Thermal camera response: automatic gain over the scene's temperatures and a mild vignette."""
    lo = rng.uniform(0.0, 0.12)
    hi = rng.uniform(cam.brightness[0], cam.brightness[1])
    image = np.clip((temperature - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.85, 1.2)
    x = (np.arange(wc, dtype=np.float64) + 0.5) / wc - 0.5
    side = 1.0 + cam.side_light * rng.uniform(-1.0, 1.0) * x
    return np.clip(image * side[None, :, None], 0.0, 1.0)
