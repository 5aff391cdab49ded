"""Tests for loading official AGW checkpoints into AGW.

The checkpoints are built from reference/official_checkpoints.md §6 by tests/official_checkpoints.py: every key,
shape and dtype of the official ``embed_net``, wrapped as ``train.py`` saves them. That the loaded AGW embeds as
the official network does (float64) is tested in tests/models/test_agw.py.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from official_checkpoints import agw_layout, build_state_dict, official_checkpoint, save_checkpoint
from torch import nn

from vireid_layers.compat import (
    OfficialConversion,
    OfficialLoadResult,
    convert_official_agw_state_dict,
    load_official_agw,
)
from vireid_layers.models import AGW

NUM_CLASSES = 395


@pytest.fixture(scope="module")
def model() -> AGW:
    """One official-architecture AGW for the module (every test loads a full strict checkpoint into it)."""
    return AGW(NUM_CLASSES)


def our_key(key: str) -> str:
    """The documented mapping, written out independently of the converter."""
    for theirs, ours in (
        ("visible_module.visible.", "backbone.visible_stem."),
        ("thermal_module.thermal.", "backbone.infrared_stem."),
        ("bottleneck.", "neck."),
    ):
        if key.startswith(theirs):
            return ours + key.removeprefix(theirs)
    if key.startswith("base_resnet.base.layer"):
        stage, rest = key.removeprefix("base_resnet.base.layer").split(".", 1)
        return f"backbone.stages.{int(stage) - 1}.{rest}"
    if key.startswith("NL_"):
        stage, rest = key.removeprefix("NL_").split(".", 1)
        return f"non_local.{int(stage) - 1}.{rest}"
    return key


def test_convert_documented_layout() -> None:
    entries = agw_layout(NUM_CLASSES)
    state = build_state_dict(entries, live="zeros")
    converted = convert_official_agw_state_dict(state)
    assert isinstance(converted, OfficialConversion)
    dead = [e.key for e in entries if e.status == "dead"]
    assert converted.ignored_keys == dead and len(dead) == 630
    assert list(converted.state_dict) == [our_key(e.key) for e in entries if e.status != "dead"]
    assert all(converted.state_dict[our_key(k)] is state[k] for k in state if k not in dead)


def test_load_file_in_the_documented_layout(tmp_path, model: AGW) -> None:
    """Every tensor of a full float32 best-model file lands at its documented place; the dead ones are dropped."""
    entries = agw_layout(NUM_CLASSES)
    state = build_state_dict(entries, seed=7)
    path = save_checkpoint(official_checkpoint("agw", state), tmp_path / "sysu_agw_p4_n8_lr_0.1_seed_0_best.t")
    result = load_official_agw(model, path)
    assert isinstance(result, OfficialLoadResult)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert result.ignored_keys == [e.key for e in entries if e.status == "dead"]
    ours = model.state_dict()
    assert len(ours) == len(entries) - 630
    for entry in entries:
        if entry.status != "dead":
            torch.testing.assert_close(ours[our_key(entry.key)], state[entry.key], rtol=0, atol=0, msg=entry.key)


@pytest.mark.parametrize("zipfile", [True, False])
@pytest.mark.parametrize("numpy_major", [1, 2])
@pytest.mark.parametrize("periodic", [False, True])
def test_load_official_files(tmp_path, model: AGW, numpy_major: int, zipfile: bool, periodic: bool) -> None:
    """Best and periodic files, pickled under NumPy 1.x or 2.x, zip or legacy format: weights_only, strict."""
    entries = agw_layout(NUM_CLASSES)
    checkpoint = official_checkpoint("agw", build_state_dict(entries, live="zeros"), periodic=periodic)
    path = save_checkpoint(checkpoint, tmp_path / "agw.t", numpy=numpy_major, zipfile=zipfile)
    with pytest.raises(Exception, match="weights_only"):  # the reason the allowlist exists
        torch.load(path, weights_only=True)
    result = load_official_agw(model, path)
    assert result.missing_keys == [] and result.unexpected_keys == [] and len(result.ignored_keys) == 630
    assert not model.neck.weight.any()


def test_module_prefix_and_other_wrappers(model: AGW) -> None:
    state = build_state_dict(agw_layout(NUM_CLASSES), live="zeros")
    prefixed = official_checkpoint("agw", state, module_prefix=True)
    assert load_official_agw(model, prefixed).ignored_keys[0] == "thermal_module.thermal.layer1.0.conv1.weight"
    for wrapper in ("state_dict", "model"):
        assert len(load_official_agw(model, {wrapper: state}).ignored_keys) == 630
    assert len(load_official_agw(model, state).ignored_keys) == 630  # a bare state dict


def test_base_method_checkpoint() -> None:
    base = AGW(11, method="base", backbone="resnet50")
    entries = agw_layout(11, method="base")
    result = load_official_agw(base, build_state_dict(entries, live="zeros"))
    assert result.missing_keys == [] and result.unexpected_keys == [] and len(result.ignored_keys) == 630
    with pytest.raises(RuntimeError, match="non_local"):  # an agw file has non-local blocks a base model lacks
        load_official_agw(base, build_state_dict(agw_layout(11), live="zeros"))


def test_strict_everywhere_else(model: AGW) -> None:
    state = build_state_dict(agw_layout(NUM_CLASSES), live="zeros")
    foreign = {**state, "classifier.bias": torch.zeros(NUM_CLASSES)}
    with pytest.raises(RuntimeError, match=r"classifier\.bias"):
        load_official_agw(model, foreign)
    missing = {k: v for k, v in state.items() if not k.startswith("NL_3.2.")}
    with pytest.raises(RuntimeError, match=r"non_local\.2\.2"):
        load_official_agw(model, missing)
    result = load_official_agw(model, missing, strict=False)
    # 13 entries, less num_batches_tracked, which BatchNorm tolerates missing (older checkpoints lack it)
    assert len(result.missing_keys) == 12 and all(k.startswith("non_local.2.2.") for k in result.missing_keys)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a RegDB file (206 classes) into a SYSU model
        load_official_agw(model, build_state_dict(agw_layout(206), live="zeros"))


def test_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="model"):
        load_official_agw(nn.Linear(2, 2), {})  # type: ignore[arg-type]
    corrected = AGW(5, backbone="resnet18", non_local_form="corrected")
    with pytest.raises(ValueError, match="non_local_form"):
        load_official_agw(corrected, {})
    small = AGW(5, backbone="resnet18")
    with pytest.raises(FileNotFoundError):
        load_official_agw(small, tmp_path / "missing.t")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_official_agw(small, 3)  # type: ignore[arg-type]
    path = tmp_path / "pickled.t"
    torch.save({"net": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_official_agw(small, path)
    with pytest.raises(TypeError, match="non-tensor"):
        convert_official_agw_state_dict({"net": {"a": 1.0}})
    with pytest.raises(TypeError, match="mapping"):
        convert_official_agw_state_dict([("a", torch.zeros(1))])  # type: ignore[arg-type]
