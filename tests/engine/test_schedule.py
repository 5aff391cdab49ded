"""Tests of the generic warm-up + step schedule of the engine (the methods' schedules: tests/recipes)."""

from __future__ import annotations

import pickle

import pytest

from vireid_layers.engine import WarmupStepSchedule, warmup_step_factor


def reference_factor(epoch: int, warmup: int, milestones: tuple[int, ...], gamma: float) -> float:
    """The official ``adjust_learning_rate`` written as a chain of branches (DEEN: 20, 80; AGW/DDAG: 20, 50)."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    factor = 1.0
    for m in milestones:
        factor = factor * gamma if epoch >= m else factor
    return factor


@pytest.mark.parametrize("milestones", [(20, 50), (20, 80), (), (3,)])
def test_matches_the_branches(milestones: tuple[int, ...]) -> None:
    schedule = WarmupStepSchedule(10, milestones, 0.1)
    for epoch in range(160):
        expected = reference_factor(epoch, 10, milestones, 0.1)
        assert schedule(epoch) == pytest.approx(expected)
        assert warmup_step_factor(epoch, milestones=milestones) == pytest.approx(expected)


def test_generic_schedule_pickles_and_prints() -> None:
    schedule = WarmupStepSchedule(warmup_epochs=5, milestones=(7,))
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert repr(schedule) == "WarmupStepSchedule(warmup_epochs=5, milestones=(7,), gamma=0.1)"
    assert WarmupStepSchedule(0, (1,))(0) == 1.0  # no warm-up


@pytest.mark.parametrize("epoch", [-1, 1.0, True])
def test_bad_epoch(epoch: object) -> None:
    with pytest.raises(ValueError, match="epoch"):
        warmup_step_factor(epoch)  # type: ignore[arg-type]
