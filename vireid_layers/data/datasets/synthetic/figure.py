"""Drawing one person: a pose per image and the part-label map of the figure (head, torso, limbs, accessories).

The figure is drawn at the supersampled canvas size as a map of part labels (:mod:`.identities`); colours and
temperatures are painted on it afterwards (:mod:`.scene`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .cameras import _Camera
from .identities import _BAG, _BG, _HAIR, _HAT, _LOWER, _PACK, _SHOES, _SKIN, _STRAP, _UPPER, _Identity


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
