"""Tests for ImageDataset and the folder helpers: lazy decoding, 3-channel output, errors that name the file."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from vireid_layers.data.datasets.folder import (
    ImageDataset,
    ImageReadError,
    ImageSample,
    MissingImageError,
    list_identity_folders,
    list_images,
    load_image,
    require_path,
    verify_command,
)
from vireid_layers.data.datasets.sysu import read_sysu_mm01
from vireid_layers.data.records import ImageRecord
from vireid_layers.modality import Modality


def record(path, identity=0, camera=1, modality=Modality.VISIBLE):
    return ImageRecord(path, identity, camera, modality)


def test_grey_infrared_image_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "ir.png"
    Image.new("L", (4, 8), 77).save(path)
    sample = ImageDataset([record(path, 5, 3, Modality.INFRARED)])[0]
    assert isinstance(sample, ImageSample)
    assert sample.image.shape == (3, 8, 4)
    assert sample.image.dtype == torch.uint8
    assert torch.equal(sample.image, torch.full((3, 8, 4), 77, dtype=torch.uint8))
    assert (sample.identity, sample.camera, sample.modality) == (5, 3, 1)
    assert all(type(v) is int for v in sample[1:])


def test_rgb_jpeg_and_other_modes(tmp_path, image_writer):
    jpg = image_writer(tmp_path / "v.jpg", Modality.VISIBLE, value=200)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 8), (10, 20, 30, 40)).save(rgba)
    palette = tmp_path / "p.png"
    Image.new("P", (4, 8), 3).save(palette)
    ds = ImageDataset([record(jpg), record(rgba, 1), record(palette, 2)])
    assert len(ds) == 3
    for i in range(3):
        assert ds[i].image.shape == (3, 8, 4)
    assert ds[0].image[0].float().mean() > 150  # red ~200, not a grey conversion
    assert ds[1].image[:, 0, 0].tolist() == [10, 20, 30]


def test_transform_receives_pil_rgb_image(tmp_path, image_writer):
    path = image_writer(tmp_path / "ir.bmp", Modality.INFRARED, value=255)
    seen = []

    def spy(image):
        seen.append((type(image), image.mode, image.size))
        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize((16, 6))])(image)

    sample = ImageDataset([record(path, modality=Modality.INFRARED)], transform=spy)[0]
    assert seen == [(Image.Image, "RGB", (4, 8))]
    assert sample.image.shape == (3, 16, 6)
    assert sample.image.dtype == torch.float32
    assert torch.allclose(sample.image, torch.ones_like(sample.image))


def test_dataloader_collates_samples(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    loader = DataLoader(ImageDataset(ds.train), batch_size=5, shuffle=False)
    batch = next(iter(loader))
    assert isinstance(batch, ImageSample)
    assert batch.image.shape == (5, 3, 8, 4)
    assert batch.identity.tolist() == [r.identity for r in ds.train[:5]]
    assert batch.camera.tolist() == [r.camera for r in ds.train[:5]]
    assert batch.modality.tolist() == [int(r.modality) for r in ds.train[:5]]


def test_lazy_construction(tmp_path, garbage):
    # building the dataset opens nothing; only indexing the corrupt item fails
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 8)).save(good)
    bad = garbage(tmp_path / "0001" / "bad.jpg")
    ds = ImageDataset([record(good), record(bad), record(tmp_path / "missing.jpg")])
    assert ds[0].image.shape == (3, 8, 4)
    with pytest.raises(ImageReadError) as info:
        ds[1]
    assert str(bad) in str(info.value)
    assert isinstance(info.value, OSError)


def test_corrupt_image_error_names_the_path(tmp_path, garbage):
    bad = garbage(tmp_path / "cam3" / "0001" / "0001.jpg")
    with pytest.raises(ImageReadError, match=re.escape(f"cannot read image {bad}")):
        load_image(bad)


def test_truncated_image_error_names_the_path(tmp_path):
    full = tmp_path / "full.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(full, quality=95)
    truncated = tmp_path / "truncated.jpg"
    data = full.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=re.escape(str(truncated))):
        load_image(truncated)


def test_missing_image_raises_file_not_found(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        ImageDataset([record(missing)])[0]


def test_records_and_transform_are_checked(tmp_path):
    with pytest.raises(TypeError, match=r"`records\[1\]` must be an ImageRecord, got tuple"):
        ImageDataset([record(tmp_path / "a.jpg"), ("a.jpg", 0, 1, 0)])
    with pytest.raises(TypeError, match="`transform` must be callable or None, got str"):
        ImageDataset([record(tmp_path / "a.jpg")], transform="resize")


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["0010.jpg", "0002.PNG", "0001.jpeg", "0003.bmp", "notes.txt", "Thumbs.db", ".hidden"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "0000.jpg").mkdir()  # a folder named like an image is not an image
    assert [p.name for p in list_images(tmp_path)] == ["0001.jpeg", "0002.PNG", "0003.bmp", "0010.jpg"]


def test_list_identity_folders(tmp_path):
    for name in ["0010", "0002", "exp", "12a", "0003.jpg"]:
        (tmp_path / name).mkdir()
    (tmp_path / "0004").write_text("a file, not a folder")
    assert list_identity_folders(tmp_path) == [(2, tmp_path / "0002"), (10, tmp_path / "0010")]


def test_require_path(tmp_path):
    assert require_path(tmp_path, dataset="X", layout="X/") == tmp_path
    (tmp_path / "f.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"X: directory .*f\.txt is not a directory\. Expected layout:\nX/"):
        require_path(tmp_path / "f.txt", dataset="X", layout="X/")
    with pytest.raises(FileNotFoundError, match=r"X: file .*g\.txt does not exist"):
        require_path(tmp_path / "g.txt", dataset="X", layout="X/", kind="file")


# ------------------------------------------------------------------ one exception type, one line, the next step


def one_line_error(dataset: ImageDataset, index: int, kind: type[Exception] = ImageReadError) -> str:
    with pytest.raises(kind) as info:
        dataset[index]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_image_is_an_image_read_error_and_a_file_not_found(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    gone = ds.train[2].path
    gone.unlink()
    with pytest.raises(MissingImageError) as info:
        load_image(gone)
    assert isinstance(info.value, ImageReadError) and isinstance(info.value, FileNotFoundError)
    assert str(info.value) == f"cannot read image {gone}: no such file"
    assert info.value.path == str(gone)
    message = one_line_error(ImageDataset(ds.train), 2, MissingImageError)
    assert message == (
        f"cannot read image {gone}: no such file; to list every missing or unreadable image run: "
        f"vireid-verify --check-images {tree.root}"
    )


def test_corrupt_image_message_names_the_file_and_the_command(tmp_path, make_regdb, garbage):
    tree = make_regdb(tmp_path / "RegDB")
    bad = garbage(tree.test[1].path)
    records = [record(e.path, e.identity, e.camera, e.modality) for e in tree.test]
    message = one_line_error(ImageDataset(records), 1)
    assert message.startswith(f"cannot read image {bad}: ")
    hint = f"; to list every missing or unreadable image run: vireid-verify --check-images {tree.root}"
    assert message.endswith(hint)
    assert ImageDataset(records)[0].image.shape == (3, 8, 4)  # the others still read


def test_dataloader_worker_error_keeps_the_type_and_the_one_line(tmp_path, make_sysu, garbage):
    tree = make_sysu(tmp_path / "SYSU-MM01")
    ds = read_sysu_mm01(tree.root)
    garbage(ds.train[5].path)
    dataset = ImageDataset(ds.train)
    in_process = one_line_error(dataset, 5)
    with pytest.raises(ImageReadError) as info:
        for _ in DataLoader(dataset, batch_size=4, num_workers=1):
            pass
    assert str(info.value) == in_process  # not the worker's traceback
    assert "Traceback" in info.value.details and "DataLoader worker" in info.value.details


def test_verify_command_quotes_and_falls_back(tmp_path, make_sysu):
    tree = make_sysu(tmp_path / "my data" / "SYSU-MM01")
    image = tree.train[0].path
    assert verify_command(image) == f"vireid-verify --check-images '{tree.root}'"
    assert verify_command(tmp_path / "elsewhere" / "a" / "b.jpg") == "vireid-verify --check-images <dataset root>"
    outside = tmp_path / "loose.png"
    Image.new("RGB", (4, 8)).save(outside)
    outside.write_bytes(outside.read_bytes()[:20])
    assert one_line_error(ImageDataset([record(outside)]), 0).endswith("--check-images <dataset root>")
    with pytest.raises(TypeError, match="`path`"):
        verify_command(3)


def test_image_read_error_message_forms():
    assert str(ImageReadError("cannot read image /a.jpg: x")) == "cannot read image /a.jpg: x"
    assert ImageReadError("cannot read image /a.jpg: x").details == ""
    assert str(ImageReadError("two\nlines")) == "two lines"  # never more than one line
    assert isinstance(MissingImageError("m"), FileNotFoundError)
