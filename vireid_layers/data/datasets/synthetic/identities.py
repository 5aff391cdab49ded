"""Identity sampling: the latent attributes of one synthetic person (body, clothing, accessories, gait, materials).

Every identity's attributes come from the random stream ``(seed, identity, 0, 0)``; its colours come from the
stream of its colour group ``(seed, group, 0, 1)``, so identities 1-3, 4-6, ... wear the same colours with
their own infrared materials. A garment's infrared intensity follows its visible luminance, never its hue.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Part labels of the label map drawn by :mod:`.figure` (0 is the background).
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
