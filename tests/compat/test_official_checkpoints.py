"""The fake official checkpoints of tests/official_checkpoints.py have exactly the documented layout.

Every number below is copied from reference/official_checkpoints.md: the counts of §3.3, §4.3, §5.3 and §6.3, the
index ranges of the key-group tables (§3.4, §4.4, §5.4, §6.4), example shapes quoted in the text, and how each
script saves (§1, §3.1, §4.1, §5.1, §6.1).
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from official_checkpoints import (
    MODELS,
    agw_layout,
    build_state_dict,
    deen_layout,
    layout,
    official_checkpoint,
    pickled_globals,
    resnet50_layout,
    save_checkpoint,
)

from vireid_layers.compat._official import numpy_safe_globals

# entries, BNs, parameters, trainable, dead entries, dead parameters, train-only entries, train-only parameters,
# parameters used at test
DOCUMENTED = {
    "deen-sysu": (1048, 166, 89_044_320, 89_042_272, 630, 47_006_528, 1, 808_960, 41_228_832),
    "deen-regdb": (1022, 164, 75_065_440, 75_064_416, 690, 61_971_264, 1, 210_944, 12_883_232),
    "ddag": (991, 162, 94_756_825, 94_752_729, 639, 52_824_896, 11, 5_817_110, 36_114_819),
    "mpanet": (334, 54, 52_517_958, 41_178_182, 0, 0, 5, 28_313_600, 24_204_358),
    "agw": (1025, 165, 71_365_839, 71_363_791, 630, 47_006_528, 1, 808_960, 23_550_351),
}

R50 = r"(conv1|bn1|layer[1-4])\."
THREE_R50S = [(0, 317, rf"thermal_module\.thermal\.{R50}"), (318, 635, rf"visible_module\.visible\.{R50}")]
THREE_R50S += [(636, 953, rf"base_resnet\.base\.{R50}")]
# (first index, last index, pattern of every key in between and of no other key)
GROUPS = {
    "deen-sysu": [
        *THREE_R50S,
        (954, 963, r"DEE\."),
        (964, 989, r"MFA1\.(CNL|PNL)\."),
        (990, 1015, r"MFA2\.(CNL|PNL)\."),
        (1016, 1041, r"MFA3\.(CNL|PNL)\."),
        (1042, 1046, r"bottleneck\."),
        (1047, 1047, r"classifier\.weight"),
    ],
    "ddag": [
        *THREE_R50S,
        (954, 958, r"bottleneck\."),
        (959, 959, r"classifier\.weight"),
        (960, 960, r"classifier1\.weight"),
        (961, 961, r"classifier2\.weight"),
        (962, 962, r"wpa\.gate"),
        (963, 964, r"wpa\.fc1\.0\.(weight|bias)"),
        (965, 966, r"wpa\.fc2\.(weight|bias)"),
        (967, 968, r"wpa\.fc3\.(weight|bias)"),
        (969, 975, r"wpa\.W\.[01]\."),
        (976, 980, r"wpa\.bottleneck\."),
        (981, 988, r"attention_[0-3]\.[Wa]"),
        (989, 990, r"out_att\.[Wa]"),
    ],
    "mpanet": [
        (0, 317, rf"backbone\.{R50}"),
        (318, 319, r"backbone\.MAM3\.channel_attention\.[02]\.weight"),
        (320, 321, r"backbone\.MAM4\.channel_attention\.[02]\.weight"),
        (322, 323, r"spatial_attention\.(weight|bias)"),
        (324, 324, r"visible_classifier\.weight"),
        (325, 325, r"infrared_classifier\.weight"),
        (326, 326, r"visible_classifier_\.weight"),
        (327, 327, r"infrared_classifier_\.weight"),
        (328, 332, r"bn_neck\."),
        (333, 333, r"classifier\.weight"),
    ],
    "agw": [
        *THREE_R50S,
        (954, 979, r"NL_2\.[01]\."),
        (980, 1018, r"NL_3\.[012]\."),
        (1019, 1023, r"bottleneck\."),
        (1024, 1024, r"classifier\.weight"),
    ],
}

# Shapes quoted in the document's text.
SHAPES = {
    "deen-sysu": {
        "MFA1.PNL.g.weight": (32, 64, 1, 1),
        "MFA3.CNL.theta.weight": (512, 1024, 1, 1),
        "DEE.FC11.weight": (256, 1024, 3, 3),
        "DEE.FC1.weight": (1024, 256, 1, 1),
        "classifier.weight": (395, 2048),
    },
    "deen-regdb": {
        "DEE.FC12.weight": (128, 512, 3, 3),
        "DEE.FC1.weight": (512, 128, 1, 1),
        "bottleneck.weight": (1024,),
        "classifier.weight": (206, 1024),
    },
    "ddag": {
        "wpa.gate": (3,),
        "wpa.fc1.0.weight": (2048, 2048, 1, 1),
        "attention_3.W": (2048, 512),
        "attention_0.a": (1024, 1),
        "out_att.W": (2048, 395),
        "out_att.a": (790, 1),
    },
    "mpanet": {
        "backbone.MAM3.channel_attention.0.weight": (64, 1024, 1, 1),
        "backbone.MAM4.channel_attention.2.weight": (2048, 128, 1, 1),
        "spatial_attention.weight": (6, 2048, 1, 1),
        "bn_neck.running_var": (14336,),
        "infrared_classifier_.weight": (395, 14336),
    },
    "agw": {
        "NL_2.0.g.0.weight": (1, 512, 1, 1),
        "NL_3.2.W.0.weight": (1024, 1, 1, 1),
        "NL_3.1.phi.bias": (1,),
        "bottleneck.num_batches_tracked": (),
    },
}


@pytest.mark.parametrize("model", MODELS)
def test_documented_counts(model: str) -> None:
    entries = layout(model)
    params = [e for e in entries if e.parameter]
    dead = [e for e in entries if e.status == "dead"]
    train_only = [e for e in entries if e.status == "train-only"]
    counted = (
        len(entries),
        sum(e.key.endswith(".num_batches_tracked") for e in entries),
        sum(e.numel for e in params),
        sum(e.numel for e in params if e.trainable),
        len(dead),
        sum(e.numel for e in dead if e.parameter),
        len(train_only),
        sum(e.numel for e in train_only),
        sum(e.numel for e in params if e.status == "used"),
    )
    assert counted == DOCUMENTED[model]
    assert len({e.key for e in entries}) == len(entries)
    assert all(e.dtype == (torch.int64 if e.key.endswith("num_batches_tracked") else torch.float32) for e in entries)
    assert all(e.shape == () for e in entries if e.dtype == torch.int64)


@pytest.mark.parametrize("model", sorted(GROUPS))
def test_documented_key_groups(model: str) -> None:
    keys = [e.key for e in layout(model)]
    covered = 0
    for first, last, pattern in GROUPS[model]:
        matching = [i for i, key in enumerate(keys) if re.match(pattern, key)]
        assert matching == list(range(first, last + 1)), pattern
        covered += len(matching)
    assert covered == len(keys)


def test_deen_regdb_differs_from_sysu_as_documented() -> None:
    sysu, regdb = deen_layout("sysu"), deen_layout("regdb")
    assert [e.key for e in regdb] == [e.key for e in sysu if not e.key.startswith("MFA3.")]
    status = {e.key: e.status for e in regdb}
    assert {k for k, s in status.items() if s == "dead"} - {e.key for e in sysu if e.status == "dead"} == {
        k for k in status if k.startswith("base_resnet.base.layer4.")
    }
    assert sum(k.startswith("base_resnet.base.layer4.") for k in status) == 60


@pytest.mark.parametrize("model", sorted(SHAPES))
def test_documented_shapes(model: str) -> None:
    shapes = {e.key: e.shape for e in layout(model)}
    for key, shape in SHAPES[model].items():
        assert shapes[key] == shape, key


def test_frozen_entries() -> None:
    frozen = {m: {e.key for e in layout(m) if e.parameter and not e.trainable} for m in MODELS}
    assert frozen["deen-sysu"] == frozen["agw"] == {"bottleneck.bias"}
    assert frozen["ddag"] == {"bottleneck.bias", "wpa.bottleneck.bias"}
    assert frozen["mpanet"] == {"bn_neck.bias", "visible_classifier_.weight", "infrared_classifier_.weight"}


def test_agw_base_method() -> None:
    base = agw_layout(method="base")
    assert len(base) == 960 and sum(e.numel for e in base if e.parameter) == 71_337_152
    assert [e.key for e in base] == [e.key for e in agw_layout() if not e.key.startswith("NL_")]


def test_resnet50_block_is_torchvision_without_fc() -> None:
    """§2: after the prefix, exactly torchvision's resnet50().state_dict() without fc, in order (timm: same)."""
    entries = resnet50_layout("P.")
    assert len(entries) == 318 and sum(e.numel for e in entries if e.parameter) == 23_508_032
    try:
        import torchvision

        reference = torchvision.models.resnet50().state_dict()
    except ImportError:
        reference = timm.create_model("resnet50").state_dict()
    expected = [(k, tuple(v.shape), v.dtype) for k, v in reference.items() if not k.startswith("fc.")]
    assert [(e.key.removeprefix("P."), e.shape, e.dtype) for e in entries] == expected


# --------------------------------------------------------------------------------------------------- values


def test_build_state_dict_values() -> None:
    entries = agw_layout(5)
    state = build_state_dict(entries, seed=1, dtype=torch.float64)
    assert list(state) == [e.key for e in entries]
    assert all(tuple(state[e.key].shape) == e.shape for e in entries)
    assert state["bottleneck.num_batches_tracked"].dtype == torch.int64
    assert state["bottleneck.weight"].dtype == torch.float64
    assert not state["bottleneck.bias"].any()  # frozen at its zero initialisation
    dead = [e.key for e in entries if e.status == "dead"]
    assert all(state[k].stride() == (0,) * state[k].ndim and not state[k].any() for k in dead)
    assert state["NL_2.0.W.1.weight"].min() >= 0.5 and state["base_resnet.base.layer1.0.bn1.running_var"].min() >= 0.5
    again = build_state_dict(entries, seed=1, dtype=torch.float64)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(build_state_dict(entries, seed=2)["NL_2.0.g.0.weight"], state["NL_2.0.g.0.weight"].float())
    zeros = build_state_dict(entries, live="zeros")
    assert all(not t.any() for t in zeros.values() if t.is_floating_point())


# ------------------------------------------------------------------------------------------------ wrappers


@pytest.mark.parametrize(
    ("model", "periodic", "keys"),
    [
        ("deen-sysu", False, ["net", "cmc", "mAP", "mINP", "epoch"]),
        ("deen-regdb", False, ["net", "cmc", "mAP", "mINP", "epoch"]),
        ("ddag", False, ["net", "cmc", "mAP", "epoch"]),  # no mINP
        ("agw", False, ["net", "cmc", "mAP", "mINP", "epoch"]),
        ("agw", True, ["net", "cmc", "mAP", "epoch"]),  # the periodic _epoch_{n}.t file
    ],
)
def test_wrapper_dicts(model: str, periodic: bool, keys: list[str]) -> None:
    state = build_state_dict(layout(model), live="zeros")
    checkpoint = official_checkpoint(model, state, epoch=40, periodic=periodic)
    assert list(checkpoint) == keys
    assert checkpoint["net"] == state and list(checkpoint["net"]) == list(state)  # no module. prefix
    cmc = checkpoint["cmc"]
    assert isinstance(cmc, np.ndarray) and cmc.dtype == np.float32 and cmc.shape == (20,)
    assert all(type(checkpoint[k]) is np.float64 for k in ("mAP", "mINP") if k in checkpoint)
    assert type(checkpoint["epoch"]) is int and checkpoint["epoch"] == 40
    prefixed = official_checkpoint(model, state, module_prefix=True)["net"]
    assert list(prefixed) == [f"module.{k}" for k in state]


def test_mpanet_saves_the_bare_state_dict() -> None:
    state = build_state_dict(layout("mpanet"), live="zeros")
    checkpoint = official_checkpoint("mpanet", state)
    assert isinstance(checkpoint, OrderedDict) and list(checkpoint) == list(state)


# ----------------------------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("zipfile", [True, False])
@pytest.mark.parametrize("numpy_major", [1, 2])
def test_numpy_pickles(tmp_path, numpy_major: int, zipfile: bool) -> None:
    """The metrics pickle as NumPy 1.x / 2.x writes them; weights_only refuses them unless allowlisted (§1)."""
    state = build_state_dict(layout("ddag"), live="zeros")
    path = save_checkpoint(official_checkpoint("ddag", state), tmp_path / "ddag.t", numpy=numpy_major, zipfile=zipfile)
    found = pickled_globals(path)
    module = "numpy.core.multiarray" if numpy_major == 1 else "numpy._core.multiarray"
    assert {f"{module}._reconstruct", f"{module}.scalar", "numpy.ndarray", "numpy.dtype"} <= found
    assert not any(g.startswith(("numpy.core.", "numpy._core.")) and not g.startswith(module) for g in found)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals(numpy_safe_globals()):
        loaded = torch.load(path, weights_only=True)
    assert list(loaded) == ["net", "cmc", "mAP", "epoch"] and list(loaded["net"]) == list(state)
    np.testing.assert_array_equal(loaded["cmc"], np.linspace(0.5, 0.99, 20, dtype=np.float32))
    assert loaded["mAP"] == np.float64(0.47) and loaded["epoch"] == 80
