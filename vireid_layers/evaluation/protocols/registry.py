"""Protocols by name, for configuration files and command lines only (the classes contain no name dispatch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import EvaluationProtocol
from .direction import Direction
from .llcm import LLCMProtocol
from .regdb import RegDBProtocol
from .sysu import SYSUProtocol

__all__ = ["PROTOCOLS", "ProtocolFactory", "build_protocol", "register_protocol"]

ProtocolFactory = Callable[..., EvaluationProtocol]
"""``factory(**kwargs) -> EvaluationProtocol``: a protocol class or a preset of one."""

#: Protocol factories by name, for configuration files and command lines: ``build_protocol(name, **kwargs)``.
PROTOCOLS: dict[str, ProtocolFactory] = {}


def register_protocol(name: str, factory: ProtocolFactory) -> None:
    """Add a protocol factory to :data:`PROTOCOLS`, under a name that :func:`build_protocol` then accepts.

    Args:
        name: the new name.
        factory: ``factory(**kwargs) -> EvaluationProtocol``, e.g. a protocol class.

    Raises:
        TypeError: ``name`` is not a string or ``factory`` is not callable.
        ValueError: ``name`` is already registered.

    Examples:
        >>> from vireid_layers.evaluation import PROTOCOLS, RegDBProtocol, build_protocol, register_protocol
        >>> register_protocol("regdb-thermal-queries", lambda: RegDBProtocol("t2v"))
        >>> build_protocol("regdb-thermal-queries").name
        'RegDB infrared→visible'
        >>> del PROTOCOLS["regdb-thermal-queries"]
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"`factory` must be callable, got {type(factory).__name__}")
    if name in PROTOCOLS:
        raise ValueError(f"`name` {name!r} is already registered in PROTOCOLS")
    PROTOCOLS[name] = factory


def build_protocol(name: str, **kwargs: Any) -> EvaluationProtocol:
    """Build a registered protocol by name, with keyword arguments for its class.

    Args:
        name: a key of :data:`PROTOCOLS`.
        **kwargs: passed to the factory.

    Returns:
        The protocol.

    Raises:
        ValueError: unknown ``name``; the message lists the registered ones.

    Examples:
        >>> from vireid_layers.evaluation import build_protocol
        >>> build_protocol("sysu-indoor-multi").name
        'SYSU-MM01 indoor-search multi-shot (10), seeded gallery, infrared→visible'
        >>> build_protocol("llcm-v2i").query_modality.name
        'VISIBLE'
    """
    if name not in PROTOCOLS:
        raise ValueError(f"`name` must be one of {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name](**kwargs)


def _preset(cls: type[EvaluationProtocol], **fixed: Any) -> ProtocolFactory:
    def factory(**kwargs: Any) -> EvaluationProtocol:
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise ValueError(f"this preset fixes {clash}; use the generic protocol name to choose them")
        return cls(**fixed, **kwargs)

    return factory


register_protocol("sysu", SYSUProtocol)
register_protocol("sysu-all-single", _preset(SYSUProtocol, mode="all", shots=1))
register_protocol("sysu-all-multi", _preset(SYSUProtocol, mode="all", shots=10))
register_protocol("sysu-indoor-single", _preset(SYSUProtocol, mode="indoor", shots=1))
register_protocol("sysu-indoor-multi", _preset(SYSUProtocol, mode="indoor", shots=10))
register_protocol("regdb", RegDBProtocol)
register_protocol("regdb-v2i", _preset(RegDBProtocol, direction=Direction.VISIBLE_TO_INFRARED))
register_protocol("regdb-i2v", _preset(RegDBProtocol, direction=Direction.INFRARED_TO_VISIBLE))
register_protocol("llcm", LLCMProtocol)
register_protocol("llcm-v2i", _preset(LLCMProtocol, direction=Direction.VISIBLE_TO_INFRARED))
register_protocol("llcm-i2v", _preset(LLCMProtocol, direction=Direction.INFRARED_TO_VISIBLE))
register_protocol(
    "llcm-official-vis-to-ir",
    _preset(LLCMProtocol, direction=Direction.VISIBLE_TO_INFRARED, official_vis_to_ir_compat=True),
)
