"""Tests of protocol_for_dataset: the usual protocol of each dataset, by name."""

from __future__ import annotations

import pytest

from vireid_layers.evaluation import (
    DEFAULT_DIRECTIONS,
    Direction,
    LLCMProtocol,
    RegDBProtocol,
    SYSUProtocol,
    protocol_for_dataset,
)


@pytest.mark.parametrize(
    ("dataset", "cls", "direction"),
    [
        ("sysu", SYSUProtocol, Direction.INFRARED_TO_VISIBLE),
        ("synthetic", SYSUProtocol, Direction.INFRARED_TO_VISIBLE),
        ("llcm", LLCMProtocol, Direction.INFRARED_TO_VISIBLE),
        ("regdb", RegDBProtocol, Direction.VISIBLE_TO_INFRARED),
    ],
)
def test_defaults(dataset: str, cls: type, direction: Direction) -> None:
    for auto in (None, "auto"):
        protocol = protocol_for_dataset(dataset, direction=auto)
        assert type(protocol) is cls and protocol.direction is direction
    assert DEFAULT_DIRECTIONS[dataset] is direction
    flipped = protocol_for_dataset(dataset, direction=direction.reversed.short)
    assert flipped.direction is direction.reversed


def test_settings_reach_the_protocol() -> None:
    sysu = protocol_for_dataset("sysu", mode="indoor", num_trials=3, direction="v2i")
    assert sysu == SYSUProtocol(mode="indoor", num_trials=3, direction=Direction.VISIBLE_TO_INFRARED)
    assert protocol_for_dataset("llcm", num_trials=4) == LLCMProtocol(Direction.INFRARED_TO_VISIBLE, num_trials=4)
    assert protocol_for_dataset("regdb", num_trials=10).num_trials == 1  # a RegDB split is one trial
    assert not protocol_for_dataset("llcm").official_vis_to_ir_compat


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "market1501"}, "`dataset` must be one of"),
        ({"dataset": "regdb", "mode": "indoor"}, "only for SYSU-MM01"),
        ({"dataset": "llcm", "mode": "indoor"}, "only for SYSU-MM01"),
        ({"dataset": "sysu", "mode": "outdoor"}, "`mode` must be one of"),
        ({"dataset": "sysu", "direction": "up"}, "`direction` must be one of"),
        ({"dataset": "sysu", "num_trials": 0}, "num_trials"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        protocol_for_dataset(**kwargs)
