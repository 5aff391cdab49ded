"""Fixture trees in the real on-disk layouts of SYSU-MM01, RegDB and LLCM, with tiny real image files.

Each builder writes 8x4 JPEG/PNG/BMP files with PIL (grey ``L`` images for the infrared cameras, as the real
data has) and returns a :class:`Tree` listing what it wrote, so a test can compare a reader's records with
what is on disk. The builders are exposed through factory fixtures (``make_sysu``, ``make_regdb``,
``make_llcm``) because a conftest module cannot be imported by the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from vireid_layers.modality import Modality

SIZE = (4, 8)  # PIL (width, height): 8 rows x 4 columns


@dataclass(frozen=True)
class Entry:
    """One image written by a builder: its path, identity (original id or file label), camera and modality."""

    path: Path
    identity: int
    camera: int
    modality: Modality


@dataclass
class Tree:
    """A fixture dataset: its root and the images written, split by what a reader should return."""

    root: Path
    train: list[Entry] = field(default_factory=list)
    test: list[Entry] = field(default_factory=list)
    ignored: list[Entry] = field(default_factory=list)  # on disk but not part of the dataset


def write_image(path: Path, modality: Modality = Modality.VISIBLE, value: int = 100) -> Path:
    """Write a tiny real image (format from the suffix): RGB for visible, grey ``L`` for infrared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if modality == Modality.INFRARED:
        Image.new("L", SIZE, value).save(path)
    else:
        Image.new("RGB", SIZE, (value, 255 - value, 30)).save(path)
    return path


def write_garbage(path: Path) -> Path:
    """Overwrite ``path`` with bytes that are not an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a JPEG file\x00\x01\x02")
    return path


def _ids_line(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids)


# --------------------------------------------------------------------------------------------- SYSU-MM01

SYSU_IR = (3, 6)


def build_sysu(
    root: Path,
    *,
    train_ids: tuple[int, ...] = (2, 5, 11),
    val_ids: tuple[int, ...] = (7,),
    test_ids: tuple[int, ...] = (3, 8),
    other_ids: tuple[int, ...] = (20,),
    images: int = 2,
    absent: frozenset[tuple[int, int]] = frozenset({(2, 5), (6, 8)}),
    suffixes: tuple[str, ...] = (".jpg",),
    reverse: bool = False,
) -> Tree:
    """SYSU-MM01: ``cam{1..6}/{pid:04d}/{k:04d}.jpg`` and ``exp/{train,val,test}_id.txt``.

    ``other_ids`` have folders but are in no id file; ``absent`` holds (camera, id) pairs without a folder;
    image ``k`` of a folder gets ``suffixes[k % len(suffixes)]``; ``reverse`` creates folders and files in
    reverse order (so a reader that does not sort would see another directory order on most filesystems).
    """
    tree = Tree(root)
    cams = range(1, 7)
    pids = sorted({*train_ids, *val_ids, *test_ids, *other_ids})
    jobs = [(c, p, k) for c in cams for p in pids for k in range(1, images + 1) if (c, p) not in absent]
    for cam in cams:
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for cam, pid, k in reversed(jobs) if reverse else jobs:
        modality = Modality.INFRARED if cam in SYSU_IR else Modality.VISIBLE
        path = root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}{suffixes[k % len(suffixes)]}"
        write_image(path, modality, value=10 * pid + k)
        entry = Entry(path, pid, cam, modality)
        if pid in train_ids or pid in val_ids:
            tree.train.append(entry)
        elif pid in test_ids:
            tree.test.append(entry)
        else:
            tree.ignored.append(entry)
    (root / "exp").mkdir(exist_ok=True)
    (root / "exp" / "train_id.txt").write_text(_ids_line(train_ids))
    (root / "exp" / "val_id.txt").write_text(_ids_line(val_ids))
    (root / "exp" / "test_id.txt").write_text(_ids_line(test_ids))
    return tree


# --------------------------------------------------------------------------------------------- RegDB

REGDB_SPLITS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    1: ((1, 2, 3), (4, 5)),
    2: ((3, 4, 5), (1, 2)),
}


def build_regdb(
    root: Path,
    *,
    splits: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
    images: int = 2,
    train_labels: Callable[[int, int], int] | None = None,
) -> Tree:
    """RegDB: ``Visible/{pid}/*.bmp``, ``Thermal/{pid}/*.bmp`` and ``idx/{train,test}_{visible,thermal}_{t}.txt``.

    ``splits`` maps a trial to its (train pids, test pids); labels in the index files are ``0..C-1`` in pid
    order (as in the official files) unless ``train_labels(position, pid)`` gives the training label. The
    returned tree describes the first trial, with the file labels as identities.
    """
    splits = REGDB_SPLITS if splits is None else splits
    tree = Tree(root)
    kinds = (("visible", "Visible", "v", 1, Modality.VISIBLE), ("thermal", "Thermal", "t", 2, Modality.INFRARED))
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for trial, (train_pids, test_pids) in sorted(splits.items()):
        for split, pids in (("train", train_pids), ("test", test_pids)):
            for name, folder, letter, camera, modality in kinds:
                lines = []
                for position, pid in enumerate(pids):
                    label = train_labels(position, pid) if (split == "train" and train_labels) else position
                    for k in range(images):
                        rel = f"{folder}/{pid}/{letter}_{pid:05d}_{k}.bmp"
                        path = root / rel
                        if not path.exists():
                            write_image(path, modality, value=pid * 10 + k)
                        lines.append(f"{rel} {label}")
                        if trial == min(splits):
                            getattr(tree, split).append(Entry(path, label, camera, modality))
                # the official files list images identity by identity, not sorted by path
                (root / "idx" / f"{split}_{name}_{trial}.txt").write_text("\n".join(reversed(lines)) + "\n")
    return tree


# --------------------------------------------------------------------------------------------- LLCM

LLCM_VIS = tuple(range(1, 10))
LLCM_NIR = (1, 2, 4, 5, 6, 7, 8, 9)


def build_llcm(
    root: Path,
    *,
    train_pids: tuple[int, ...] = (1, 4, 6),
    test_ids: tuple[int, ...] = (30, 31),
    other_test_ids: tuple[int, ...] = (32,),
    images: int = 2,
    nir_cam3: bool = False,
    train_without_camera: bool = False,
) -> Tree:
    """LLCM: ``idx/train_{vis,nir}.txt``, ``idx/test_id.txt``, ``train_*/cam*/``, ``test_vis/cam1..9``,
    ``test_nir/cam{1,2,4..9}``.

    Training images lie under ``train_vis/cam{1,4}`` and ``train_nir/cam{2,5}`` (or directly under
    ``train_*/{pid:04d}`` with ``train_without_camera``), labelled ``0..C-1`` in pid order. Test images of
    ``test_ids`` (in the id file) and ``other_test_ids`` (not in it) lie in visible cams 1, 3, 9 and
    near-infrared cams 2, 4, 9; ``nir_cam3`` adds a ``test_nir/cam3`` folder with images (not read).
    """
    tree = Tree(root)
    (root / "idx").mkdir(parents=True, exist_ok=True)
    train_layout = (("vis", Modality.VISIBLE, (1, 4)), ("nir", Modality.INFRARED, (2, 5)))
    for name, modality, cams in train_layout:
        lines = []
        for label, pid in enumerate(train_pids):
            for cam in cams:
                for k in range(images):
                    if train_without_camera:
                        rel, camera = f"train_{name}/{pid:04d}/{pid:04d}_c{cam:02d}_{k}.jpg", 0
                    else:
                        rel, camera = f"train_{name}/cam{cam}/{pid:04d}/{pid:04d}_c{cam:02d}_{k}.jpg", cam
                    write_image(root / rel, modality, value=pid + k)
                    lines.append(f"{rel} {label}")
                    tree.train.append(Entry(root / rel, label, camera, modality))
        (root / "idx" / f"train_{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "idx" / "test_id.txt").write_text(_ids_line(test_ids))
    _write_llcm_test(tree, test_ids, other_test_ids, images, nir_cam3)
    return tree


def _write_llcm_test(
    tree: Tree, test_ids: tuple[int, ...], other_test_ids: tuple[int, ...], images: int, nir_cam3: bool
) -> None:
    extra = (3,) if nir_cam3 else ()
    test_layout = (
        ("test_vis", Modality.VISIBLE, LLCM_VIS, (1, 3, 9)),
        ("test_nir", Modality.INFRARED, LLCM_NIR + extra, (2, 4, 9, *extra)),
    )
    jobs = [
        (folder, modality, cam, pid, k)
        for folder, modality, _, used_cams in test_layout
        for cam in used_cams
        for pid in (*test_ids, *other_test_ids)
        for k in range(images)
    ]
    for folder, _, all_cams, _ in test_layout:
        for cam in all_cams:
            (tree.root / folder / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for folder, modality, cam, pid, k in jobs:
        path = write_image(tree.root / folder / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg", modality, pid)
        read = pid in test_ids and not (folder == "test_nir" and cam == 3)
        (tree.test if read else tree.ignored).append(Entry(path, pid, cam, modality))


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_sysu() -> Callable[..., Tree]:
    """The SYSU-MM01 builder: ``make_sysu(root, **options)``."""
    return build_sysu


@pytest.fixture
def make_regdb() -> Callable[..., Tree]:
    """The RegDB builder: ``make_regdb(root, **options)``."""
    return build_regdb


@pytest.fixture
def make_llcm() -> Callable[..., Tree]:
    """The LLCM builder: ``make_llcm(root, **options)``."""
    return build_llcm


@pytest.fixture
def garbage() -> Callable[[Path], Path]:
    """Overwrite a file with non-image bytes: ``garbage(path)``."""
    return write_garbage


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    """Write a tiny real image: ``image_writer(path, modality=Modality.VISIBLE, value=100)``."""
    return write_image
