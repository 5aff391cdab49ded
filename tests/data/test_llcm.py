"""Tests for the LLCM reader on fixture trees in the published layout."""

from __future__ import annotations

import re
import shutil

import pytest

from vireid_layers.data.datasets.llcm import LLCM_NIR_CAMERAS, LLCM_VIS_CAMERAS, camera_from_path, read_llcm
from vireid_layers.modality import Modality


def as_tuples(records):
    return [(r.path, r.identity, r.camera, r.modality) for r in records]


def expected(entries):
    return sorted((e.path, e.identity, e.camera, e.modality) for e in entries)


def test_camera_constants():
    assert list(LLCM_VIS_CAMERAS) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert list(LLCM_NIR_CAMERAS) == [1, 2, 4, 5, 6, 7, 8, 9]  # no near-infrared cam3


def test_records_match_the_tree(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    ds = read_llcm(tree.root)
    assert ds.name == "llcm"
    assert as_tuples(ds.train) == expected(tree.train)
    assert as_tuples(ds.test) == expected(tree.test)
    assert ds.train_identities == (0, 1, 2)
    assert list(ds.train) == sorted(ds.train)
    assert list(ds.test) == sorted(ds.test)


def test_test_records_parsed_from_path_parts(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    ds = read_llcm(tree.root)
    assert {r.identity for r in ds.test} == {30, 31}  # 32 has folders but is not in idx/test_id.txt
    for record in ds.test:
        folder, cam_dir, id_dir, _ = record.path.relative_to(tree.root).parts
        assert record.camera == int(cam_dir.removeprefix("cam"))
        assert record.identity == int(id_dir)
        assert record.modality == {"test_vis": Modality.VISIBLE, "test_nir": Modality.INFRARED}[folder]
    assert {(r.modality, r.camera) for r in ds.test} == {
        *((Modality.VISIBLE, c) for c in (1, 3, 9)),
        *((Modality.INFRARED, c) for c in (2, 4, 9)),
    }


def test_train_camera_from_path_and_modality_from_index(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    ds = read_llcm(tree.root)
    assert {(r.modality, r.camera) for r in ds.train} == {
        (Modality.VISIBLE, 1),
        (Modality.VISIBLE, 4),
        (Modality.INFRARED, 2),
        (Modality.INFRARED, 5),
    }


def test_train_paths_without_camera_get_camera_zero(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM", train_without_camera=True)
    ds = read_llcm(tree.root)
    assert {r.camera for r in ds.train} == {0}
    assert as_tuples(ds.train) == expected(tree.train)


@pytest.mark.parametrize("parent", ["camera_data", "cam7", "camille/cam3"])
def test_root_containing_cam(tmp_path, make_llcm, parent):
    tree = make_llcm(tmp_path / parent / "LLCM")
    ds = read_llcm(tree.root)
    assert as_tuples(ds.train) == expected(tree.train)
    assert as_tuples(ds.test) == expected(tree.test)


def test_root_containing_cam_without_train_camera(tmp_path, make_llcm):
    # a camN folder above the root must not be taken for the camera of a path that has none
    tree = make_llcm(tmp_path / "cam8" / "LLCM", train_without_camera=True)
    assert {r.camera for r in read_llcm(tree.root).train} == {0}


def test_nir_cam3_is_not_read(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM", nir_cam3=True)
    assert (tree.root / "test_nir" / "cam3").is_dir()
    ds = read_llcm(tree.root)
    assert not [r for r in ds.test if r.modality == Modality.INFRARED and r.camera == 3]
    assert as_tuples(ds.test) == expected(tree.test)


def test_non_contiguous_train_labels_are_relabelled(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    for name in ("train_vis", "train_nir"):
        path = tree.root / "idx" / f"{name}.txt"
        lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines()]
        path.write_text("\n".join(f"{p} {10 * int(label) + 5}" for p, label in lines))
    ds = read_llcm(tree.root)
    assert ds.train_identities == (5, 15, 25)
    assert as_tuples(ds.train) == expected(tree.train)


@pytest.mark.parametrize(
    ("camera_dir", "text"),
    [("test_vis/cam9", "test_vis/cam1/ ... cam9/"), ("test_nir/cam4", "test_nir/cam1/ cam2/ cam4/ ... cam9/")],
)
def test_missing_camera_folder(tmp_path, make_llcm, camera_dir, text):
    tree = make_llcm(tmp_path / "LLCM")
    shutil.rmtree(tree.root / camera_dir)
    with pytest.raises(FileNotFoundError) as info:
        read_llcm(tree.root)
    assert f"directory {tree.root / camera_dir} does not exist" in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize("name", ["train_vis.txt", "train_nir.txt", "test_id.txt"])
def test_missing_idx_file(tmp_path, make_llcm, name):
    tree = make_llcm(tmp_path / "LLCM")
    path = tree.root / "idx" / name
    path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        read_llcm(tree.root)
    assert f"file {path} does not exist" in str(info.value)
    assert "idx/test_id.txt" in str(info.value)


def test_missing_root(tmp_path):
    root = tmp_path / "LLCM"
    with pytest.raises(FileNotFoundError, match=re.escape(f"LLCM: directory {root} does not exist")):
        read_llcm(root)


def test_malformed_train_line(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    path = tree.root / "idx" / "train_nir.txt"
    path.write_text("train_nir/cam2/0001/a.jpg 0\ntrain_nir/cam2/0001/b.jpg\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 2"):
        read_llcm(tree.root)


def test_malformed_test_id_file(tmp_path, make_llcm):
    tree = make_llcm(tmp_path / "LLCM")
    path = tree.root / "idx" / "test_id.txt"
    path.write_text("30,\n31,abc\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line 2.*'abc'"):
        read_llcm(tree.root)


@pytest.mark.parametrize(
    ("path", "root", "camera"),
    [
        ("/d/LLCM/test_vis/cam7/0001/a.jpg", "/d/LLCM", 7),
        ("/d/cam5/LLCM/test_vis/cam7/0001/a.jpg", "/d/cam5/LLCM", 7),
        ("/d/cam5/LLCM/train_vis/0001/a.jpg", "/d/cam5/LLCM", None),
        ("/d/LLCM/train_vis/0001/cam3.jpg", "/d/LLCM", None),
        ("/d/LLCM/camera1/0001/a.jpg", "/d/LLCM", None),
        ("/d/LLCM/cam12/0001/a.jpg", "/d/LLCM", 12),
        ("train_nir/cam2/0001/a.jpg", None, 2),
        ("/elsewhere/cam4/a.jpg", "/d/LLCM", 4),
    ],
)
def test_camera_from_path(path, root, camera):
    assert camera_from_path(path, root) == camera
