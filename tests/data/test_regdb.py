"""Tests for the RegDB reader on fixture trees with trial index files."""

from __future__ import annotations

import re

import pytest

from vireid_layers.data.datasets.regdb import (
    REGDB_THERMAL_CAMERA,
    REGDB_TRIALS,
    REGDB_VISIBLE_CAMERA,
    read_index_file,
    read_regdb,
)
from vireid_layers.modality import Modality

TRIALS_MESSAGE = re.escape("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")


def as_tuples(records):
    return [(r.path, r.identity, r.camera, r.modality) for r in records]


def expected(entries):
    return sorted((e.path, e.identity, e.camera, e.modality) for e in entries)


def test_constants():
    assert list(REGDB_TRIALS) == list(range(1, 11))
    assert (REGDB_VISIBLE_CAMERA, REGDB_THERMAL_CAMERA) == (1, 2)


def test_records_match_the_index_files(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    ds = read_regdb(tree.root, trial=1)
    assert ds.name == "regdb"
    assert as_tuples(ds.train) == expected(tree.train)
    assert as_tuples(ds.test) == expected(tree.test)
    assert ds.train_identities == (0, 1, 2)
    # the index files list paths in another order: the records are sorted by path
    assert list(ds.train) == sorted(ds.train)
    assert list(ds.test) == sorted(ds.test)


def test_camera_and_modality_convention(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    ds = read_regdb(tree.root)
    for record in ds.train + ds.test:
        folder = record.path.relative_to(tree.root).parts[0]
        if folder == "Visible":
            assert (record.camera, record.modality) == (1, Modality.VISIBLE)
        else:
            assert folder == "Thermal"
            assert (record.camera, record.modality) == (2, Modality.INFRARED)


def test_trial_selects_its_files(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    one, two = read_regdb(tree.root, trial=1), read_regdb(tree.root, trial=2)

    def folders(records):
        return sorted({int(r.path.parent.name) for r in records})

    assert (folders(one.train), folders(one.test)) == ([1, 2, 3], [4, 5])
    assert (folders(two.train), folders(two.test)) == ([3, 4, 5], [1, 2])


def test_test_identities_from_label_column(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    (tree.root / "idx" / "test_visible_1.txt").write_text("Visible/4/v_00004_0.bmp 40\nVisible/5/v_00005_0.bmp 50\n")
    ds = read_regdb(tree.root)
    visible = [r for r in ds.test if r.modality == Modality.VISIBLE]
    assert [(r.path.name, r.identity) for r in visible] == [("v_00004_0.bmp", 40), ("v_00005_0.bmp", 50)]


def test_non_contiguous_train_labels_are_relabelled(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB", train_labels=lambda position, pid: 100 + 7 * pid)
    ds = read_regdb(tree.root)
    assert ds.train_identities == (107, 114, 121)
    assert {r.identity for r in ds.train} == {0, 1, 2}
    for record in ds.train:  # pid folder -> file label 100 + 7 pid -> label in sorted order
        assert ds.train_identities[record.identity] == 100 + 7 * int(record.path.parent.name)


def test_contiguous_train_labels_are_kept(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB", train_labels=lambda position, pid: 2 - position)
    ds = read_regdb(tree.root)
    assert ds.train_identities == (0, 1, 2)
    for record in ds.train:  # pids 1, 2, 3 carry labels 2, 1, 0
        assert record.identity == 3 - int(record.path.parent.name)


@pytest.mark.parametrize("trial", [0, 11, -1, 100])
def test_bad_trial_value(tmp_path, make_regdb, trial):
    tree = make_regdb(tmp_path / "RegDB")
    with pytest.raises(ValueError, match=rf"`trial` must be one of {TRIALS_MESSAGE}, got {trial}"):
        read_regdb(tree.root, trial=trial)


@pytest.mark.parametrize("trial", ["1", 1.0, True, None])
def test_bad_trial_type(tmp_path, make_regdb, trial):
    tree = make_regdb(tmp_path / "RegDB")
    with pytest.raises(TypeError, match=rf"`trial` must be an int in {TRIALS_MESSAGE}"):
        read_regdb(tree.root, trial=trial)


def test_missing_root(tmp_path):
    root = tmp_path / "RegDB"
    with pytest.raises(FileNotFoundError) as info:
        read_regdb(root)
    assert f"directory {root} does not exist" in str(info.value)
    assert "idx/train_visible_{t}.txt" in str(info.value)


@pytest.mark.parametrize("name", ["train_visible_1", "train_thermal_1", "test_visible_1", "test_thermal_1"])
def test_missing_index_file(tmp_path, make_regdb, name):
    tree = make_regdb(tmp_path / "RegDB")
    path = tree.root / "idx" / f"{name}.txt"
    path.unlink()
    with pytest.raises(FileNotFoundError) as info:
        read_regdb(tree.root)
    assert f"file {path} does not exist" in str(info.value)
    assert "relative/path label" in str(info.value)


def test_missing_trial_files(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")  # trials 1 and 2 only
    with pytest.raises(FileNotFoundError, match=re.escape(str(tree.root / "idx" / "train_visible_3.txt"))):
        read_regdb(tree.root, trial=3)


@pytest.mark.parametrize(
    ("lines", "bad_line"),
    [
        (["Visible/1/a.bmp 0", "Visible/1/b.bmp"], 2),
        (["Visible/1/a.bmp zero"], 1),
        (["Visible/1/a.bmp 0", "", "Visible/1/b.bmp 0 extra"], 3),
        (["Visible/1/a.bmp -1"], 1),
        (["Visible/1/a.bmp 1.0"], 1),
    ],
)
def test_malformed_index_line(tmp_path, make_regdb, lines, bad_line):
    tree = make_regdb(tmp_path / "RegDB")
    path = tree.root / "idx" / "train_visible_1.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}, line {bad_line}: expected 'relative/path label'"):
        read_regdb(tree.root)


def test_empty_index_file(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB")
    path = tree.root / "idx" / "test_thermal_1.txt"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} holds no 'relative/path label' line"):
        read_regdb(tree.root)


def test_read_index_file_tolerates_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "train_visible_1.txt"
    path.write_bytes("\ufeffVisible/1/a.bmp 0\r\n\r\n  Visible/2/b.bmp   1  \r\n".encode())
    assert read_index_file(path, tmp_path) == [(tmp_path / "Visible/1/a.bmp", 0), (tmp_path / "Visible/2/b.bmp", 1)]


def test_reader_does_not_open_images(tmp_path, make_regdb):
    # only the index files are read: listed images may be missing until they are loaded (verify reports them)
    tree = make_regdb(tmp_path / "RegDB")
    tree.train[0].path.unlink()
    assert tree.train[0].path in {r.path for r in read_regdb(tree.root).train}


@pytest.mark.parametrize("parent", ["camera", "cam2"])
def test_root_containing_cam(tmp_path, make_regdb, parent):
    tree = make_regdb(tmp_path / parent / "RegDB")
    ds = read_regdb(tree.root)
    assert as_tuples(ds.train) == expected(tree.train)
