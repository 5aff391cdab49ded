"""Tests for the SYSU-MM01 reader on fixture trees in the published layout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from vireid_layers.data.datasets.sysu import (
    SYSU_CAMERAS,
    SYSU_IR_CAMERAS,
    SYSU_PERMUTATION_FILE,
    SYSU_RGB_CAMERAS,
    read_id_file,
    read_sysu_mm01,
)
from vireid_layers.data.records import ImageRecord
from vireid_layers.modality import Modality


def as_tuples(records):
    return [(r.path, r.identity, r.camera, r.modality) for r in records]


def parsed_from_parts(record: ImageRecord, root: Path) -> tuple[int, int]:
    """Camera and id from the path's components below the root, independently of the reader."""
    cam_dir, id_dir, _ = record.path.relative_to(root).parts
    assert re.fullmatch(r"cam\d", cam_dir)
    return int(cam_dir[3:]), int(id_dir)


def test_camera_constants():
    assert SYSU_RGB_CAMERAS == (1, 2, 4, 5)
    assert SYSU_IR_CAMERAS == (3, 6)
    assert sorted(SYSU_RGB_CAMERAS + SYSU_IR_CAMERAS) == list(SYSU_CAMERAS)
    assert Path("exp", "rand_perm_cam.mat") == SYSU_PERMUTATION_FILE


def test_records_match_the_tree(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    assert ds.name == "sysu"
    assert ds.root == tree.root
    # test: original ids, every image of the test ids from all six cameras
    assert as_tuples(ds.test) == sorted((e.path, e.identity, e.camera, e.modality) for e in tree.test)
    # train: the same images, identities relabelled by sorted original id
    mapping = {pid: label for label, pid in enumerate(sorted({e.identity for e in tree.train}))}
    expected = sorted((e.path, mapping[e.identity], e.camera, e.modality) for e in tree.train)
    assert as_tuples(ds.train) == expected
    assert all(isinstance(r, ImageRecord) and r.path.is_absolute() for r in ds.train + ds.test)


def test_train_is_train_plus_val_relabelled_by_sorted_id(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01", train_ids=(11, 2, 5), val_ids=(7,), test_ids=(3, 8))
    ds = read_sysu_mm01(tree.root)
    assert ds.train_identities == (2, 5, 7, 11)
    assert ds.num_train_identities == 4
    for record in ds.train:
        camera, pid = parsed_from_parts(record, tree.root)
        assert ds.train_identities[record.identity] == pid
        assert record.camera == camera
    assert {r.identity for r in ds.test} == {3, 8}
    assert not {r.path for r in ds.train} & {r.path for r in ds.test}
    # identities that are in no id file are ignored
    assert not {e.path for e in tree.ignored} & {r.path for r in ds.train + ds.test}


def test_camera_modality_and_id_from_path_parts(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    for record in ds.test:
        camera, pid = parsed_from_parts(record, tree.root)
        assert (record.camera, record.identity) == (camera, pid)
        assert record.modality == (Modality.INFRARED if camera in (3, 6) else Modality.VISIBLE)
    cams = {(r.camera, r.modality) for r in ds.train}
    assert cams == {(c, Modality.INFRARED if c in (3, 6) else Modality.VISIBLE) for c in range(1, 7)}


def test_records_sorted_and_deterministic(tmp_path, make_sysu):
    a = make_sysu(tmp_path / "a" / "SYSU-MM01")
    b = make_sysu(tmp_path / "b" / "SYSU-MM01", reverse=True)
    ds_a, ds_b = read_sysu_mm01(a.root), read_sysu_mm01(b.root)
    assert list(ds_a.train) == sorted(ds_a.train)
    assert list(ds_a.test) == sorted(ds_a.test)

    def rel(ds, root):
        return [(r.path.relative_to(root), r.identity, r.camera, r.modality) for r in ds.train + ds.test]

    assert rel(ds_a, a.root) == rel(ds_b, b.root)
    assert read_sysu_mm01(a.root) == ds_a


@pytest.mark.parametrize("parent", ["camera_data", "cam5", "cam3/cam6"])
def test_root_containing_cam(tmp_path, make_sysu, parent):
    tree = make_sysu(tmp_path / parent / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    assert as_tuples(ds.test) == sorted((e.path, e.identity, e.camera, e.modality) for e in tree.test)
    assert {r.camera for r in ds.train} == set(range(1, 7))


def test_accepts_str_root_and_relative_path(tmp_path, make_sysu, monkeypatch):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    monkeypatch.chdir(tmp_path)
    ds = read_sysu_mm01("SYSU-MM01")
    assert ds.root == tree.root
    assert ds == read_sysu_mm01(str(tree.root))


def test_image_extensions_and_stray_files(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01", images=4, suffixes=(".jpg", ".JPEG", ".png", ".jpeg"))
    stray = [
        tree.root / "cam1" / "0002" / "Thumbs.db",
        tree.root / "cam1" / "0002" / "notes.txt",
        tree.root / "cam1" / ".DS_Store",
    ]
    for path in stray:
        path.write_text("x")
    (tree.root / "cam1" / "not_an_id").mkdir()
    ds = read_sysu_mm01(tree.root)
    suffixes = {r.path.suffix for r in ds.train + ds.test}
    assert suffixes == {".jpg", ".JPEG", ".png", ".jpeg"}
    assert len(ds.train) == len(tree.train)
    assert not set(stray) & {r.path for r in ds.train}


def test_reader_is_lazy(tmp_path, make_sysu, garbage):
    # only file lists are read: a corrupt image does not disturb the reader (ImageDataset reports it)
    tree = make_sysu(tmp_path / "SYSU-MM01")
    garbage(tree.test[0].path)
    ds = read_sysu_mm01(tree.root)
    assert tree.test[0].path in {r.path for r in ds.test}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,4", (1, 2, 4)),
        ("4, 2 ,1,\n", (1, 2, 4)),
        ("0004,2,\n1,\n\n", (1, 2, 4)),
        ("\ufeff1,2,2,4", (1, 2, 4)),
        ("1 2\t4\r\n", (1, 2, 4)),
        ("", ()),
    ],
)
def test_read_id_file_tolerates_whitespace(tmp_path, text, expected):
    path = tmp_path / "ids.txt"
    path.write_text(text, encoding="utf-8")
    assert read_id_file(path) == expected


@pytest.mark.parametrize(("text", "line"), [("1,2,x", 1), ("1,2\n3;4", 2), ("1,-2", 1), ("1.5", 1)])
def test_read_id_file_malformed(tmp_path, text, line):
    path = tmp_path / "train_id.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line {line}: expected comma-separated"):
        read_id_file(path)


def test_malformed_id_file_in_dataset(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    (tree.root / "exp" / "val_id.txt").write_text("7,eight")
    with pytest.raises(ValueError, match=r"val_id\.txt, line 1.*'eight'"):
        read_sysu_mm01(tree.root)


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere" / "SYSU-MM01"
    with pytest.raises(FileNotFoundError) as info:
        read_sysu_mm01(root)
    message = str(info.value)
    assert str(root) in message
    assert "does not exist" in message
    for piece in ("cam1/ ... cam6/", "0001/0001.jpg", "exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt"):
        assert piece in message


def test_root_is_a_file(tmp_path):
    root = tmp_path / "SYSU-MM01"
    root.write_text("")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_sysu_mm01(root)


@pytest.mark.parametrize("camera", [1, 4, 6])
def test_missing_camera_folder(tmp_path, make_sysu, camera):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    folder = tree.root / f"cam{camera}"
    shutil.rmtree(folder)
    with pytest.raises(FileNotFoundError) as info:
        read_sysu_mm01(tree.root)
    assert f"directory {folder} does not exist" in str(info.value)
    assert "Expected layout" in str(info.value)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_missing_exp_file(tmp_path, make_sysu, split):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    path = tree.root / "exp" / f"{split}_id.txt"
    path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        read_sysu_mm01(tree.root)
    assert f"file {path} does not exist" in str(info.value)
    assert "comma-separated identity ids" in str(info.value)


def test_overlapping_train_and_test_ids(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    (tree.root / "exp" / "test_id.txt").write_text("3,8,5")
    with pytest.raises(ValueError, match=r"identities \[5\] are listed both"):
        read_sysu_mm01(tree.root)


@pytest.mark.parametrize("root", [3, None, b"/data"])
def test_root_type(root):
    with pytest.raises(TypeError, match=r"`root` must be a str or os\.PathLike"):
        read_sysu_mm01(root)
