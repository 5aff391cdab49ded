"""The direction switch: which modality queries, which forms the gallery, and the stem each side goes through."""

from __future__ import annotations

import enum

from ...modality import Modality

__all__ = ["Direction"]


class Direction(str, enum.Enum):
    """Which modality queries and which modality forms the gallery.

    The value also fixes the stem each side goes through: queries through the stem of
    :attr:`query_modality`, the gallery through that of :attr:`gallery_modality`.

    Examples:
        >>> from vireid_layers.evaluation import Direction
        >>> Direction.parse("v2i")
        <Direction.VISIBLE_TO_INFRARED: 'visible_to_infrared'>
        >>> d = Direction.parse("infrared_to_visible")
        >>> d.query_modality.name, d.gallery_modality.name, d.short, d.reversed.short
        ('INFRARED', 'VISIBLE', 'i2v', 'v2i')
    """

    VISIBLE_TO_INFRARED = "visible_to_infrared"
    INFRARED_TO_VISIBLE = "infrared_to_visible"

    @classmethod
    def parse(cls, value: Direction | str) -> Direction:
        """Accept a :class:`Direction`, its value, or a short alias (``"v2i"``, ``"i2v"``, ``"v2t"``, ``"t2v"``).

        Raises:
            ValueError: unknown name; the message lists the accepted ones.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            if key in _DIRECTION_ALIASES:
                return cls(_DIRECTION_ALIASES[key])
        raise ValueError(f"`direction` must be one of {sorted(_DIRECTION_ALIASES)}, got {value!r}")

    @property
    def query_modality(self) -> Modality:
        """Modality of the queries (and the stem they go through)."""
        return Modality.VISIBLE if self is Direction.VISIBLE_TO_INFRARED else Modality.INFRARED

    @property
    def gallery_modality(self) -> Modality:
        """Modality of the gallery (and the stem it goes through)."""
        return Modality.INFRARED if self is Direction.VISIBLE_TO_INFRARED else Modality.VISIBLE

    @property
    def reversed(self) -> Direction:
        """The opposite direction."""
        return Direction.INFRARED_TO_VISIBLE if self is Direction.VISIBLE_TO_INFRARED else Direction.VISIBLE_TO_INFRARED

    @property
    def short(self) -> str:
        """``"v2i"`` or ``"i2v"``."""
        return "v2i" if self is Direction.VISIBLE_TO_INFRARED else "i2v"

    @property
    def label(self) -> str:
        """Human-readable label, ``"visible→infrared"`` or ``"infrared→visible"``."""
        return "visible→infrared" if self is Direction.VISIBLE_TO_INFRARED else "infrared→visible"


_DIRECTION_ALIASES = {
    "visible_to_infrared": "visible_to_infrared",
    "infrared_to_visible": "infrared_to_visible",
    "v2i": "visible_to_infrared",
    "i2v": "infrared_to_visible",
    "v2t": "visible_to_infrared",
    "t2v": "infrared_to_visible",
    "visible_to_thermal": "visible_to_infrared",
    "thermal_to_visible": "infrared_to_visible",
}
