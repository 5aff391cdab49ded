"""Tests for verify_dataset, the table and the command line (exit codes 0, 1, 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vireid_layers
from vireid_layers.data.datasets import DATASETS
from vireid_layers.data.records import VIReIDDataset
from vireid_layers.data.verify import (
    PUBLISHED_STATISTICS,
    STATUS_INCONSISTENT,
    STATUS_INFO,
    STATUS_MISMATCH,
    STATUS_OK,
    CountRow,
    PublishedCount,
    VerificationReport,
    main,
    verify_dataset,
)


def row(report: VerificationReport, split: str, modality: str, count: str, camera: str = "all") -> CountRow:
    (match,) = [r for r in report.rows if (r.split, r.modality, r.camera, r.count) == (split, modality, camera, count)]
    return match


def published_like(report: VerificationReport) -> tuple[PublishedCount, ...]:
    """Published statistics equal to what ``report`` found (so the counts match)."""
    return tuple(
        PublishedCount(r.split, r.modality, r.count, r.found)
        for r in report.rows
        if r.camera == "all" and r.split in ("train", "test")
    )


@pytest.fixture
def registry():
    saved = dict(DATASETS)
    yield DATASETS
    DATASETS.clear()
    DATASETS.update(saved)


# --------------------------------------------------------------------------------------------- the table of numbers


def test_published_statistics():
    sysu = {(p.split, p.modality, p.count): p.value for p in PUBLISHED_STATISTICS["sysu"]}
    assert sysu[("train", "all", "identities")] == 395
    assert sysu[("train", "visible", "images")] == 22_258
    assert sysu[("train", "infrared", "images")] == 11_909
    assert sysu[("test", "all", "identities")] == 96
    assert sysu[("test", "infrared", "images")] == 3_803
    regdb = {(p.split, p.modality, p.count): p.value for p in PUBLISHED_STATISTICS["regdb"]}
    for split in ("train", "test"):
        assert regdb[(split, "all", "identities")] == 206
        assert regdb[(split, "visible", "images")] == regdb[(split, "infrared", "images")] == 2_060
    llcm = {(p.split, p.modality, p.count): p for p in PUBLISHED_STATISTICS["llcm"]}
    assert llcm[("train", "all", "identities")].value == 713
    assert llcm[("train", "visible", "images")].value + llcm[("train", "infrared", "images")].value == 30_921
    assert llcm[("test", "all", "identities")].value == 351
    # the paper's test counts contradict each other, so none of them is asserted
    test_rows = [llcm[("test", m, "images")] for m in ("all", "visible", "infrared")]
    assert test_rows[1].value + test_rows[2].value != test_rows[0].value
    assert not any(p.consistent for p in test_rows)
    assert all(p.consistent for p in PUBLISHED_STATISTICS["llcm"] if p not in test_rows)


# --------------------------------------------------------------------------------------------- verify_dataset


def test_sysu_tiny_tree_differs_from_published(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    report = verify_dataset("sysu", tree.root)
    assert not report.ok
    assert report.trial is None
    ids = row(report, "train", "all", "identities")
    assert (ids.expected, ids.found, ids.status) == (395, 4, STATUS_MISMATCH)
    queries = row(report, "test", "infrared", "images")
    n_ir_test = sum(e.modality == 1 for e in tree.test)
    assert (queries.expected, queries.found, queries.status) == (3_803, n_ir_test, STATUS_MISMATCH)
    gallery = row(report, "test", "visible", "images")
    assert (gallery.expected, gallery.status) == (None, STATUS_INFO)
    assert "cams 1, 2, 4, 5" in gallery.note
    assert row(report, "files", "all", "missing").status == STATUS_OK
    # per-camera rows add up to the totals
    for split, entries in (("train", tree.train), ("test", tree.test)):
        cams = [r for r in report.rows if r.split == split and r.camera != "all"]
        assert [r.camera for r in cams] == [f"cam{c}" for c in range(1, 7)]
        assert sum(r.found for r in cams) == len(entries) == row(report, split, "all", "images").found
        assert all(r.status == STATUS_INFO for r in cams)
    assert row(report, "train", "infrared", "images", camera="cam3").note.startswith("4 identities")


def test_sysu_notes_mention_the_permutation_file(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    assert any("rand_perm_cam.mat: not found" in n for n in verify_dataset("sysu", tree.root).notes)
    (tree.root / "exp" / "rand_perm_cam.mat").write_bytes(b"")
    assert any("rand_perm_cam.mat: found" in n for n in verify_dataset("sysu", tree.root).notes)


def test_matching_counts_are_ok(tmp_path, make_regdb, monkeypatch):
    tree = make_regdb(tmp_path / "RegDB")
    first = verify_dataset("regdb", tree.root)
    assert not first.ok
    monkeypatch.setitem(PUBLISHED_STATISTICS, "regdb", published_like(first))
    report = verify_dataset("regdb", tree.root)
    assert report.ok
    assert not report.mismatches
    assert {r.status for r in report.rows} == {STATUS_OK, STATUS_INFO}


def test_regdb_trial_and_missing_files(tmp_path, make_regdb):
    tree = make_regdb(tmp_path / "RegDB", splits={1: ((1, 2, 3), (4, 5)), 4: ((1,), (2, 3, 4, 5))})
    report = verify_dataset("regdb", tree.root, trial=4)
    assert report.trial == 4
    assert row(report, "train", "all", "identities").found == 1
    assert row(report, "test", "visible", "images").found == 8
    assert report.missing_files == ()
    gone = tree.train[0].path
    gone.unlink()
    report = verify_dataset("regdb", tree.root)
    assert report.missing_files == (gone,)
    missing = row(report, "files", "all", "missing")
    assert (missing.expected, missing.found, missing.status) == (0, 1, STATUS_MISMATCH)


def test_llcm_inconsistent_counts_are_reported_not_asserted(tmp_path, make_llcm, monkeypatch):
    tree = make_llcm(tmp_path / "LLCM")
    report = verify_dataset("llcm", tree.root)
    for modality, value in (("all", 13_909), ("visible", 8_680), ("infrared", 7_166)):
        r = row(report, "test", modality, "images")
        assert (r.expected, r.status) == (value, STATUS_INCONSISTENT)
    # with every consistent figure matching, the inconsistent ones do not make the report fail
    consistent = [p for p in PUBLISHED_STATISTICS["llcm"] if p.consistent]
    matching = tuple(
        PublishedCount(p.split, p.modality, p.count, row(report, p.split, p.modality, p.count).found)
        for p in consistent
    )
    inconsistent = tuple(p for p in PUBLISHED_STATISTICS["llcm"] if not p.consistent)
    monkeypatch.setitem(PUBLISHED_STATISTICS, "llcm", matching + inconsistent)
    report = verify_dataset("llcm", tree.root)
    assert report.ok
    assert STATUS_INCONSISTENT in report.format_table()


def test_llcm_nir_cam3_note(tmp_path, make_llcm):
    without = make_llcm(tmp_path / "a" / "LLCM")
    assert any("test_nir has no cam3" in n for n in verify_dataset("llcm", without.root).notes)
    with_cam3 = make_llcm(tmp_path / "b" / "LLCM", nir_cam3=True, train_without_camera=True)
    notes = verify_dataset("llcm", with_cam3.root).notes
    assert any("cam3 exists but is not read" in n for n in notes)
    assert any("training paths have no camN folder; their camera is 0" in n for n in notes)


def test_check_images_reports_corrupt_files(tmp_path, make_sysu, garbage):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    bad = garbage(tree.train[3].path)
    quick = verify_dataset("sysu", tree.root)
    assert not quick.images_checked
    assert not [r for r in quick.rows if r.count == "unreadable"]
    report = verify_dataset("sysu", tree.root, check_images=True)
    assert report.images_checked
    assert [path for path, _ in report.unreadable_files] == [bad]
    assert str(bad) in report.unreadable_files[0][1]
    unreadable = row(report, "files", "all", "unreadable")
    assert (unreadable.expected, unreadable.found, unreadable.status) == (0, 1, STATUS_MISMATCH)


def test_unregistered_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"`name` must be one of \['llcm', 'regdb', 'synthetic', 'sysu'\]"):
        verify_dataset("market1501", tmp_path)


def test_dataset_without_published_statistics(tmp_path, make_regdb, registry):
    tree = make_regdb(tmp_path / "RegDB")
    registry["custom"] = lambda root: VIReIDDataset("custom", Path(root), tuple(tree_records(tree)), ())
    report = verify_dataset("custom", tree.root)
    assert report.ok
    assert {r.status for r in report.rows if r.split != "files"} == {STATUS_INFO}
    assert any("no published statistics for 'custom'" in n for n in report.notes)


def tree_records(tree):
    from vireid_layers.data.records import ImageRecord

    return sorted(ImageRecord(e.path, e.identity, e.camera, e.modality) for e in tree.train)


# --------------------------------------------------------------------------------------------- format_table


def test_format_table_is_aligned(tmp_path, make_sysu):
    report = verify_dataset("sysu", make_sysu(tmp_path / "SYSU-MM01").root)
    lines = report.format_table().splitlines()
    columns = ["split", "modality", "camera", "count", "expected", "found", "status", "note"]
    assert [c.strip() for c in lines[0].split("|")] == columns
    assert set(lines[1]) == {"-", "+"}
    assert len(lines) == len(report.rows) + 2
    bars = [m.start() for m in re.finditer(r"\|", lines[0])]
    for line in lines[2:]:
        assert [m.start() for m in re.finditer(r"\|", line)] == bars
    assert [m.start() for m in re.finditer(r"\+", lines[1])] == bars
    first = next(line for line in lines if line.startswith("train") and "identities" in line)
    assert re.search(r"\|\s+395 \|\s+4 \| MISMATCH", first)
    assert "22,258" in report.format_table()


# --------------------------------------------------------------------------------------------- command line


def test_main_exit_1_with_expected_and_found(tmp_path, make_sysu, capsys):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    assert main(["--dataset", "sysu", "--root", str(tree.root)]) == 1
    out = capsys.readouterr().out
    assert f"sysu at {tree.root}" in out
    assert re.search(r"train\s+\| all\s+\| all\s+\| identities \|\s+395 \|\s+4 \| MISMATCH", out)
    assert "MISMATCH: " in out.splitlines()[-1]


def test_main_exit_0_when_everything_matches(tmp_path, make_regdb, monkeypatch, capsys):
    tree = make_regdb(tmp_path / "RegDB", splits={2: ((1, 2), (3,))})
    monkeypatch.setitem(PUBLISHED_STATISTICS, "regdb", published_like(verify_dataset("regdb", tree.root, trial=2)))
    assert main(["--dataset", "regdb", "--root", str(tree.root), "--trial", "2", "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "trial 2" in out
    assert out.splitlines()[-1].startswith("OK:")


def test_main_exit_1_for_a_corrupt_image_alone(tmp_path, make_regdb, monkeypatch, capsys, garbage):
    tree = make_regdb(tmp_path / "RegDB")
    monkeypatch.setitem(PUBLISHED_STATISTICS, "regdb", published_like(verify_dataset("regdb", tree.root)))
    bad = garbage(tree.test[1].path)
    assert main(["--dataset", "regdb", "--root", str(tree.root)]) == 0  # counts only: not noticed
    assert main(["--dataset", "regdb", "--root", str(tree.root), "--check-images"]) == 1
    out = capsys.readouterr().out
    assert "unreadable images (1):" in out
    assert f"cannot read image {bad}" in out


def test_main_lists_missing_files(tmp_path, make_regdb, capsys):
    tree = make_regdb(tmp_path / "RegDB")
    for entry in tree.test:
        entry.path.unlink()
    assert main(["--dataset", "regdb", "--root", str(tree.root), "--max-listed", "2"]) == 1
    out = capsys.readouterr().out
    assert f"missing files ({len(tree.test)}):" in out
    assert f"... and {len(tree.test) - 2} more" in out


def test_main_exit_2_for_a_missing_root(tmp_path, capsys):
    root = tmp_path / "SYSU-MM01"
    assert main(["--dataset", "sysu", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"directory {root} does not exist" in err
    assert "exp/train_id.txt" in err


def test_main_exit_2_for_a_missing_camera_folder(tmp_path, make_llcm, capsys):
    tree = make_llcm(tmp_path / "LLCM")
    (tree.root / "test_nir" / "cam8").rmdir()
    assert main(["--dataset", "llcm", "--root", str(tree.root)]) == 2
    assert f"directory {tree.root / 'test_nir' / 'cam8'} does not exist" in capsys.readouterr().err


def test_main_exit_2_for_a_malformed_index(tmp_path, make_regdb, capsys):
    tree = make_regdb(tmp_path / "RegDB")
    (tree.root / "idx" / "train_thermal_1.txt").write_text("Thermal/1/t.bmp one\n")
    assert main(["--dataset", "regdb", "--root", str(tree.root)]) == 2
    assert "train_thermal_1.txt, line 1" in capsys.readouterr().err


def test_main_exit_2_for_a_bad_trial(tmp_path, make_regdb, capsys):
    tree = make_regdb(tmp_path / "RegDB")
    assert main(["--dataset", "regdb", "--root", str(tree.root), "--trial", "11"]) == 2
    assert "`trial` must be one of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in capsys.readouterr().err


def test_main_trial_ignored_for_other_datasets(tmp_path, make_sysu, capsys):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    assert main(["--dataset", "sysu", "--root", str(tree.root), "--trial", "3"]) == 1
    assert "--trial 3 is ignored" in capsys.readouterr().err


def test_main_rejects_unknown_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "market1501", "--root", str(tmp_path)])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    package_parent = str(Path(vireid_layers.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "vireid_layers.data.verify", "--dataset", "sysu", "--root", str(tree.root)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert re.search(r"identities \|\s+395 \|\s+4 \| MISMATCH", done.stdout)
    assert "RuntimeWarning" not in done.stderr  # `-m` on a module its package already imported warns


# --------------------------------------------------------------------------------------------- the synthetic dataset

SYNTHETIC = {"num_identities": 5, "train_identities": 3, "images_per_camera": 2, "height": 16, "width": 8}


@pytest.fixture
def synthetic_root(tmp_path):
    from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "synthetic", seed=1, **SYNTHETIC)


def rewrite_manifest(root: Path, **changes) -> None:
    path = root / "synthetic.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "images_per_camera":
            manifest["parameters"][key] = value
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


def test_synthetic_counts_are_compared_with_the_manifest(synthetic_root):
    report = verify_dataset("synthetic", synthetic_root)
    assert report.ok and report.reference == "synthetic.json"
    train_ids = row(report, "train", "all", "identities")
    assert (train_ids.expected, train_ids.found, train_ids.status) == (3, 3, STATUS_OK)
    assert row(report, "test", "infrared", "images").expected == 2 * 2 * 2
    assert row(report, "test", "visible", "images", camera="cam5").expected == 2 * 2
    total = row(report, "all", "all", "images")
    assert (total.expected, total.found, total.status) == (5 * 6 * 2, 60, STATUS_OK)
    compared = [r for r in report.rows if r.split in ("train", "test", "all")]
    assert all(r.status == STATUS_OK for r in compared)  # every count, per camera too, has a recorded value
    assert any("synthetic.json (generator version 3, seed 1)" in n for n in report.notes)


def test_synthetic_deleted_image_fails(synthetic_root, capsys):
    victim = synthetic_root / "cam3" / "0002" / "0001.jpg"
    victim.unlink()
    report = verify_dataset("synthetic", synthetic_root)
    assert not report.ok
    assert report.missing_files == (victim,)
    assert row(report, "all", "all", "images").found == 59
    assert main(["--dataset", "synthetic", "--root", str(synthetic_root)]) == 1
    out = capsys.readouterr().out
    assert f"missing files (1):\n  {victim}\n" in out
    assert "OK" not in out
    assert re.search(r"infrared \| cam3\s+\| images\s+\|\s+\d+ \|\s+\d+ \| MISMATCH", out)
    assert out.splitlines()[-1].startswith("MISMATCH: ")


def test_synthetic_corrupt_image_needs_check_images(synthetic_root, garbage, capsys):
    bad = garbage(synthetic_root / "cam1" / "0004" / "0002.jpg")
    assert main(["--dataset", "synthetic", "--root", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "OK: every count matches synthetic.json and every listed file exists "
        "(images not decoded: add --check-images to decode them)."
    )
    assert main(["--check-images", str(synthetic_root)]) == 1  # positional root, dataset detected
    out = capsys.readouterr().out
    assert f"unreadable images (1):\n  cannot read image {bad}: " in out
    assert out.splitlines()[-1] == "MISMATCH: 1 row differs from the compared counts or the file checks."


def test_synthetic_changed_manifest_count(synthetic_root, capsys):
    rewrite_manifest(synthetic_root, num_images=61)
    report = verify_dataset("synthetic", synthetic_root)
    total = row(report, "all", "all", "images")
    assert (total.expected, total.found, total.status) == (61, 60, STATUS_MISMATCH)
    assert [r.count for r in report.mismatches] == ["images"] and report.missing_files == ()
    rewrite_manifest(synthetic_root, num_images=90, images_per_camera=3)
    report = verify_dataset("synthetic", synthetic_root)
    assert row(report, "train", "all", "images").expected == 3 * 6 * 3
    assert len(report.missing_files) == 5 * 6  # every 0003.jpg the manifest now implies
    assert all(p.name == "0003.jpg" for p in report.missing_files)
    assert main(["--dataset", "synthetic", "--root", str(synthetic_root), "--check-images"]) == 1


def test_synthetic_manifest_without_a_field_is_a_layout_error(synthetic_root, capsys):
    manifest = json.loads((synthetic_root / "synthetic.json").read_text())
    del manifest["splits"]
    (synthetic_root / "synthetic.json").write_text(json.dumps(manifest))
    assert main([str(synthetic_root)]) == 2
    assert "synthetic.json lacks a field of the synthetic-dataset manifest" in capsys.readouterr().err


def test_all_images_decoded_message(tmp_path, make_regdb, monkeypatch, capsys):
    tree = make_regdb(tmp_path / "RegDB")
    monkeypatch.setitem(PUBLISHED_STATISTICS, "regdb", published_like(verify_dataset("regdb", tree.root)))
    assert main(["--check-images", str(tree.root)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "OK: every count matches the published statistics and every listed file exists and decodes."


def test_root_argument_forms(tmp_path, make_sysu, capsys):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    assert main([str(tree.root)]) == 1  # detected as SYSU-MM01, whose published counts a tiny tree misses
    assert f"sysu at {tree.root}" in capsys.readouterr().out
    for argv in ([], ["--root", str(tree.root), str(tree.root)]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "give the dataset root once" in capsys.readouterr().err
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    assert main([str(unknown)]) == 2
    err = capsys.readouterr().err
    assert f"cannot tell which dataset {unknown} holds" in err and "pass --dataset" in err


def test_counts_of_one_are_singular(tmp_path, make_regdb, make_llcm):
    tree = make_regdb(tmp_path / "RegDB", splits={1: ((1, 2, 3), (4, 5)), 4: ((1,), (2, 3, 4, 5))})
    report = verify_dataset("regdb", tree.root, trial=4)
    assert row(report, "train", "visible", "images", camera="cam1").note == "1 identity"
    assert row(report, "test", "visible", "images", camera="cam1").note == "4 identities"
    assert "1 identities" not in report.format_table()
    llcm = make_llcm(tmp_path / "LLCM", train_pids=(3,), images=1, train_without_camera=True)
    notes = verify_dataset("llcm", llcm.root).notes
    assert "4 training paths have no camN folder; their camera is 0" in notes
