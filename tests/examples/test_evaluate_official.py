"""``examples/evaluate.py --official`` on official AGW, DDAG and MPANet checkpoints (DEEN: in test_examples.py).

Each official file holds every key and shape of the documented layout (tests/official_checkpoints.py, from
reference/official_checkpoints.md), random values, saved as the official script saves it. evaluate.py must load it
(the network named by ``--model`` or detected from the keys), and give the numbers of the same weights saved in
the library's own layout and evaluated without ``--official``. The DDAG and MPANet cases run once their recipes
are registered.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from official_checkpoints import agw_layout, build_state_dict, ddag_layout, mpanet_layout, official_checkpoint
from official_checkpoints import save_checkpoint as save_official
from torch import nn

from vireid_layers.compat import load_official_agw, load_official_ddag, load_official_mpanet
from vireid_layers.models import AGW, DDAG, MPANet
from vireid_layers.recipes import list_recipes

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 10  # the tiny dataset's training identities


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_example", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate() -> ModuleType:
    return load_example("evaluate")


def common(tiny_root: Path) -> list[str]:
    return ["--dataset", "synthetic", "--root", str(tiny_root), "--height", "64", "--width", "32", "--trials", "1"]


def run(evaluate: ModuleType, argv: list[str], out: Path) -> dict[str, Any]:
    assert evaluate.main([*argv, "--json", str(out)]) == 0, argv
    return json.loads(out.read_text())


def official_and_ours(
    tmp_path: Path,
    name: str,
    state: dict[str, torch.Tensor],
    file_name: str,
    model: nn.Module,
    loader: Callable[..., Any],
    **kwargs: Any,
) -> tuple[Path, Path]:
    """The official file (as its script saves it) and the same weights in our layout, loaded by the compat loader."""
    official = save_official(official_checkpoint(name, state, **kwargs), tmp_path / file_name, numpy=1)
    result = loader(model, state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    ours = tmp_path / "ours.pt"
    torch.save(model.state_dict(), ours)
    return official, ours


# ------------------------------------------------------------------------------------------------------ AGW


def test_official_agw_best_file(tmp_path: Path, tiny_root: Path, evaluate: ModuleType) -> None:
    """The network is detected from the keys; the numbers equal those of the same weights in our layout."""
    state = build_state_dict(agw_layout(CLASSES), seed=1)
    official, ours = official_and_ours(
        tmp_path, "agw", state, "sysu_agw_p4_n8_lr_0.1_seed_0_best.t", AGW(CLASSES), load_official_agw, epoch=54
    )
    got = run(evaluate, [str(official), "--official", *common(tiny_root)], tmp_path / "official.json")
    expected = run(evaluate, [str(ours), "--model", "agw", *common(tiny_root)], tmp_path / "ours.json")
    assert got["official"] and got["settings"]["model"] == "agw" and got["settings"]["backbone"] == "resnet50"
    assert got["results"]["mean"] == pytest.approx(expected["results"]["mean"], abs=1e-6)
    assert got["selection"].startswith("test set: the official AGW train.py keeps the best Rank-1 of the BN (fc)")
    assert got["selection"].endswith("saved at epoch 54")
    # --model agw names the same network.
    named = run(evaluate, [str(official), "--official", "--model", "agw", *common(tiny_root)], tmp_path / "n.json")
    assert named["results"]["mean"] == got["results"]["mean"]


def test_official_agw_periodic_and_base_files(
    tmp_path: Path, tiny_root: Path, evaluate: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """A periodic file states its epoch, not a selection; a --method base file gives the base variant."""
    state = build_state_dict(agw_layout(CLASSES, method="base"), seed=2)
    official, ours = official_and_ours(
        tmp_path,
        "agw",
        state,
        "sysu_base_p4_n8_lr_0.1_seed_0_epoch_40.t",
        AGW(CLASSES, method="base"),
        load_official_agw,
        periodic=True,
        epoch=40,
    )
    got = run(evaluate, [str(official), "--official", *common(tiny_root)], tmp_path / "official.json")
    assert got["selection"] == "epoch 40: a periodic file of the official AGW script (no selection)"
    assert "- checkpoint selection: epoch 40: a periodic file" in capsys.readouterr().out
    base = ["--model", "agw", "--variant", "base"]
    expected = run(evaluate, [str(ours), *base, *common(tiny_root)], tmp_path / "ours.json")
    assert got["results"]["mean"] == pytest.approx(expected["results"]["mean"], abs=1e-6)
    # --variant overrides what the weights say, and then the file does not fit.
    assert evaluate.main([str(official), "--official", "--variant", "agw", *common(tiny_root)]) == 2
    assert "does not fit the official AGW" in capsys.readouterr().err


def test_official_errors(
    tmp_path: Path, tiny_root: Path, evaluate: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    agw = save_official(
        official_checkpoint("agw", build_state_dict(agw_layout(CLASSES), live="zeros")), tmp_path / "agw_best.t"
    )
    ambiguous = tmp_path / "ambiguous.t"
    torch.save({**build_state_dict(agw_layout(CLASSES), live="zeros"), "wpa.gate": torch.zeros(3)}, ambiguous)
    ours = tmp_path / "ours.pt"
    torch.save(AGW(CLASSES, backbone="resnet18").state_dict(), ours)
    bare = tmp_path / "bare.pt"  # the official weights without the NumPy metrics: readable, but official keys
    torch.save(build_state_dict(agw_layout(CLASSES), live="zeros"), bare)
    cases = [
        ([str(agw), "--official", "--model", "mso"], "cannot be combined with --model mso"),
        ([str(agw), "--official", "--model", "ddag"], "has the keys of an official AGW checkpoint"),
        ([str(ambiguous), "--official"], "ambiguous official checkpoint"),
        ([str(ours), "--official"], "not an official DEEN, AGW, DDAG or MPANet checkpoint"),
        ([str(agw), "--model", "agw"], "(which stores NumPy metrics) pass --official"),
        ([str(bare), "--model", "agw"], "is an official AGW checkpoint: pass --official"),
        ([str(agw), "--official", "--backbone", "resnet18"], "does not fit the official AGW"),
    ]
    for argv, match in cases:
        assert evaluate.main([*argv, *common(tiny_root)]) == 2, argv
        assert match in capsys.readouterr().err, argv


def test_selection_statements(evaluate: ModuleType) -> None:
    """Each official script's rule (official_checkpoints.md §3.1, §4.1, §5.1, §6.1)."""
    official = evaluate.OfficialCheckpoint
    deen = official("deen", {"net": {}, "epoch": 61}, {})
    assert evaluate.official_selection(deen, "x_best.t").endswith("checked every epoch; saved at epoch 61")
    ddag = official("ddag", {"net": {}, "epoch": 30}, {})
    assert "IWPA attention feature" in evaluate.official_selection(ddag, "sysu_G_P_3_drop_0.2_4_8_lr_0.1_seed_0_best.t")
    mpanet = official("mpanet", {}, {})
    assert "every 5th epoch after epoch 115" in evaluate.official_selection(mpanet, "model_best.pth")
    assert evaluate.official_selection(mpanet, "SYSU_model_135.pth") == (
        "epoch 135: a periodic file of the official MPANet script (no selection)"
    )
    assert evaluate.official_selection(mpanet, "weights.pth") is None
    agw_periodic = official("agw", {"net": {}, "cmc": 0, "mAP": 0, "epoch": 60}, {})  # no mINP: periodic
    assert evaluate.official_selection(agw_periodic, "renamed.t").startswith("epoch 60: a periodic file")


# --------------------------------------------------------------------------------------------- DDAG, MPANet


@pytest.mark.skipif("ddag" not in list_recipes(), reason="the ddag recipe is not registered yet")
def test_official_ddag_best_file(tmp_path: Path, tiny_root: Path, evaluate: ModuleType) -> None:
    state = build_state_dict(ddag_layout(CLASSES), seed=3)
    official, ours = official_and_ours(
        tmp_path, "ddag", state, "sysu_G_P_3_drop_0.2_4_8_lr_0.1_seed_0_best.t", DDAG(CLASSES), load_official_ddag
    )
    got = run(evaluate, [str(official), "--official", *common(tiny_root)], tmp_path / "official.json")
    expected = run(evaluate, [str(ours), "--model", "ddag", *common(tiny_root)], tmp_path / "ours.json")
    assert got["official"] and got["settings"]["model"] == "ddag" and got["settings"]["backbone"] == "resnet50"
    assert got["results"]["mean"] == pytest.approx(expected["results"]["mean"], abs=1e-6)
    assert "IWPA attention feature" in got["selection"] and got["selection"].endswith("saved at epoch 80")


@pytest.mark.skipif("mpanet" not in list_recipes(), reason="the mpanet recipe is not registered yet")
def test_official_mpanet_best_file(tmp_path: Path, tiny_root: Path, evaluate: ModuleType) -> None:
    state = build_state_dict(mpanet_layout(CLASSES), seed=4)
    official, ours = official_and_ours(
        tmp_path, "mpanet", state, "model_best.pth", MPANet(CLASSES), load_official_mpanet
    )
    got = run(evaluate, [str(official), "--official", *common(tiny_root)], tmp_path / "official.json")
    expected = run(evaluate, [str(ours), "--model", "mpanet", *common(tiny_root)], tmp_path / "ours.json")
    assert got["official"] and got["settings"]["model"] == "mpanet" and got["settings"]["backbone"] == "resnet50"
    assert got["results"]["mean"] == pytest.approx(expected["results"]["mean"], abs=1e-6)
    assert "every 5th epoch after epoch 115" in got["selection"]
