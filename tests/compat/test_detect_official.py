"""Tests for detect_official_model and read_official_checkpoint on the documented official layouts."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from official_checkpoints import MODELS, agw_layout, build_state_dict, layout, official_checkpoint, save_checkpoint

from vireid_layers.compat import detect_official_model, read_official_checkpoint
from vireid_layers.models import AGW, DDAG, DEEN, MPANet


@pytest.mark.parametrize("name", MODELS)
def test_every_documented_layout_is_detected(tmp_path, name: str) -> None:
    state = build_state_dict(layout(name), live="zeros")
    expected = name.split("-")[0]
    assert detect_official_model(state) == expected
    checkpoint = official_checkpoint(name, state, module_prefix=True)
    assert detect_official_model(checkpoint) == expected
    path = save_checkpoint(checkpoint, tmp_path / "official.t", numpy=1)
    assert detect_official_model(path) == expected


def test_agw_base_method() -> None:
    assert detect_official_model(build_state_dict(agw_layout(method="base"), live="zeros")) == "agw"


@pytest.mark.parametrize(
    "factory",
    [
        lambda: DEEN(4, backbone="resnet18"),
        lambda: AGW(4, backbone="resnet18"),
        lambda: DDAG(4, backbone="resnet18", graph_hidden=8),
        lambda: MPANet(4, backbone="resnet18"),
    ],
)
def test_the_library_layout_is_not_official(factory) -> None:
    with pytest.raises(ValueError, match="not an official"):
        detect_official_model(factory().state_dict())


def test_ambiguous_keys_are_named() -> None:
    deen = build_state_dict(layout("deen-sysu"), live="zeros")
    with pytest.raises(ValueError, match=r"ambiguous.*DEEN \('DEE\..*DDAG \('wpa\.gate'\)"):
        detect_official_model({**deen, "wpa.gate": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"ambiguous.*MPANet \('bn_neck\.weight'\)"):
        detect_official_model({**deen, "bn_neck.weight": torch.zeros(3)})


def test_read_official_checkpoint(tmp_path) -> None:
    state = {"bottleneck.weight": torch.ones(4)}
    path = save_checkpoint(official_checkpoint("ddag", state), tmp_path / "ddag.t", numpy=1, zipfile=False)
    checkpoint = read_official_checkpoint(path)
    assert set(checkpoint) == {"net", "cmc", "mAP", "epoch"}
    assert isinstance(checkpoint["cmc"], np.ndarray) and checkpoint["cmc"].shape == (20,)
    torch.testing.assert_close(checkpoint["net"]["bottleneck.weight"], torch.ones(4))


def test_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="path"):
        read_official_checkpoint(3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        read_official_checkpoint(tmp_path / "missing.t")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        detect_official_model(None)  # type: ignore[arg-type]
    path = tmp_path / "pickled.t"
    torch.save({"net": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        detect_official_model(path)
    with pytest.raises(ValueError, match="not an official"):
        detect_official_model({})
    with pytest.raises(TypeError, match="non-tensor"):
        detect_official_model({"net": {"a": 1}})
