"""Tests for the explicit dataset registry (STYLE rule 19) and the public names of vireid_layers.data.datasets."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import vireid_layers.data.datasets as datasets
from vireid_layers.data.datasets import DATASETS, build_dataset, read_llcm, read_regdb, read_sysu_mm01, register_dataset
from vireid_layers.data.records import VIReIDDataset

OPTIONS = r"\['llcm', 'regdb', 'synthetic', 'sysu'\]"


@pytest.fixture
def registry():
    saved = dict(DATASETS)
    yield DATASETS
    DATASETS.clear()
    DATASETS.update(saved)


def empty_reader(root, **kwargs):
    return VIReIDDataset("empty", Path(root), (), (), ())


def test_builtin_readers():
    assert sorted(DATASETS) == ["llcm", "regdb", "synthetic", "sysu"]
    assert DATASETS["sysu"] is read_sysu_mm01
    assert DATASETS["regdb"] is read_regdb
    assert DATASETS["llcm"] is read_llcm


def test_build_dataset_passes_keyword_arguments(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    assert build_dataset("regdb", tree.root, trial=2) == read_regdb(tree.root, trial=2)
    assert build_dataset("regdb", tree.root) != read_regdb(tree.root, trial=2)


def test_build_dataset_sysu(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    assert build_dataset("sysu", tree.root) == read_sysu_mm01(tree.root)


@pytest.mark.parametrize("name", ["market1501", "SYSU", "", None])
def test_unknown_name_lists_the_options(name):
    with pytest.raises(ValueError, match=rf"`name` must be one of {OPTIONS}, got {name!r}"):
        build_dataset(name, "/data")


def test_register_and_build(registry, tmp_path):
    register_dataset("empty", empty_reader)
    assert registry["empty"] is empty_reader
    assert build_dataset("empty", tmp_path) == VIReIDDataset("empty", tmp_path, (), (), ())
    with pytest.raises(ValueError, match=r"one of \['empty', 'llcm', 'regdb', 'synthetic', 'sysu'\]"):
        build_dataset("nope", tmp_path)


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "synthetic"])
def test_duplicate_registration_raises(registry, name):
    before = registry[name]
    with pytest.raises(ValueError, match=rf"dataset '{name}' is already registered .*; choose another name"):
        register_dataset(name, empty_reader)
    assert registry[name] is before


def test_duplicate_of_a_new_name_raises(registry):
    register_dataset("mine", empty_reader)
    with pytest.raises(ValueError, match=r"dataset 'mine' is already registered \(to empty_reader\)"):
        register_dataset("mine", read_sysu_mm01)
    assert registry["mine"] is empty_reader


def test_register_checks_its_arguments(registry):
    with pytest.raises(TypeError, match="`name` must be a str, got int 3"):
        register_dataset(3, empty_reader)
    with pytest.raises(ValueError, match="`name` must be a non-empty string"):
        register_dataset("", empty_reader)
    with pytest.raises(TypeError, match="`reader` must be callable, got str 'read_sysu_mm01'"):
        register_dataset("x", "read_sysu_mm01")
    assert "x" not in registry


def test_synthetic_is_imported_lazily(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("vireid_layers.data.datasets.synthetic")
    fake.read_synthetic = lambda root, **kwargs: calls.append((root, kwargs)) or "dataset"
    monkeypatch.setitem(sys.modules, "vireid_layers.data.datasets.synthetic", fake)
    assert build_dataset("synthetic", tmp_path, size=3) == "dataset"
    assert calls == [(tmp_path, {"size": 3})]


def test_public_names():
    assert datasets.__all__ == sorted(datasets.__all__)
    for name in datasets.__all__:
        assert hasattr(datasets, name), name


def test_detect_dataset(tmp_path, make_sysu, make_regdb, make_llcm):
    from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

    assert datasets.detect_dataset(tmp_path) is None
    assert datasets.detect_dataset(tmp_path / "missing") is None
    assert datasets.detect_dataset(make_sysu(tmp_path / "SYSU-MM01").root) == "sysu"
    assert datasets.detect_dataset(make_regdb(tmp_path / "RegDB", splits={2: ((1, 2), (3,))}).root) == "regdb"
    assert datasets.detect_dataset(make_llcm(tmp_path / "LLCM").root) == "llcm"
    synthetic = make_synthetic_dataset(
        tmp_path / "synthetic", num_identities=2, train_identities=1, images_per_camera=1, height=16, width=8
    )
    assert datasets.detect_dataset(synthetic) == "synthetic"  # before "sysu", whose layout it also has
    assert datasets.detect_dataset(str(synthetic / "cam1")) is None
    with pytest.raises(TypeError, match="`root`"):
        datasets.detect_dataset(3)
