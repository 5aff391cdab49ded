"""Tests for loading official DDAG checkpoints into DDAG.

The checkpoints are built from reference/official_checkpoints.md §4 by tests/official_checkpoints.py: every key,
shape and dtype of the official ``embed_net(512, 395, part=3, wpa=True)``, wrapped as ``train_ddag.py`` saves its
best model (``{'net', 'cmc', 'mAP', 'epoch'}``, NumPy metrics). The official network written out in
tests/official_networks.py has exactly that layout at ResNet-50 (checked below); at ResNet-18 a checkpoint file of
it loads into DDAG, and both give the same test features in float64.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from official_checkpoints import Entry, build_state_dict, ddag_layout, official_checkpoint, save_checkpoint
from official_networks import OfficialDDAG
from torch import Tensor, nn

from vireid_layers import Modality
from vireid_layers.compat import (
    OfficialConversion,
    OfficialLoadResult,
    convert_official_ddag_state_dict,
    detect_official_model,
    load_official_ddag,
)
from vireid_layers.models import DDAG

F64 = torch.float64
NUM_CLASSES = 395
DEAD = 639  # official_checkpoints.md §4.3: 630 idle ResNet entries, classifier1, classifier2, IWPA's W (7)
FILE = "sysu_G_P_3_drop_0.2_4_8_lr_0.1_seed_0_best.t"  # the README command's file name (§4.1)


@pytest.fixture(scope="module")
def model() -> DDAG:
    """One official-architecture DDAG for the module (every test loads a full strict checkpoint into it)."""
    return DDAG(NUM_CLASSES)


def our_key(key: str) -> str:
    """The documented renaming (docs/ddag.rst), written out independently of the converter."""
    for theirs, ours in (
        ("visible_module.visible.", "backbone.visible_stem."),
        ("thermal_module.thermal.", "backbone.infrared_stem."),
        ("bottleneck.", "neck."),
        ("wpa.", "iwpa."),
        ("attention_", "cgsa.attention_"),
        ("out_att.", "cgsa.out_att."),
    ):
        if key.startswith(theirs):
            return ours + key.removeprefix(theirs)
    if key.startswith("base_resnet.base.layer"):
        stage, rest = key.removeprefix("base_resnet.base.layer").split(".", 1)
        return f"backbone.stages.{int(stage) - 1}.{rest}"
    return key


def is_dead(key: str) -> bool:
    """§2 and §4.4: the never-run parts of the three ResNets, ``classifier1``/``2`` and ``wpa.W``."""
    for stem in ("visible_module.visible.", "thermal_module.thermal."):
        if key.startswith(stem):
            return not key.removeprefix(stem).startswith(("conv1.", "bn1."))
    dead = ("base_resnet.base.conv1.", "base_resnet.base.bn1.", "classifier1.", "classifier2.", "wpa.W.")
    return key.startswith(dead)


def official_value(state: dict[str, Tensor], key: str) -> Tensor:
    """The tensor our DDAG key ``key`` must hold after loading the official ``state`` (the documented mapping)."""
    if key.startswith("cgsa.attentions."):  # the four heads stacked
        name = key.rsplit(".", 1)[1]
        return torch.stack([state[f"attention_{i}.{name}"] for i in range(4)])
    if key.startswith("cgsa.out_att."):  # one head
        return state[key.removeprefix("cgsa.")].unsqueeze(0)
    if key.startswith("iwpa.fc1."):  # a one-element Sequential officially
        return state[key.replace("iwpa.fc1.", "wpa.fc1.0.")]
    inverse = {our_key(k): k for k in state if not is_dead(k)}
    return state[inverse[key]]


# ------------------------------------------------------------------------------------------------ layout


def test_official_network_has_the_documented_layout() -> None:
    """The re-implementation used for the float64 comparison has the documented 991 keys, shapes and dtypes."""
    with torch.device("meta"):
        official = OfficialDDAG("resnet50", NUM_CLASSES, 512, drop=0.2)
    actual = [(k, tuple(v.shape), v.dtype) for k, v in official.state_dict().items()]
    assert actual == [(e.key, e.shape, e.dtype) for e in ddag_layout(NUM_CLASSES)]
    assert sum(is_dead(k) for k, *_ in actual) == DEAD


def test_convert_documented_layout() -> None:
    entries = ddag_layout(NUM_CLASSES)
    state = build_state_dict(entries, live="zeros")
    converted = convert_official_ddag_state_dict(state)
    assert isinstance(converted, OfficialConversion)
    dead = [e.key for e in entries if e.status == "dead"]
    assert converted.ignored_keys == dead and len(dead) == DEAD
    assert all(is_dead(k) for k in dead)
    assert list(converted.state_dict) == [our_key(e.key) for e in entries if e.status != "dead"]
    assert all(converted.state_dict[our_key(k)] is state[k] for k in state if k not in dead)
    assert detect_official_model(state) == "ddag"


def test_load_file_in_the_documented_layout(tmp_path, model: DDAG) -> None:
    """Every tensor of a full float32 best-model file lands at its documented place; the dead ones are dropped."""
    entries = ddag_layout(NUM_CLASSES)
    state = build_state_dict(entries, seed=7)
    path = save_checkpoint(official_checkpoint("ddag", state), tmp_path / FILE)
    result = load_official_ddag(model, path)
    assert isinstance(result, OfficialLoadResult)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert result.ignored_keys == [e.key for e in entries if e.status == "dead"]
    ours = model.state_dict()
    # CGSA holds its four heads' W and a stacked: 2 keys instead of 8.
    assert len(ours) == len(entries) - DEAD - 6
    for key, value in ours.items():
        torch.testing.assert_close(value, official_value(state, key), rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("zipfile", [True, False])
@pytest.mark.parametrize("numpy_major", [1, 2])
def test_load_official_files(tmp_path, model: DDAG, numpy_major: int, zipfile: bool) -> None:
    """Best files pickled under NumPy 1.x or 2.x, zip or legacy format: weights_only, strict."""
    checkpoint = official_checkpoint("ddag", build_state_dict(ddag_layout(NUM_CLASSES), live="zeros"))
    assert "mINP" not in checkpoint  # train_ddag.py saves cmc, mAP and epoch only
    path = save_checkpoint(checkpoint, tmp_path / FILE, numpy=numpy_major, zipfile=zipfile)
    with pytest.raises(Exception, match="weights_only"):  # the reason the allowlist exists
        torch.load(path, weights_only=True)
    result = load_official_ddag(model, path)
    assert result.missing_keys == [] and result.unexpected_keys == [] and len(result.ignored_keys) == DEAD
    assert not model.iwpa.gate.any() and not model.cgsa.attentions.W.any()
    assert detect_official_model(path) == "ddag"


def test_module_prefix_and_other_wrappers(model: DDAG) -> None:
    state = build_state_dict(ddag_layout(NUM_CLASSES), live="zeros")
    prefixed = official_checkpoint("ddag", state, module_prefix=True)
    assert load_official_ddag(model, prefixed).ignored_keys[0] == "thermal_module.thermal.layer1.0.conv1.weight"
    for wrapper in ("state_dict", "model"):
        assert len(load_official_ddag(model, {wrapper: state}).ignored_keys) == DEAD
    assert len(load_official_ddag(model, state).ignored_keys) == DEAD  # a bare state dict


def test_strict_everywhere_else(model: DDAG) -> None:
    state = build_state_dict(ddag_layout(NUM_CLASSES), live="zeros")
    with pytest.raises(RuntimeError, match=r"classifier\.bias"):  # a foreign key
        load_official_ddag(model, {**state, "classifier.bias": torch.zeros(NUM_CLASSES)})
    missing = {k: v for k, v in state.items() if k != "wpa.fc3.bias"}
    with pytest.raises(RuntimeError, match=r"iwpa\.fc3\.bias"):
        load_official_ddag(model, missing)
    result = load_official_ddag(model, missing, strict=False)
    assert result.missing_keys == ["iwpa.fc3.bias"] and result.unexpected_keys == []
    with pytest.raises(RuntimeError, match=r"size mismatch for iwpa\.gate"):  # --part 4
        load_official_ddag(model, {**state, "wpa.gate": torch.zeros(4)})
    with pytest.raises(RuntimeError, match="size mismatch"):  # a RegDB file (206 classes) into a SYSU model
        load_official_ddag(model, build_state_dict(ddag_layout(206), live="zeros"))
    with pytest.raises(RuntimeError, match=r"cgsa"):  # --low-dim 256: the graph heads do not fit
        load_official_ddag(model, build_state_dict(ddag_layout(NUM_CLASSES, low_dim=256), live="zeros"))


def test_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="model"):
        load_official_ddag(nn.Linear(2, 2), {})  # type: ignore[arg-type]
    small = DDAG(5, backbone="resnet18", graph_hidden=8)
    with pytest.raises(FileNotFoundError):
        load_official_ddag(small, tmp_path / "missing.t")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_official_ddag(small, 3)  # type: ignore[arg-type]
    path = tmp_path / "pickled.t"
    torch.save({"net": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_official_ddag(small, path)
    with pytest.raises(TypeError, match="non-tensor"):
        convert_official_ddag_state_dict({"net": {"a": 1.0}})


# ------------------------------------------------------------------------------------------ equivalence


def entries_of(module: nn.Module) -> list[Entry]:
    """The state-dict layout of ``module`` (keys, shapes, dtypes in order), the dead entries marked."""
    return [
        Entry(k, tuple(v.shape), v.dtype, status="dead" if is_dead(k) else "used")
        for k, v in module.state_dict().items()
    ]


def assert_close_f64(actual: Tensor, expected: Tensor) -> None:
    """Float64 agreement up to rounding: relative 1e-9, absolute 1e-10 of the output's scale."""
    assert actual.dtype == expected.dtype == F64
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("numpy_major", [1, 2])
def test_official_checkpoint_gives_the_official_embeddings(tmp_path, numpy_major: int) -> None:
    """A checkpoint file of the official network loads into DDAG, which then embeds as the official one does.

    ResNet-18 trunks (the layout is §4's with 512 channels), 7 classes, low_dim 16; random float64 weights and
    BatchNorm statistics for every live entry, the frozen BN shifts at 0, the dead entries zeros; the file
    wrapped and pickled as ``train_ddag.py`` saves it. The official test features (``test_ddag.py``, one
    modality at a time, eval mode): the BN feature (FC) and the IWPA feature (FC_att), both L2-normalised.
    """
    torch.manual_seed(0)
    official = OfficialDDAG("resnet18", 7, 16, drop=0.0).double()
    entries = entries_of(official)
    state = build_state_dict(entries, seed=3, dtype=F64)
    official.load_state_dict(state, strict=True)
    path = save_checkpoint(official_checkpoint("ddag", state), tmp_path / FILE, numpy=numpy_major)

    model = DDAG(7, backbone="resnet18", graph_hidden=16).double()
    result = load_official_ddag(model, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert result.ignored_keys == [e.key for e in entries if e.status == "dead"]
    model.eval()
    official.eval()
    gen = torch.Generator().manual_seed(4)
    visible, infrared = (torch.randn(3, 3, 96, 32, generator=gen, dtype=F64) for _ in range(2))
    with torch.no_grad():
        for modality, modal, data in ((Modality.VISIBLE, 1, visible), (Modality.INFRARED, 2, infrared)):
            fc, att = official(data, data, 0, modal=modal)
            assert_close_f64(model.embed(data, modality), att)
            assert_close_f64(model.embed(data, modality, mode="fc"), fc)
            assert not torch.allclose(att, fc, atol=1e-3)  # IWPA is active
        # A mixed batch: each image through the stem of its modality.
        _, att_visible = official(visible, visible, 0, modal=1)
        _, att_infrared = official(infrared, infrared, 0, modal=2)
        mixed = model.embed(torch.cat([visible, infrared]), torch.tensor([0, 0, 0, 1, 1, 1]))
        assert_close_f64(mixed, torch.cat([att_visible, att_infrared]))
