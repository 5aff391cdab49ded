"""Tests of the methods' schedules and parameter groups (DEEN, AGW) in their recipes."""

from __future__ import annotations

import pickle

import pytest
import torch

from vireid_layers.engine import WarmupStepSchedule
from vireid_layers.models import AGW
from vireid_layers.recipes import AGWSchedule, DEENSchedule, deen_lr_factor, deen_param_groups, head_param_groups


def test_official_values() -> None:
    agw = AGWSchedule()
    assert [agw(e) for e in (0, 4, 9, 10, 19)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert agw(20) == pytest.approx(0.1) and agw(49) == pytest.approx(0.1)
    assert agw(50) == pytest.approx(0.01) and agw(80) == pytest.approx(0.01)
    deen = DEENSchedule()
    assert deen(79) == pytest.approx(0.1) and deen(80) == pytest.approx(0.01)
    assert [deen(e) for e in range(151)] == [deen_lr_factor(e) for e in range(151)]
    assert DEENSchedule(2, (4,), 0.5)(5) == 0.5  # positional construction, as the DEEN recipe does
    assert AGWSchedule(0, (1,))(0) == 1.0  # no warm-up
    assert isinstance(agw, WarmupStepSchedule) and isinstance(deen, WarmupStepSchedule)


def test_deen_schedule_official_values() -> None:
    assert [deen_lr_factor(e) for e in (0, 4, 9, 10, 19)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    assert deen_lr_factor(20) == pytest.approx(0.1) and deen_lr_factor(79) == pytest.approx(0.1)
    assert deen_lr_factor(80) == pytest.approx(0.01) and deen_lr_factor(150) == pytest.approx(0.01)


def test_schedules_pickle_and_print() -> None:
    schedule = AGWSchedule(warmup_epochs=5)
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert repr(schedule) == "AGWSchedule(warmup_epochs=5, milestones=(20, 50), gamma=0.1)"


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
