"""Tests for loading official MPANet checkpoints into MPANet.

The checkpoints are built from reference/official_checkpoints.md §5 by tests/official_checkpoints.py: every key,
shape and dtype of the official ``Baseline`` (SYSU configuration), saved as its engine saves them: the bare
``model.state_dict()`` (``model_best.pth`` and the periodic ``{prefix}_model_{epoch}.pth``). The official network
written out in tests/official_networks.py has exactly that layout at ResNet-50 (checked below); at ResNet-18 a
checkpoint file of it loads into MPANet, and both give the same test feature in float64.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from official_checkpoints import Entry, build_state_dict, mpanet_layout, official_checkpoint, save_checkpoint
from official_networks import OfficialMPANet
from torch import Tensor, nn

from vireid_layers import Modality
from vireid_layers.compat import (
    OfficialConversion,
    OfficialLoadResult,
    convert_official_mpanet_state_dict,
    detect_official_model,
    load_official_mpanet,
)
from vireid_layers.models import MPANet

F64 = torch.float64
NUM_CLASSES = 395


@pytest.fixture(scope="module")
def model() -> MPANet:
    """One official-architecture MPANet for the module (every test loads a full strict checkpoint into it)."""
    return MPANet(NUM_CLASSES)


def our_keys(key: str) -> list[str]:
    """The documented renaming (docs/mpanet.rst), written out independently of the converter."""
    if key.startswith(("backbone.conv1.", "backbone.bn1.")):  # one official stem, two of ours
        rest = key.removeprefix("backbone.")
        return [f"backbone.visible_stem.{rest}", f"backbone.infrared_stem.{rest}"]
    if key.startswith("backbone.layer"):
        stage, rest = key.removeprefix("backbone.layer").split(".", 1)
        return [f"backbone.stages.{int(stage) - 1}.{rest}"]
    if key.startswith("backbone.MAM"):
        return ["mam." + key.removeprefix("backbone.MAM")]
    if key.startswith(("visible_classifier", "infrared_classifier")):
        return ["modality_classifiers." + key]
    for theirs, ours in (("spatial_attention.", "pam.spatial_attention."), ("bn_neck.", "neck.")):
        if key.startswith(theirs):
            return [ours + key.removeprefix(theirs)]
    return [key]


# The sub-keys the blocks' own hooks rename: MAM, PAM, ModalityClassifiers.
_BLOCK_KEYS = {
    "channel_attention.0.weight": "fc1.weight",
    "channel_attention.2.weight": "fc2.weight",
    "spatial_attention.": "generator.",
    "visible_classifier.weight": "visible.weight",
    "infrared_classifier.weight": "infrared.weight",
    "visible_classifier_.weight": "visible_mean",
    "infrared_classifier_.weight": "infrared_mean",
}


def official_value(state: dict[str, Tensor], key: str) -> Tensor:
    """The tensor our MPANet key ``key`` must hold after loading the official ``state``."""
    inverse = {}
    for official in state:
        for ours in our_keys(official):
            for theirs, block in _BLOCK_KEYS.items():
                ours = ours.replace(theirs, block)
            inverse[ours] = official
    return state[inverse[key]]


# ------------------------------------------------------------------------------------------------ layout


def test_official_network_has_the_documented_layout() -> None:
    """The re-implementation used for the float64 comparison has the documented 334 keys, shapes and dtypes."""
    with torch.device("meta"):
        official = OfficialMPANet("resnet50", NUM_CLASSES)
    actual = [(k, tuple(v.shape), v.dtype) for k, v in official.state_dict().items()]
    assert actual == [(e.key, e.shape, e.dtype) for e in mpanet_layout(NUM_CLASSES)]


def test_convert_documented_layout() -> None:
    entries = mpanet_layout(NUM_CLASSES)
    state = build_state_dict(entries, live="zeros")
    converted = convert_official_mpanet_state_dict(state)
    assert isinstance(converted, OfficialConversion)
    assert converted.ignored_keys == []  # §5.3: no dead entry
    assert list(converted.state_dict) == [new for e in entries for new in our_keys(e.key)]
    assert len(converted.state_dict) == 334 + 6  # the stem's 6 entries go to both stems
    assert all(converted.state_dict[new] is state[k] for k in state for new in our_keys(k))
    assert detect_official_model(state) == "mpanet"


def test_load_file_in_the_documented_layout(tmp_path, model: MPANet) -> None:
    """Every tensor of a full float32 ``model_best.pth`` lands at its documented place."""
    entries = mpanet_layout(NUM_CLASSES)
    state = build_state_dict(entries, seed=7)
    path = save_checkpoint(official_checkpoint("mpanet", state), tmp_path / "model_best.pth")
    result = load_official_mpanet(model, path)
    assert isinstance(result, OfficialLoadResult)
    assert result == OfficialLoadResult([], [], [])
    ours = model.state_dict()
    assert len(ours) == 334 + 6
    for key, value in ours.items():
        torch.testing.assert_close(value, official_value(state, key), rtol=0, atol=0, msg=key)
    # The same as the model's own hook on the bare official dict: the renaming lives in one place.
    other = MPANet(NUM_CLASSES)
    other.load_state_dict(state, strict=True)
    for key, value in other.state_dict().items():
        torch.testing.assert_close(value, ours[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("zipfile", [True, False])
@pytest.mark.parametrize("numpy_major", [1, 2])
def test_load_official_files(tmp_path, model: MPANet, numpy_major: int, zipfile: bool) -> None:
    """Bare state dicts (periodic file), zip or legacy format, pickled by the NumPy 1.x or 2.x pickler: strict."""
    checkpoint = official_checkpoint("mpanet", build_state_dict(mpanet_layout(NUM_CLASSES), live="zeros"))
    path = save_checkpoint(checkpoint, tmp_path / "SYSU_model_140.pth", numpy=numpy_major, zipfile=zipfile)
    assert len(torch.load(path, weights_only=True)) == 334  # a bare state dict needs no allowlist
    result = load_official_mpanet(model, path)
    assert result == OfficialLoadResult([], [], [])
    assert not model.pam.generator.weight.any() and not model.modality_classifiers.visible_mean.any()
    assert detect_official_model(path) == "mpanet"


def test_module_prefix_and_wrappers(model: MPANet) -> None:
    state = build_state_dict(mpanet_layout(NUM_CLASSES), live="zeros")
    prefixed = official_checkpoint("mpanet", state, module_prefix=True)
    assert next(iter(prefixed)).startswith("module.")
    assert load_official_mpanet(model, prefixed).missing_keys == []
    for wrapper in ("net", "state_dict", "model"):
        assert load_official_mpanet(model, {wrapper: state, "epoch": 140}).unexpected_keys == []


def test_strict_everywhere_else(model: MPANet) -> None:
    state = build_state_dict(mpanet_layout(NUM_CLASSES), live="zeros")
    with pytest.raises(RuntimeError, match=r"classifier\.bias"):  # a foreign key
        load_official_mpanet(model, {**state, "classifier.bias": torch.zeros(NUM_CLASSES)})
    missing = {k: v for k, v in state.items() if not k.startswith("backbone.MAM4.")}
    with pytest.raises(RuntimeError, match=r"mam\.4\.fc1\.weight"):
        load_official_mpanet(model, missing)
    result = load_official_mpanet(model, missing, strict=False)
    assert result.missing_keys == ["mam.4.fc1.weight", "mam.4.fc2.weight"] and result.unexpected_keys == []
    with pytest.raises(RuntimeError, match=r"size mismatch for classifier\.weight"):  # RegDB: 206 classes
        load_official_mpanet(model, build_state_dict(mpanet_layout(206), live="zeros"))
    with pytest.raises(RuntimeError, match=r"size mismatch for pam\.generator\.weight"):  # num_parts 4
        load_official_mpanet(model, build_state_dict(mpanet_layout(NUM_CLASSES, num_parts=4), live="zeros"))
    one_mam = MPANet(NUM_CLASSES, modality_attention=1)
    with pytest.raises(RuntimeError, match=r"mam\.3"):  # the official network has two MAMs
        load_official_mpanet(one_mam, state)


def test_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="model"):
        load_official_mpanet(nn.Linear(2, 2), {})  # type: ignore[arg-type]
    small = MPANet(5, backbone="resnet18")
    with pytest.raises(FileNotFoundError):
        load_official_mpanet(small, tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_official_mpanet(small, 3)  # type: ignore[arg-type]
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_official_mpanet(small, path)
    with pytest.raises(TypeError, match="non-tensor"):
        convert_official_mpanet_state_dict({"backbone.conv1.weight": 1.0})


# ------------------------------------------------------------------------------------------ equivalence


def assert_close_f64(actual: Tensor, expected: Tensor) -> None:
    """Float64 agreement up to rounding: relative 1e-9, absolute 1e-10 of the output's scale."""
    assert actual.dtype == expected.dtype == F64
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 * scale)


def test_official_checkpoint_gives_the_official_embeddings(tmp_path) -> None:
    """A ``model_best.pth`` of the official network loads into MPANet, which then embeds as the official one does.

    ResNet-18 (the layout is §5's with 512 channels: a 3584-d feature), 7 classes; random float64 weights and
    BatchNorm statistics, the frozen BN-neck shift at 0, distinct EMA classifiers as in a trained file. The
    official test feature is the BN-neck output (eval mode), L2-normalised for SYSU-MM01 and raw for RegDB.
    """
    torch.manual_seed(0)
    official = OfficialMPANet("resnet18", 7).double()
    entries = [Entry(k, tuple(v.shape), v.dtype) for k, v in official.state_dict().items()]
    state = build_state_dict(entries, seed=3, dtype=F64)
    official.load_state_dict(state, strict=True)
    path = save_checkpoint(official_checkpoint("mpanet", state), tmp_path / "model_best.pth")

    model = MPANet(7, backbone="resnet18").double()
    assert load_official_mpanet(model, path) == OfficialLoadResult([], [], [])
    model.eval()
    official.eval()
    x = torch.randn(6, 3, 96, 32, generator=torch.Generator().manual_seed(4), dtype=F64)
    cams = torch.tensor([3, 1, 6, 2, 3, 4])  # SYSU infrared cameras 3 and 6
    modalities = ((cams == 3) | (cams == 6)).long()
    with torch.no_grad():
        (neck,) = official(x, cams)
        assert neck.shape == (6, 512 * 7)
        assert_close_f64(model.embed(x, modalities, normalize=False), neck)
        assert_close_f64(model.embed(x, modalities), F.normalize(neck, dim=1))
        assert_close_f64(model.embed(x[:2], Modality.INFRARED), F.normalize(neck[:2], dim=1))
        # The pattern parts are active: the part columns are not the global feature.
        assert not torch.allclose(neck[:, :512], neck[:, -512:], atol=1e-3)
