"""The public API: flat, sorted, importable, typed, versioned once, and documented."""

import importlib
import pathlib
import re

import pytest

import vireid_layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = [
    "vireid_layers",
    "vireid_layers.layers",
    "vireid_layers.losses",
    "vireid_layers.backbones",
    "vireid_layers.distances",
    "vireid_layers.modality",
    "vireid_layers.data",
    "vireid_layers.data.datasets",
    "vireid_layers.evaluation",
    "vireid_layers.models",
    "vireid_layers.compat",
    "vireid_layers.engine",
    "vireid_layers.recipes",
    "vireid_layers.visualize",
    "vireid_layers.export",
    "vireid_layers.hub",
]


@pytest.mark.parametrize("module_name", PACKAGES)
def test_all_is_sorted_unique_and_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert names == sorted(names), f"{module_name}.__all__ is not sorted"
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is listed in __all__ but missing"


def test_issue_names_are_top_level() -> None:
    from vireid_layers import (  # noqa: F401
        DEE,
        MFA,
        CPMLoss,
        HardTripletLoss,
        OrthogonalLoss,
        WRTLoss,
        build_two_stream_backbone,
    )


def test_top_level_reexports_every_public_layer_and_loss() -> None:
    for sub in ("vireid_layers.layers", "vireid_layers.losses"):
        module = importlib.import_module(sub)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                if name.endswith(("Form", "Normalization", "Anchors", "Direction", "Entry", "BlockOutput", "Combine")):
                    continue  # Literal type aliases stay in their module
                assert getattr(vireid_layers, name, None) is obj, f"{name} is not re-exported by vireid_layers"


def test_py_typed_and_single_version_source() -> None:
    assert (ROOT / "vireid_layers" / "py.typed").is_file()
    assert re.fullmatch(r"\d+\.\d+\.\d+", vireid_layers.__version__)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert "vireid_layers/_version.py" in pyproject
    assert f"## [{vireid_layers.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (ROOT / "docs" / "api.rst").read_text()
    missing = [name for name in vireid_layers.__all__ if name != "__version__" and not re.search(rf"\b{name}\b", api)]
    assert not missing, f"not in docs/api.rst: {missing}"
