"""The built-in synthetic cross-modality person dataset, written to disk in SYSU-MM01's layout.

:func:`make_synthetic_dataset` renders small person crops procedurally (numpy + PIL, no download, no model)
and writes them exactly as SYSU-MM01 :cite:`wu2017sysu` is distributed, so that
:func:`~vireid_layers.data.datasets.sysu.read_sysu_mm01`, the samplers and the evaluation protocols run on it
unchanged; :func:`read_synthetic` is that reader under the name ``"synthetic"``::

    root/
      cam1/ cam2/ cam4/ cam5/     visible cameras (cam1, cam2 indoor; cam4, cam5 outdoor)
      cam3/ cam6/                 infrared cameras (cam3 indoor; cam6 outdoor): grey, R = G = B
        0001/0001.jpg ...         one folder per identity, images numbered from 0001
      exp/train_id.txt            one line of comma-separated ids each; train + val ids are the training
      exp/val_id.txt              identities, test ids the test identities
      exp/test_id.txt
      synthetic.json              the manifest: generator version, parameters, splits, completeness

Every identity has latent attributes (body shape, clothing colours with hues shared between identities,
clothing patterns, accessories, gait, and per-garment thermal emissivities that do not depend on hue).
Every image is drawn from a generator seeded by ``(seed, identity, camera, image number)`` alone, so any image
can be regenerated on its own (:func:`render_synthetic_image`) and the files do not depend on the order in
which they are written. The documentation page ``docs/synthetic.rst`` describes the generative model.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..._validation import check_int
from ..records import VIReIDDataset
from .folder import as_path, list_identity_folders, list_images, load_image
from .sysu import SYSU_CAMERAS, SYSU_IR_CAMERAS, read_sysu_mm01

__all__ = [
    "SYNTHETIC_GENERATOR_VERSION",
    "SYNTHETIC_JPEG_QUALITY",
    "SYNTHETIC_MANIFEST",
    "make_synthetic_dataset",
    "read_synthetic",
    "render_synthetic_image",
    "save_sample_grid",
]

#: Version of the generative model. It is stored in the manifest; a change of the renderer that changes any
#: pixel must increase it, so that an old dataset on disk is recognised as different.
SYNTHETIC_GENERATOR_VERSION = 3
#: Name of the manifest file written at the dataset root.
SYNTHETIC_MANIFEST = "synthetic.json"
#: JPEG quality of every image (chroma is not subsampled, so thin coloured stripes survive).
SYNTHETIC_JPEG_QUALITY = 95

_SS = 2  # supersampling factor: figures are drawn at twice the output size and box-filtered down
_BG, _SKIN, _HAIR, _UPPER, _LOWER, _SHOES, _BAG, _HAT, _PACK, _STRAP = range(10)
_NUM_PARTS = 10
_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "dots")
# Hue centres (degrees) of the clothing palette: red, orange, yellow, green, cyan, blue, purple, pink. Clothing
# hues are drawn from these eight centres with a small jitter, so many identities share a hue.
_HUES = (0.0, 28.0, 52.0, 115.0, 178.0, 215.0, 268.0, 322.0)
_HAIR_RGB = ((0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.45, 0.28, 0.14), (0.78, 0.64, 0.38), (0.6, 0.6, 0.6))
# How much of a garment's infrared intensity follows its visible luminance (as near-infrared reflectance of dyed
# fabric roughly does); the rest is an identity-specific material term. Hue itself never enters.
_LUMINANCE_WEIGHT = 0.9
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 luma, the grey level of a visible colour
_OWN_NAMES = (*(f"cam{c}" for c in SYSU_CAMERAS), "exp")

Range = tuple[float, float]
Box = tuple[Range, ...]  # HSV ranges (visible) or a single temperature range (infrared)


# ------------------------------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class _Camera:
    """How one camera sees people: viewpoints, framing, background, light and sensor."""

    infrared: bool
    indoor: bool
    views: tuple[float, float, float]  # P(front), P(back), P(side)
    scale: Range  # person height / image height (before the identity's own height ratio)
    shift: float  # largest horizontal offset of the person, as a fraction of the image width
    horizon: Range  # wall/floor or sky/ground boundary, as a fraction of the image height
    top: Box  # background above the horizon
    bottom: Box  # background below the horizon
    clutter: tuple[int, int]  # number of clutter shapes (inclusive range)
    palette: tuple[Box, ...]  # clutter colours (visible) or temperatures (infrared)
    brightness: Range  # visible: illumination gain; infrared: automatic-gain range top
    tint: tuple[float, float, float]  # visible: colour of the light
    low_light: float  # visible: probability of a low-light image
    side_light: float  # strength of a left-right illumination gradient
    blur: Range  # Gaussian blur sigma, output pixels
    noise: Range  # sensor noise sigma (0..1 intensity scale)


_CAMERAS: dict[int, _Camera] = {
    1: _Camera(  # indoor room, warm light, mostly frontal, close
        infrared=False,
        indoor=True,
        views=(0.55, 0.2, 0.25),
        scale=(0.8, 0.96),
        shift=0.1,
        horizon=(0.55, 0.72),
        top=((30, 50), (0.1, 0.3), (0.6, 0.85)),
        bottom=((20, 35), (0.3, 0.5), (0.3, 0.5)),
        clutter=(4, 9),
        palette=(
            ((15, 35), (0.3, 0.7), (0.2, 0.6)),
            ((0, 360), (0.4, 0.8), (0.4, 0.9)),
            ((0, 360), (0, 0.1), (0.3, 0.8)),
        ),
        brightness=(0.85, 1.1),
        tint=(1.06, 1.0, 0.86),
        low_light=0.15,
        side_light=0.15,
        blur=(0.0, 0.3),
        noise=(0.004, 0.012),
    ),
    2: _Camera(  # indoor corridor, fluorescent light, often from behind, dim
        infrared=False,
        indoor=True,
        views=(0.2, 0.45, 0.35),
        scale=(0.7, 0.9),
        shift=0.15,
        horizon=(0.6, 0.78),
        top=((190, 220), (0.05, 0.2), (0.55, 0.8)),
        bottom=((0, 360), (0.0, 0.08), (0.35, 0.6)),
        clutter=(3, 7),
        palette=(
            ((25, 40), (0.3, 0.6), (0.3, 0.6)),
            ((100, 140), (0.5, 0.9), (0.4, 0.8)),
            ((0, 360), (0, 0.1), (0.2, 0.9)),
        ),
        brightness=(0.7, 1.0),
        tint=(0.92, 1.0, 1.08),
        low_light=0.35,
        side_light=0.1,
        blur=(0.0, 0.4),
        noise=(0.006, 0.015),
    ),
    3: _Camera(  # indoor infrared: cool walls, a few warm objects (radiators, screens)
        infrared=True,
        indoor=True,
        views=(0.4, 0.3, 0.3),
        scale=(0.75, 0.92),
        shift=0.12,
        horizon=(0.55, 0.75),
        top=((0.28, 0.38),),
        bottom=((0.22, 0.32),),
        clutter=(2, 6),
        palette=(((0.12, 0.35),), ((0.12, 0.35),), ((0.55, 0.8),)),
        brightness=(0.85, 1.0),
        tint=(1.0, 1.0, 1.0),
        low_light=0.0,
        side_light=0.1,
        blur=(0.2, 0.45),
        noise=(0.008, 0.018),
    ),
    4: _Camera(  # outdoor daylight: sky and buildings, trees, pavement; farther away, side light
        infrared=False,
        indoor=False,
        views=(0.35, 0.35, 0.3),
        scale=(0.6, 0.85),
        shift=0.18,
        horizon=(0.35, 0.55),
        top=((195, 215), (0.2, 0.5), (0.75, 0.95)),
        bottom=((0, 360), (0.0, 0.1), (0.45, 0.7)),
        clutter=(5, 11),
        palette=(
            ((90, 140), (0.4, 0.8), (0.2, 0.55)),
            ((15, 40), (0.1, 0.4), (0.4, 0.8)),
            ((0, 360), (0.3, 0.9), (0.2, 0.9)),
        ),
        brightness=(0.95, 1.25),
        tint=(1.0, 1.0, 1.02),
        low_light=0.1,
        side_light=0.3,
        blur=(0.0, 0.3),
        noise=(0.004, 0.01),
    ),
    5: _Camera(  # outdoor evening street: orange light, cars, mostly side views, often dark
        infrared=False,
        indoor=False,
        views=(0.3, 0.2, 0.5),
        scale=(0.55, 0.8),
        shift=0.18,
        horizon=(0.4, 0.6),
        top=((20, 40), (0.2, 0.5), (0.5, 0.8)),
        bottom=((0, 360), (0.0, 0.12), (0.3, 0.55)),
        clutter=(5, 11),
        palette=(
            ((0, 360), (0.3, 0.9), (0.2, 0.9)),
            ((20, 45), (0.2, 0.5), (0.3, 0.7)),
            ((0, 360), (0, 0.1), (0.1, 0.6)),
        ),
        brightness=(0.75, 1.05),
        tint=(1.1, 0.98, 0.82),
        low_light=0.4,
        side_light=0.25,
        blur=(0.0, 0.4),
        noise=(0.006, 0.014),
    ),
    6: _Camera(  # outdoor infrared: cold sky, sun-warmed ground, warm cars
        infrared=True,
        indoor=False,
        views=(0.3, 0.4, 0.3),
        scale=(0.55, 0.82),
        shift=0.18,
        horizon=(0.35, 0.55),
        top=((0.03, 0.12),),
        bottom=((0.25, 0.4),),
        clutter=(3, 8),
        palette=(((0.12, 0.3),), ((0.15, 0.3),), ((0.45, 0.7),)),
        brightness=(0.8, 1.0),
        tint=(1.0, 1.0, 1.0),
        low_light=0.0,
        side_light=0.15,
        blur=(0.25, 0.5),
        noise=(0.01, 0.02),
    ),
}


# ------------------------------------------------------------------------------------------------ identities


@dataclass(frozen=True)
class _Identity:
    """Latent attributes of one person; lengths are fractions of the person's height."""

    height: float
    head: float
    leg: float
    shoulder: float
    hip: float
    limb: float
    short_sleeves: bool
    lower_kind: str  # "trousers", "shorts", "skirt"
    upper_pattern: int  # index into _PATTERNS
    upper_period: float
    lower_pattern: int
    lower_period: float
    long_hair: bool
    hat: str  # "none", "cap", "beanie"
    bag: int  # 0: none, +1: on the person's left, -1: on the person's right
    bag_size: float
    backpack: bool
    stride: float  # degrees
    arm_swing: float  # degrees
    colours: np.ndarray  # (10, 3) RGB in [0, 1] per part
    upper2: np.ndarray  # (3,) second colour of the upper pattern
    lower2: np.ndarray
    temps: np.ndarray  # (10,) apparent temperature in [0, 1] per part
    upper2_temp: float
    lower2_temp: float


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v))


def _garment_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A clothing colour (h, s, v): one of eight hue centres with a small jitter, or an achromatic colour."""
    if rng.random() < 0.22:
        v = float(rng.choice([0.12, 0.45, 0.85])) + rng.uniform(-0.05, 0.05)
        return 0.0, rng.uniform(0.0, 0.08), v
    return float(rng.choice(_HUES)) + rng.uniform(-8.0, 8.0), rng.uniform(0.5, 0.95), rng.uniform(0.35, 0.95)


def _second_colour(rng: np.random.Generator, base: tuple[float, float, float]) -> tuple[float, float, float]:
    """The colour of a pattern's second element: white, black, or another palette colour."""
    kind = rng.random()
    if kind < 0.3:
        return 0.0, 0.0, rng.uniform(0.85, 0.97)
    if kind < 0.55:
        return 0.0, 0.0, rng.uniform(0.05, 0.15)
    h, s, v = _garment_colour(rng)
    return h, s, float(np.clip(v if abs(v - base[2]) > 0.2 else 1.2 - base[2], 0.1, 0.95))


def _garment_temperature(rng: np.random.Generator, hsv: tuple[float, float, float]) -> float:
    """Infrared intensity of a fabric: mostly its visible luminance, partly its own material; never its hue."""
    luma = float(_LUMA @ _hsv(*hsv))
    return 0.25 + 0.6 * (_LUMINANCE_WEIGHT * luma + (1.0 - _LUMINANCE_WEIGHT) * rng.random())


def _pattern_temperature(rng: np.random.Generator, hsv: tuple[float, float, float], base: float) -> float:
    """A pattern's second fabric: its own intensity, at least 0.15 away from the garment's so the pattern survives.

    The contrast keeps the sign of the visible one (a lighter stripe stays the brighter one in infrared).
    """
    second = _garment_temperature(rng, hsv)
    if abs(second - base) >= 0.15:
        return second
    up = second >= base if second != base else rng.random() < 0.5
    shifted = base + 0.15 if up else base - 0.15
    return shifted if 0.1 <= shifted <= 0.92 else (base - 0.15 if up else base + 0.15)


def _colour_group(identity: int) -> int:
    """Identities come in groups of three that wear exactly the same colours ("colour triplets": 1-3, 4-6, ...)."""
    return identity - (identity - 1) % 3


@lru_cache(maxsize=4096)
def _identity_attributes(seed: int, identity: int) -> _Identity:
    """The latent attributes of ``identity``; the stream ``(seed, identity, 0, 0)`` is reserved for it."""
    rng = np.random.default_rng([seed, identity, 0, 0])
    crng = np.random.default_rng([seed, _colour_group(identity), 0, 1])  # the colours (shared by twins)
    upper, lower = _garment_colour(crng), _garment_colour(crng)
    upper2, lower2 = _second_colour(crng, upper), _second_colour(crng, lower)
    hair = _HAIR_RGB[int(crng.integers(len(_HAIR_RGB)))]
    shoes, bag, hat, pack = (_garment_colour(crng) for _ in range(4))

    shoulder = rng.uniform(0.19, 0.31)
    upper_pattern = int(rng.choice(len(_PATTERNS), p=[0.2, 0.2, 0.2, 0.2, 0.2]))
    lower_pattern = int(rng.choice(4, p=[0.7, 0.1, 0.1, 0.1]))
    colours = np.zeros((_NUM_PARTS, 3))
    colours[_SKIN] = _hsv(rng.uniform(18, 32), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95))
    colours[_HAIR] = hair
    colours[_UPPER], colours[_LOWER], colours[_SHOES] = _hsv(*upper), _hsv(*lower), _hsv(*shoes)
    colours[_BAG], colours[_HAT], colours[_PACK] = _hsv(*bag), _hsv(*hat), _hsv(*pack)
    colours[_STRAP] = colours[_PACK] * 0.7
    temps = np.zeros(_NUM_PARTS)
    temps[_SKIN] = rng.uniform(0.86, 0.95)
    temps[_HAIR] = rng.uniform(0.45, 0.6)
    temps[_UPPER] = _garment_temperature(rng, upper)
    temps[_LOWER] = _garment_temperature(rng, lower)
    temps[_SHOES] = rng.uniform(0.25, 0.4)
    temps[_BAG] = rng.uniform(0.2, 0.45)
    temps[_HAT] = rng.uniform(0.45, 0.65)
    temps[_PACK] = rng.uniform(0.2, 0.4)
    temps[_STRAP] = rng.uniform(0.4, 0.55)
    colours.setflags(write=False)
    temps.setflags(write=False)
    return _Identity(
        height=rng.uniform(0.84, 1.0),
        head=rng.uniform(0.11, 0.155),
        leg=rng.uniform(0.42, 0.53),
        shoulder=shoulder,
        hip=min(rng.uniform(0.15, 0.26), shoulder + 0.02),
        limb=rng.uniform(0.04, 0.07),
        short_sleeves=bool(rng.random() < 0.45),
        lower_kind=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.5, 0.25, 0.25])),
        upper_pattern=upper_pattern,
        upper_period=rng.uniform(0.08, 0.15),
        lower_pattern=lower_pattern,
        lower_period=rng.uniform(0.08, 0.15),
        long_hair=bool(rng.random() < 0.35),
        hat=str(rng.choice(["none", "cap", "beanie"], p=[0.55, 0.225, 0.225])),
        bag=int(rng.choice([0, 1, -1], p=[0.5, 0.25, 0.25])),
        bag_size=rng.uniform(0.09, 0.14),
        backpack=bool(rng.random() < 0.3),
        stride=rng.uniform(8.0, 22.0),
        arm_swing=rng.uniform(8.0, 25.0),
        colours=colours,
        upper2=_hsv(*upper2),
        lower2=_hsv(*lower2),
        temps=temps,
        upper2_temp=_pattern_temperature(rng, upper2, float(temps[_UPPER])),
        lower2_temp=_pattern_temperature(rng, lower2, float(temps[_LOWER])),
    )


# ------------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _Pose:
    """Where and how one person stands in one image (canvas pixels, supersampled)."""

    view: str  # "front", "back", "side"
    facing: int  # side view: +1 walks towards +x, -1 towards -x
    cx: float  # body axis
    top: float  # top of the head
    size: float  # person height in pixels
    phase: float  # gait phase
    arm_jitter: tuple[float, float]
    lean: float  # horizontal offset of the head, fraction of the size


def _sample_pose(rng: np.random.Generator, cam: _Camera, ident: _Identity, hc: int, wc: int) -> _Pose:
    view = ("front", "back", "side")[int(rng.choice(3, p=cam.views))]
    size = rng.uniform(*cam.scale) * ident.height * hc
    feet = hc * rng.uniform(0.93, 0.99)
    return _Pose(
        view=view,
        facing=1 if rng.random() < 0.5 else -1,
        cx=wc / 2 + rng.uniform(-cam.shift, cam.shift) * wc,
        top=feet - size,
        size=size,
        phase=rng.uniform(0.0, 2 * math.pi),
        arm_jitter=(rng.uniform(-5.0, 5.0), rng.uniform(-5.0, 5.0)),
        lean=rng.uniform(-0.02, 0.02),
    )


def _limb(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    angle: float,
    length: float,
    width: float,
    segments: Sequence[tuple[float, float, int]],
) -> tuple[float, float]:
    """Draw a straight limb from ``start`` at ``angle`` degrees from the vertical, as labelled segments.

    Each segment is ``(from, to, label)`` in fractions of ``length``. Returns the end point.
    """
    a = math.radians(angle)
    dx, dy = math.sin(a), math.cos(a)
    nx, ny = dy * width / 2, -dx * width / 2
    for lo, hi, label in segments:
        x0, y0 = start[0] + dx * length * lo, start[1] + dy * length * lo
        x1, y1 = start[0] + dx * length * hi, start[1] + dy * length * hi
        draw.polygon([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)], fill=label)
        r = width / 2
        draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=label)
    return start[0] + dx * length, start[1] + dy * length


def _draw_legs(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose, hip_y: float, hip_w: float) -> None:
    s = pose.size
    leg_len, width = ident.leg * s * 0.97, ident.limb * s * 1.35
    cover = {"trousers": 0.92, "shorts": 0.4, "skirt": 0.0}[ident.lower_kind]
    swing = ident.stride * math.sin(pose.phase)
    if pose.view == "side":
        starts, angles = [(pose.cx, hip_y)] * 2, [swing, -swing]
    else:
        spread = 2.0 + 0.25 * abs(swing)
        starts = [(pose.cx - hip_w / 4, hip_y), (pose.cx + hip_w / 4, hip_y)]
        angles = [spread, -spread]
    for start, angle in zip(starts, angles, strict=True):
        segments = [(0.0, cover, _LOWER)] if cover > 0 else []
        end = _limb(draw, start, angle, leg_len, width, [*segments, (cover, 0.97, _SKIN)])
        forward = pose.facing * width * 0.6 if pose.view == "side" else 0.0
        rx, ry = width * (0.85 if pose.view == "side" else 0.6), 0.03 * s
        draw.ellipse([end[0] - rx + forward, end[1] - ry, end[0] + rx + forward, end[1] + ry], fill=_SHOES)
    if ident.lower_kind == "skirt":
        w0, w1, y1 = hip_w * 1.05, hip_w * 1.6, hip_y + 0.45 * leg_len
        draw.polygon(
            [(pose.cx - w0 / 2, hip_y), (pose.cx + w0 / 2, hip_y), (pose.cx + w1 / 2, y1), (pose.cx - w1 / 2, y1)],
            fill=_LOWER,
        )
    else:  # the seat of the trousers or shorts
        draw.rectangle([pose.cx - hip_w / 2, hip_y - 0.01 * s, pose.cx + hip_w / 2, hip_y + 0.06 * s], fill=_LOWER)


def _draw_arms(
    draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose, shoulder_y: float, sw: float, *, behind: bool
) -> None:
    """Draw the arms in front of the torso (``behind=False``) or the one behind it in a side view."""
    s = pose.size
    length, width = 0.39 * s, ident.limb * s
    sleeve = 0.35 if ident.short_sleeves else 0.88
    segments = [(0.0, sleeve, _UPPER), (sleeve, 0.9, _SKIN), (0.9, 1.0, _SKIN)]
    swing = ident.arm_swing * math.sin(pose.phase)
    if pose.view == "side":
        sign = 1.0 if behind else -1.0  # arms swing opposite to the legs
        _limb(draw, (pose.cx, shoulder_y + width / 2), sign * swing + pose.arm_jitter[0], length, width, segments)
    elif not behind:
        for side, jitter in zip((-1.0, 1.0), pose.arm_jitter, strict=True):
            x = pose.cx + side * (sw / 2 - width / 2)
            _limb(draw, (x, shoulder_y + width / 2), side * (6.0 + 0.2 * abs(swing) + jitter), length, width, segments)


def _draw_torso(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose, geo: dict[str, float]) -> None:
    s, cx = pose.size, pose.cx
    sy, hy, sw, hw = geo["shoulder_y"], geo["hip_y"], geo["sw"], geo["hw"]
    neck_w = 0.35 * ident.head * s
    draw.rectangle([cx - neck_w / 2, sy - 0.04 * s, cx + neck_w / 2, sy + 0.01 * s], fill=_SKIN)
    bottom = hy + 0.03 * s
    corner = 0.025 * s
    draw.polygon(
        [
            (cx - sw / 2 + corner, sy),
            (cx + sw / 2 - corner, sy),
            (cx + sw / 2, sy + corner),
            (cx + hw / 2 + 0.01 * s, bottom),
            (cx - hw / 2 - 0.01 * s, bottom),
            (cx - sw / 2, sy + corner),
        ],
        fill=_UPPER,
    )


def _draw_backpack(draw: ImageDraw.ImageDraw, pose: _Pose, geo: dict[str, float], *, behind: bool) -> None:
    s, cx, sy, hy, sw = pose.size, pose.cx, geo["shoulder_y"], geo["hip_y"], geo["sw"]
    height = 0.55 * (hy - sy)
    if pose.view == "side" and behind:
        x0 = cx - pose.facing * (sw / 2 + 0.1 * s)
        draw.rectangle([min(x0, cx), sy + 0.02 * s, max(x0, cx), sy + 0.02 * s + height], fill=_PACK)
    elif pose.view == "back" and not behind:
        w = 0.7 * sw
        draw.rectangle([cx - w / 2, sy + 0.03 * s, cx + w / 2, sy + 0.03 * s + height], fill=_PACK)
    elif pose.view == "front" and not behind:
        for side in (-1.0, 1.0):
            x = cx + side * sw * 0.3
            draw.line(
                [(x, sy), (x - side * 0.01 * s, sy + 0.6 * (hy - sy))], fill=_STRAP, width=max(1, round(0.025 * s))
            )
    elif pose.view == "side" and not behind:
        x = cx - pose.facing * 0.02 * s
        draw.line([(x, sy), (x, sy + 0.6 * (hy - sy))], fill=_STRAP, width=max(1, round(0.025 * s)))


def _draw_bag(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose, geo: dict[str, float]) -> None:
    """A shoulder bag at hip height with its strap across the body, where the viewpoint shows it."""
    s, cx, sy, hy, sw, hw = pose.size, pose.cx, geo["shoulder_y"], geo["hip_y"], geo["sw"], geo["hw"]
    size = ident.bag_size * s
    if pose.view == "side":
        if ident.bag != -pose.facing:  # the bag hangs on the hidden side
            return
        bx = cx + pose.facing * 0.02 * s
        draw.line([(cx, sy), (bx, hy - size * 0.3)], fill=_STRAP, width=max(1, round(0.02 * s)))
    else:
        side = ident.bag if pose.view == "front" else -ident.bag  # image side of the bag
        bx = cx + side * (hw / 2 + size * 0.35)
        draw.line([(cx - side * sw * 0.4, sy), (bx, hy - size * 0.3)], fill=_STRAP, width=max(1, round(0.02 * s)))
    draw.rectangle([bx - size / 2, hy - size * 0.3, bx + size / 2, hy + size * 0.6], fill=_BAG)


def _draw_head(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose) -> None:
    s = pose.size
    hh = ident.head * s
    hw = hh * (0.85 if pose.view == "side" else 0.76)
    cx, top = pose.cx + pose.lean * s, pose.top
    draw.ellipse([cx - hw / 2, top, cx + hw / 2, top + hh], fill=_HAIR)
    if pose.view == "front":
        draw.ellipse([cx - hw * 0.45, top + hh * 0.22, cx + hw * 0.45, top + hh], fill=_SKIN)
    elif pose.view == "side":
        off = pose.facing * hw * 0.22
        draw.ellipse([cx - hw * 0.38 + off, top + hh * 0.25, cx + hw * 0.45 + off, top + hh], fill=_SKIN)
    if ident.hat == "beanie":
        draw.chord([cx - hw * 0.55, top - hh * 0.08, cx + hw * 0.55, top + hh * 0.85], 180, 360, fill=_HAT)
    elif ident.hat == "cap":
        draw.chord([cx - hw * 0.53, top - hh * 0.05, cx + hw * 0.53, top + hh * 0.7], 180, 360, fill=_HAT)
        if pose.view == "side":
            x0 = cx + pose.facing * hw * 0.3
            x1 = cx + pose.facing * hw * 0.85
            draw.rectangle([min(x0, x1), top + hh * 0.24, max(x0, x1), top + hh * 0.32], fill=_HAT)
        elif pose.view == "front":
            draw.rectangle([cx - hw * 0.5, top + hh * 0.26, cx + hw * 0.5, top + hh * 0.34], fill=_HAT)


def _draw_long_hair(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose, shoulder_y: float) -> None:
    s = pose.size
    hh = ident.head * s
    w = hh * (0.8 if pose.view != "side" else 0.5)
    cx = pose.cx + pose.lean * s - (pose.facing * hh * 0.15 if pose.view == "side" else 0.0)
    draw.rectangle([cx - w / 2, pose.top + hh * 0.5, cx + w / 2, shoulder_y + 0.09 * s], fill=_HAIR)


def _draw_person(ident: _Identity, pose: _Pose, hc: int, wc: int) -> tuple[np.ndarray, dict[str, float]]:
    """The part-label map ``(hc, wc)`` of one person (0 = background) and the body geometry."""
    s = pose.size
    width = 0.58 if pose.view == "side" else 1.0
    geo = {
        "shoulder_y": pose.top + (ident.head + 0.035) * s,
        "hip_y": pose.top + (1.0 - ident.leg) * s,
        "sw": ident.shoulder * s * width,
        "hw": ident.hip * s * width,
    }
    canvas = Image.new("L", (wc, hc), _BG)
    draw = ImageDraw.Draw(canvas)
    if ident.long_hair and pose.view != "back":
        _draw_long_hair(draw, ident, pose, geo["shoulder_y"])
    if ident.backpack:
        _draw_backpack(draw, pose, geo, behind=True)
    _draw_arms(draw, ident, pose, geo["shoulder_y"], geo["sw"], behind=True)
    _draw_legs(draw, ident, pose, geo["hip_y"], geo["hw"])
    _draw_torso(draw, ident, pose, geo)
    _draw_arms(draw, ident, pose, geo["shoulder_y"], geo["sw"], behind=False)
    if ident.backpack:
        _draw_backpack(draw, pose, geo, behind=False)
    if ident.bag:
        _draw_bag(draw, ident, pose, geo)
    if ident.long_hair and pose.view == "back":
        _draw_long_hair(draw, ident, pose, geo["shoulder_y"])
    _draw_head(draw, ident, pose)
    return np.asarray(canvas), geo


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


# ------------------------------------------------------------------------------------------------ the dataset


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


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / SYNTHETIC_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable synthetic-dataset manifest: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("generator") != __name__:
        raise ValueError(f"{path} is not a manifest written by {__name__}")
    return manifest


def _write_manifest(root: Path, params: dict[str, int], splits: dict[str, list[int]], complete: bool) -> None:
    manifest = {
        "generator": __name__,
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
    manifest = _read_manifest(root) if root.is_dir() else None
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


def _expected_files(root: Path, params: dict[str, int]) -> list[tuple[Path, int, int, int]]:
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
    files = _expected_files(root, params)
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
    manifest = _read_manifest(path)
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
