"""The six cameras of the synthetic dataset: viewpoints, framing, background, light and sensor per camera.

Cameras 1, 2, 4 and 5 are visible (RGB) cameras and 3 and 6 infrared ones, as in SYSU-MM01 :cite:`wu2017sysu`;
cameras 1 to 3 are indoors, 4 to 6 outdoors. Only :mod:`.renderer` and the scene code read these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]
Box = tuple[Range, ...]  # HSV ranges (visible) or a single temperature range (infrared)


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
