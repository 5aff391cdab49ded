"""Tests for the synthetic dataset: determinism, SYSU-MM01 layout, the reader, modalities, manifest, arguments.

The last test checks that the dataset poses the cross-modality problem: fixed hand-made features (no training)
show that colour identifies people across visible cameras but not across modalities, while grey-level
gradients (shape, pattern) carry identity information from infrared to visible.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid_layers import Modality
from vireid_layers.data import preview
from vireid_layers.data.datasets.synthetic import (
    SYNTHETIC_GENERATOR_VERSION,
    SYNTHETIC_JPEG_QUALITY,
    SYNTHETIC_MANIFEST,
    identities,
    make_synthetic_dataset,
    read_synthetic,
    render_synthetic_image,
    save_sample_grid,
)
from vireid_layers.data.datasets.sysu import SYSU_IR_CAMERAS, SYSU_RGB_CAMERAS, read_sysu_mm01

SMALL = {"num_identities": 10, "train_identities": 8, "images_per_camera": 2, "height": 32, "width": 16}
FOUR_DIGITS = re.compile(r"\d{4}")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "small", seed=3, **SMALL)


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_files(small: Path, tmp_path: Path) -> None:
    again = make_synthetic_dataset(tmp_path / "again", seed=3, **SMALL)
    first, second = _files(small), _files(again)
    assert first.keys() == second.keys()
    assert first == second
    assert len([k for k in first if k.endswith(".jpg")]) == 10 * 6 * 2


def test_checksums_are_stable() -> None:
    """Golden digests of rendered pixels. After an intended change of the renderer, bump
    ``SYNTHETIC_GENERATOR_VERSION`` and update these digests."""
    golden = {
        (1, 1, 1): "3717e5f2573a5734",
        (2, 3, 1): "c7cfcc3a431d50ae",
        (5, 6, 2): "02bfadc3b5585c75",
    }
    got = {
        key: hashlib.sha256(render_synthetic_image(*key, seed=0, height=32, width=16).tobytes()).hexdigest()[:16]
        for key in golden
    }
    assert SYNTHETIC_GENERATOR_VERSION == 3
    assert got == golden


def test_different_seed_gives_different_images(small: Path, tmp_path: Path) -> None:
    other = make_synthetic_dataset(tmp_path / "other", seed=4, **SMALL)
    names = [k for k in _files(small) if k.endswith(".jpg")]
    differ = [not np.array_equal(_pixels(small / k), _pixels(other / k)) for k in names]
    assert all(differ)
    assert (small / "exp" / "test_id.txt").read_text() != (other / "exp" / "test_id.txt").read_text()


@pytest.mark.parametrize(("identity", "camera", "index"), [(1, 1, 1), (4, 3, 2), (10, 6, 1), (7, 5, 2)])
def test_single_image_regenerates_the_written_file(small: Path, identity: int, camera: int, index: int) -> None:
    identities._identity_attributes.cache_clear()  # nothing carried over from the full run
    for _ in range(2):  # and rendering other images first changes nothing
        render_synthetic_image(3, 2, 1, seed=3, height=32, width=16)
        image = render_synthetic_image(identity, camera, index, seed=3, height=32, width=16)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=SYNTHETIC_JPEG_QUALITY, subsampling=0)
        written = small / f"cam{camera}" / f"{identity:04d}" / f"{index:04d}.jpg"
        assert buffer.getvalue() == written.read_bytes()


# ------------------------------------------------------------------------------------------------- layout


def _id_line(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1, f"{path} must hold exactly one line"
    line = text.strip()
    return [int(tok) for tok in line.split(",")] if line else []


def test_layout_is_sysu(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == [*(f"cam{c}" for c in range(1, 7)), "exp", SYNTHETIC_MANIFEST]
    for cam in range(1, 7):
        folders = sorted(p.name for p in (small / f"cam{cam}").iterdir())
        assert folders == [f"{pid:04d}" for pid in range(1, 11)]
        for folder in folders:
            names = sorted(p.name for p in (small / f"cam{cam}" / folder).iterdir())
            assert names == ["0001.jpg", "0002.jpg"]
            assert all(FOUR_DIGITS.fullmatch(n.removesuffix(".jpg")) for n in names)
    assert sorted(p.name for p in (small / "exp").iterdir()) == ["test_id.txt", "train_id.txt", "val_id.txt"]
    train, val, test = (_id_line(small / "exp" / f"{s}_id.txt") for s in ("train", "val", "test"))
    assert len(train) + len(val) == 8 and len(val) == 1 and len(test) == 2
    assert not (set(train) | set(val)) & set(test)
    assert sorted(train + val + test) == list(range(1, 11))
    for pid in test:  # every test identity is in both modalities
        for cams in (SYSU_RGB_CAMERAS, SYSU_IR_CAMERAS):
            assert all(any((small / f"cam{c}" / f"{pid:04d}").glob("*.jpg")) for c in cams)
    with Image.open(small / "cam1" / "0001" / "0001.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 32))


def test_manifest_records_parameters(small: Path) -> None:
    manifest = json.loads((small / SYNTHETIC_MANIFEST).read_text())
    # the import path of the former single module: datasets written before the package split still read
    assert manifest["generator"] == "vireid_layers.data.datasets.synthetic"
    assert manifest["version"] == SYNTHETIC_GENERATOR_VERSION
    assert manifest["parameters"] == {**SMALL, "seed": 3}
    assert manifest["complete"] is True
    assert manifest["num_images"] == 120
    assert manifest["splits"]["test"] == _id_line(small / "exp" / "test_id.txt")


def test_sysu_reader_reads_it(small: Path) -> None:
    ds = read_synthetic(small)
    assert ds.name == "synthetic"
    assert ds.root == small
    sysu = read_sysu_mm01(small)
    assert (ds.train, ds.test, ds.train_identities) == (sysu.train, sysu.test, sysu.train_identities)
    test_ids = _id_line(small / "exp" / "test_id.txt")
    assert ds.train_identities == tuple(
        sorted(_id_line(small / "exp" / "train_id.txt") + _id_line(small / "exp" / "val_id.txt"))
    )
    assert ds.num_train_identities == 8 and sorted({r.identity for r in ds.train}) == list(range(8))
    assert len(ds.train) == 8 * 6 * 2 and len(ds.test) == 2 * 6 * 2
    assert len(ds.select(ds.train, modality=Modality.VISIBLE)) == 8 * 4 * 2
    assert len(ds.select(ds.train, modality=Modality.INFRARED)) == 8 * 2 * 2
    query = ds.select(ds.test, modality=Modality.INFRARED)
    gallery = ds.select(ds.test, modality=Modality.VISIBLE)
    assert {r.camera for r in query} == {3, 6} and {r.camera for r in gallery} == {1, 2, 4, 5}
    assert len(query) == 2 * 2 * 2 and len(gallery) == 2 * 4 * 2
    assert {r.identity for r in query} == {r.identity for r in gallery} == set(test_ids)


def test_infrared_is_grey_and_visible_is_colour(small: Path) -> None:
    ds = read_synthetic(small)
    for record in ds.test + ds.train[::7]:
        pixels = _pixels(record.path).astype(np.int16)
        chroma = np.abs(pixels[..., 0] - pixels[..., 1]).mean() + np.abs(pixels[..., 1] - pixels[..., 2]).mean()
        if record.modality == Modality.INFRARED:
            assert chroma == 0, record.path
        else:
            assert chroma > 3, record.path


def test_colour_triplets_share_colours_not_materials() -> None:
    """Identities 1-3, 4-6, ... wear the same colours, with their own materials (infrared intensities)."""
    first, second, third, other = (identities._identity_attributes(0, i) for i in (4, 5, 6, 7))
    for part in (identities._UPPER, identities._LOWER):
        np.testing.assert_array_equal(first.colours[part], second.colours[part])
        np.testing.assert_array_equal(first.colours[part], third.colours[part])
    assert not np.array_equal(third.colours[identities._UPPER], other.colours[identities._UPPER])
    assert len({a.temps[identities._UPPER] for a in (first, second, third)}) == 3


def test_infrared_intensity_follows_visible_luminance_not_hue() -> None:
    """A garment's infrared intensity is mostly its visible luma: the cue that crosses the modalities."""
    people = [identities._identity_attributes(0, i) for i in range(1, 301)]
    luma = np.array([p.colours[identities._UPPER] @ identities._LUMA for p in people])
    temps = np.array([p.temps[identities._UPPER] for p in people])
    assert np.corrcoef(luma, temps)[0, 1] > 0.9
    # Same luma, different hue: same intensity up to the material term.
    hue_only = np.array([p.colours[identities._UPPER][0] - p.colours[identities._UPPER][2] for p in people])
    assert abs(np.corrcoef(hue_only, temps - 0.25 - 0.6 * 0.9 * luma)[0, 1]) < 0.2


# ----------------------------------------------------------------------------------------------- manifest


def test_same_parameters_is_a_no_op(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", seed=1, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert make_synthetic_dataset(tmp_path / "d", seed=1, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    # A deleted image is rendered again, identically.
    victim = root / "cam6" / "0003" / "0002.jpg"
    content = victim.read_bytes()
    victim.unlink()
    make_synthetic_dataset(root, seed=1, **SMALL)
    assert victim.read_bytes() == content


def test_other_parameters_raise_unless_overwrite(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", seed=1, **SMALL)
    with pytest.raises(FileExistsError, match=r"overwrite=True.*|seed"):
        make_synthetic_dataset(root, seed=2, **SMALL)
    with pytest.raises(FileExistsError, match="images_per_camera"):
        make_synthetic_dataset(root, seed=1, **{**SMALL, "images_per_camera": 1})
    make_synthetic_dataset(root, seed=1, overwrite=True, **{**SMALL, "num_identities": 9, "images_per_camera": 1})
    ds = read_synthetic(root)
    assert len(ds.train) + len(ds.test) == 9 * 6 * 1
    assert sorted(p.name for p in (root / "cam1").iterdir()) == [f"{i:04d}" for i in range(1, 10)]
    assert json.loads((root / SYNTHETIC_MANIFEST).read_text())["parameters"]["num_identities"] == 9


def test_foreign_and_incomplete_roots(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "cam1" / "0001").mkdir(parents=True)
    for overwrite in (False, True):  # a dataset it did not write is never touched
        with pytest.raises(FileExistsError, match="cam1"):
            make_synthetic_dataset(real, overwrite=overwrite, **SMALL)
    assert (real / "cam1" / "0001").is_dir()
    with pytest.raises(FileNotFoundError, match="make_synthetic_dataset"):
        read_synthetic(real)
    with pytest.raises(FileNotFoundError):
        read_synthetic(tmp_path / "missing")
    # An interrupted generation: the reader refuses it, the generator finishes it.
    root = make_synthetic_dataset(tmp_path / "d", seed=1, **SMALL)
    manifest = json.loads((root / SYNTHETIC_MANIFEST).read_text())
    (root / SYNTHETIC_MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        read_synthetic(root)
    make_synthetic_dataset(root, seed=1, **SMALL)
    assert len(read_synthetic(root).test) == 2 * 6 * 2
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        make_synthetic_dataset(tmp_path / "file", **SMALL)


# ---------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_identities": 0}, "num_identities"),
        ({"num_identities": 1, "train_identities": 1}, "num_identities"),
        ({"train_identities": 0}, "train_identities"),
        ({"train_identities": 10}, "train_identities"),
        ({"train_identities": 11}, "train_identities"),
        ({"images_per_camera": 0}, "images_per_camera"),
        ({"height": 0}, "height"),
        ({"height": 8}, "height"),
        ({"width": -1}, "width"),
        ({"seed": -1}, "seed"),
        ({"num_identities": 10_000, "train_identities": 5}, "num_identities"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        make_synthetic_dataset(tmp_path / "d", **{**SMALL, **kwargs})
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"height": 32.0}, "height"),
        ({"seed": True}, "seed"),
        ({"num_identities": "10"}, "num_identities"),
        ({"overwrite": 1}, "overwrite"),
    ],
)
def test_bad_argument_types(tmp_path: Path, kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(TypeError, match=f"`{name}`"):
        make_synthetic_dataset(tmp_path / "d", **{**SMALL, **kwargs})
    with pytest.raises(TypeError, match="`root`"):
        make_synthetic_dataset(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "name"), [((0, 1, 1), "identity"), ((1, 7, 1), "camera"), ((1, 1, 0), "index")])
def test_render_bad_arguments(args: tuple[int, int, int], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        render_synthetic_image(*args)


# ------------------------------------------------------------------------------------------------ the grid


def test_sample_grid(small: Path, tmp_path: Path) -> None:
    assert save_sample_grid is preview.save_sample_grid  # it lives with the dataset tools, re-exported here
    png = save_sample_grid(small, tmp_path / "docs" / "grid.png", identities=3, scale=2)
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (40 + 6 * (2 * 16 + 2), 14 + 3 * (2 * 32 + 2))
    again = save_sample_grid(read_synthetic(small), tmp_path / "grid2.png", identities=3, scale=2)
    assert again.read_bytes() == png.read_bytes()
    with pytest.raises(ValueError, match="`identities`"):
        save_sample_grid(small, tmp_path / "g.png", identities=0)


# ------------------------------------------------------------------------------------ the problem is real


def _colour_histogram(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """Joint RGB histogram of the image centre (where the person is), Hellinger-normalised."""
    n, h, w, _ = images.shape
    centre = images[:, h // 10 : h - h // 20, w // 4 : w - w // 4]
    q = np.minimum((centre * bins).astype(np.int64), bins - 1)
    code = ((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).reshape(n, -1)
    counts = np.stack([np.bincount(c, minlength=bins**3) for c in code]).astype(np.float64)
    return np.sqrt(counts / counts.sum(1, keepdims=True))


def _gradient_histogram(images: np.ndarray, cells: tuple[int, int] = (8, 4), orientations: int = 6) -> np.ndarray:
    """A small HOG: orientation histograms of grey-level gradients in a grid of cells, per-image normalised."""
    grey = images.mean(-1)
    grey = (grey - grey.mean((1, 2), keepdims=True)) / (grey.std((1, 2), keepdims=True) + 1e-6)
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    bin_ = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * orientations).astype(np.int64), orientations - 1)
    n, h, w = grey.shape
    ch, cw = h // cells[0], w // cells[1]
    feats = [
        (magnitude * (bin_ == k))[:, : ch * cells[0], : cw * cells[1]]
        .reshape(n, cells[0], ch, cells[1], cw)
        .sum((2, 4))
        for k in range(orientations)
    ]
    f = np.stack(feats, -1).reshape(n, -1)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-9)


def _rank1(features: np.ndarray, ids: np.ndarray, cams: np.ndarray, query: np.ndarray, gallery: np.ndarray) -> float:
    """Nearest-neighbour rank-1 accuracy, gallery images of the query's own camera excluded."""
    q, g = np.flatnonzero(query), np.flatnonzero(gallery)
    d = ((features[q, None] - features[None, g]) ** 2).sum(-1)
    d[cams[q][:, None] == cams[g][None]] = np.inf
    return float((ids[g[d.argmin(1)]] == ids[q]).mean())


def test_the_problem_is_real(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "d", num_identities=20, train_identities=4, images_per_camera=3, seed=0)
    records = read_synthetic(root).test  # 16 identities, 6 cameras, 3 images each
    images = np.stack([_pixels(r.path) for r in records]).astype(np.float64) / 255.0
    ids = np.array([r.identity for r in records])
    cams = np.array([r.camera for r in records])
    ir = np.array([r.modality == Modality.INFRARED for r in records])
    chance = 1.0 / len(set(ids.tolist()))

    colour = _colour_histogram(images)
    vis_vis = _rank1(colour, ids, cams, ~ir, ~ir)
    vis_ir = _rank1(colour, ids, cams, ~ir, ir)
    assert vis_vis > 3 * chance  # colour identifies people across visible cameras ...
    assert vis_ir < 0.5 * vis_vis  # ... but not across modalities: hue is lost in infrared

    gradient = _gradient_histogram(images)
    ir_vis = _rank1(gradient, ids, cams, ir, ~ir)
    assert ir_vis > 1.3 * chance  # shape and pattern survive in infrared
