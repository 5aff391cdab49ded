"""The layout of vireid_layers.evaluation: one concept per module, old imports, one home per rule and constant."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import vireid_layers.evaluation as evaluation
from vireid_layers.data.datasets import sysu as sysu_data
from vireid_layers.evaluation import exclusion, protocols

ROOT = Path(__file__).resolve().parents[2]

#: The public names of the former single-file ``vireid_layers.evaluation.protocols``.
FORMER_NAMES = [
    "PROTOCOLS",
    "SYSU_INFRARED_CAMERAS",
    "SYSU_VISIBLE_CAMERAS",
    "CMCDefinition",
    "Direction",
    "Distance",
    "EvaluationProtocol",
    "Extractor",
    "LLCMProtocol",
    "ProtocolFactory",
    "ProtocolResult",
    "RegDBProtocol",
    "SYSUPermutation",
    "SYSUProtocol",
    "TrialResult",
    "TrialSelection",
    "build_protocol",
    "evaluate_protocol",
    "exclude_sysu_indoor_camera_reversed",
    "load_sysu_permutation",
    "negative_cosine_similarity",
    "negative_dot_product",
    "parse_sysu_permutation",
    "register_protocol",
]


def _modules():
    return [info.name for info in pkgutil.iter_modules(protocols.__path__, prefix=f"{protocols.__name__}.")]


@pytest.mark.parametrize("name", FORMER_NAMES)
def test_former_imports_keep_working(name):
    assert getattr(protocols, name) is not None
    if name in evaluation.__all__:
        assert getattr(evaluation, name) is getattr(protocols, name)


def test_protocols_all_is_unique_and_importable():
    assert len(set(protocols.__all__)) == len(protocols.__all__)
    for name in protocols.__all__:
        assert hasattr(protocols, name)


@pytest.mark.parametrize("module", _modules())
def test_one_concept_per_module_and_no_module_over_400_lines(module):
    mod = importlib.import_module(module)
    lines = inspect.getsource(mod).count("\n")
    assert lines <= 400, f"{module} has {lines} lines"
    summary = (mod.__doc__ or "").strip().splitlines()[0]
    assert summary.endswith("."), f"{module}'s summary is cut: {summary!r}"


def test_every_public_evaluation_name_is_in_the_api_reference():
    api = (ROOT / "docs" / "api.rst").read_text()
    section = api[api.index("\nEvaluation\n") :]
    section = section[: section.index("\nModels and checkpoint compatibility\n")]
    missing = [name for name in evaluation.__all__ if not re.search(rf"(?<![\w.]){re.escape(name)}\b", section)]
    assert not missing, f"not in the Evaluation section of docs/api.rst: {missing}"


def test_every_exclusion_rule_lives_in_one_module():
    rules = [name for name in evaluation.__all__ if name.startswith("exclude_")]
    assert rules == sorted(n for n in exclusion.__all__ if n.startswith("exclude_"))
    for name in rules:
        assert getattr(evaluation, name).__module__ == exclusion.__name__
    assert evaluation.ExclusionRule is exclusion.ExclusionRule
    p = protocols.SYSUProtocol()
    assert p.exclude is exclusion.exclude_sysu_indoor_camera
    assert p.with_direction("v2i").exclude is exclusion.exclude_sysu_indoor_camera_reversed
    assert protocols.LLCMProtocol("i2v").exclude is exclusion.exclude_same_identity_and_camera


def test_one_set_of_sysu_camera_constants():
    assert protocols.SYSU_VISIBLE_CAMERAS is sysu_data.SYSU_RGB_CAMERAS
    assert protocols.SYSU_INFRARED_CAMERAS is sysu_data.SYSU_IR_CAMERAS
    assert set(sysu_data.SYSU_INDOOR_RGB_CAMERAS) <= set(sysu_data.SYSU_RGB_CAMERAS)
    assert set(sysu_data.SYSU_INDOOR_IR_CAMERAS) <= set(sysu_data.SYSU_IR_CAMERAS)
    assert sysu_data.SYSU_SAME_ROOM_CAMERAS == (2, 3)
    # No camera tuple is written out again in the code of the evaluation package.
    code = "\n".join(
        line for p in (ROOT / "vireid_layers" / "evaluation").rglob("*.py") for line in _code_lines(p.read_text())
    )
    assert "(1, 2, 4, 5)" not in code and "(3, 6)" not in code


def _code_lines(source: str) -> list[str]:
    """Lines outside docstrings and comments (good enough for this package's style)."""
    out, in_doc = [], False
    for line in source.splitlines():
        stripped = line.strip()
        quotes = stripped.count('"""')
        if in_doc:
            in_doc = quotes % 2 == 0
            continue
        if stripped.startswith(('"""', 'r"""')):
            in_doc = quotes == 1
            continue
        if not stripped.startswith(("#", ">>>", "...")):
            out.append(line.split("  #")[0])
    return out


def test_evaluate_protocol_uses_only_the_public_protocol_interface():
    source = inspect.getsource(protocols.runner)
    assert not re.search(r"protocol\._\w", source), "evaluate_protocol reaches into a protocol's private members"
    assert "plan(" in source and "score_trials(" in source
    assert "score_trials(" in inspect.getsource(protocols.EvaluationProtocol.evaluate)
