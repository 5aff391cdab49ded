"""Tests of the warm-up + step schedules (DEEN, AGW) and the backbone/head parameter groups."""

from __future__ import annotations

import pickle

import pytest
import torch

from vireid_layers.engine import (
    AGWSchedule,
    DEENSchedule,
    WarmupStepSchedule,
    deen_lr_factor,
    deen_param_groups,
    head_param_groups,
    warmup_step_factor,
)
from vireid_layers.models import AGW


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


def test_official_values() -> None:
    agw = AGWSchedule()
    assert [agw(e) for e in (0, 4, 9, 10, 19)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert agw(20) == pytest.approx(0.1) and agw(49) == pytest.approx(0.1)
    assert agw(50) == pytest.approx(0.01) and agw(80) == pytest.approx(0.01)
    deen = DEENSchedule()
    assert deen(79) == pytest.approx(0.1) and deen(80) == pytest.approx(0.01)
    assert [deen(e) for e in range(151)] == [deen_lr_factor(e) for e in range(151)]
    assert DEENSchedule(2, (4,), 0.5)(5) == 0.5  # positional construction, as the DEEN example does
    assert AGWSchedule(0, (1,))(0) == 1.0  # no warm-up
    assert isinstance(agw, WarmupStepSchedule) and isinstance(deen, WarmupStepSchedule)


def test_schedules_pickle_and_print() -> None:
    schedule = AGWSchedule(warmup_epochs=5)
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert repr(schedule) == "AGWSchedule(warmup_epochs=5, milestones=(20, 50), gamma=0.1)"


@pytest.mark.parametrize("epoch", [-1, 1.0, True])
def test_bad_epoch(epoch: object) -> None:
    with pytest.raises(ValueError, match="epoch"):
        warmup_step_factor(epoch)  # type: ignore[arg-type]


def test_agw_param_groups_put_non_local_in_the_backbone_group() -> None:
    model = AGW(5, backbone="resnet18")
    backbone, head = head_param_groups(model, 0.1)
    assert backbone["base_lr"] == pytest.approx(0.01) and head["base_lr"] == 0.1
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in head["params"]) == ["classifier.weight", "neck.weight"]
    in_backbone = {names[id(p)] for p in backbone["params"]}
    assert "non_local.1.0.theta.weight" in in_backbone and "neck.bias" not in in_backbone
    assert len(backbone["params"]) + 2 == sum(p.requires_grad for p in model.parameters())
    assert deen_param_groups is head_param_groups


def test_param_groups_need_a_head() -> None:
    with pytest.raises(ValueError, match="no head parameters"):
        head_param_groups(torch.nn.Linear(2, 2), 0.1)
