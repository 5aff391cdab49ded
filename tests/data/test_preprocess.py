"""ImagePreprocessor: the official test transform for PIL images, uint8 tensors and arrays, and files."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vireid_layers.data import OFFICIAL_TEST_INPUTS, ImagePreprocessor, build_test_transform
from vireid_layers.data.transforms import IMAGENET_MEAN, IMAGENET_STD

H, W = 48, 24


def frame(h: int = 60, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def official(array: np.ndarray) -> torch.Tensor:
    """The dataset path: PIL RGB image through build_test_transform."""
    return build_test_transform(H, W)(PIL.Image.fromarray(array).convert("RGB"))


def test_every_input_type_gives_the_official_test_transform(tmp_path):
    p = ImagePreprocessor(H, W)
    a = frame()
    expected = official(a)
    path = tmp_path / "x.png"
    PIL.Image.fromarray(a).save(path)
    inputs = [PIL.Image.fromarray(a), a, torch.from_numpy(a.copy()).permute(2, 0, 1), path, str(path)]
    out = p(inputs)
    assert out.shape == (5, 3, H, W) and out.dtype == torch.float32
    for row in out:
        assert torch.equal(row, expected)
    assert torch.equal(p(inputs[0]), expected.unsqueeze(0))  # a single image is a batch of one


def test_grey_and_batched_frames():
    p = ImagePreprocessor(H, W)
    grey = frame()[..., 0]
    expected = official(np.repeat(grey[..., None], 3, axis=2))
    for item in (grey, torch.from_numpy(grey.copy()), torch.from_numpy(grey.copy())[None], grey[..., None]):
        assert torch.equal(p(item)[0], expected)
    batch = torch.stack([torch.from_numpy(frame(seed=i)).permute(2, 0, 1) for i in range(3)])
    out = p(batch)
    assert out.shape == (3, 3, H, W)
    assert torch.equal(out[2], official(frame(seed=2)))


def test_normalisation_matches_the_equation():
    p = ImagePreprocessor(8, 4, interpolation="nearest", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    a = np.full((8, 4, 3), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    out = p(a)[0]
    for c, (m, s) in enumerate(zip((0.5, 0.5, 0.5), (0.25, 0.5, 1.0), strict=True)):
        torch.testing.assert_close(out[c], torch.full((8, 4), (0.2 - m) / s))


def test_interpolation_matters():
    a = frame(97, 33)
    assert not torch.equal(ImagePreprocessor(H, W)(a), ImagePreprocessor(H, W, interpolation="bilinear")(a))


@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), n=st.integers(1, 3))
def test_any_frame_size_gives_finite_rows_in_order(h, w, n):
    frames = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i in range(n)]
    p = ImagePreprocessor(16, 8)
    out = p(frames)
    assert out.shape == (n, 3, 16, 8) and torch.isfinite(out).all()
    assert torch.equal(p(frames[::-1]), out.flip(0))  # one row per image, in input order


def test_official_sizes_and_dict_round_trip():
    assert ImagePreprocessor.official("DEEN") == ImagePreprocessor(384, 144)
    assert ImagePreprocessor.official("MPANet").interpolation == "bilinear"
    for name, (h, w, interpolation) in OFFICIAL_TEST_INPUTS.items():
        p = ImagePreprocessor.official(name)
        assert (p.height, p.width, p.interpolation) == (h, w, interpolation)
        assert ImagePreprocessor.from_dict(p.as_dict()) == p
    assert ImagePreprocessor(H, W).mean == IMAGENET_MEAN and ImagePreprocessor(H, W).std == IMAGENET_STD


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="`interpolation`"):
        ImagePreprocessor(H, W, interpolation="area")
    with pytest.raises(ValueError, match="`height`"):
        ImagePreprocessor(0, W)
    with pytest.raises(ValueError, match="`mean` must hold 3"):
        ImagePreprocessor(H, W, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="`std`"):
        ImagePreprocessor(H, W, std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="`model` must be one of"):
        ImagePreprocessor.official("ResNet")
    with pytest.raises(ValueError, match="unknown key 'size'"):
        ImagePreprocessor.from_dict({"height": 1, "width": 1, "size": 3})
    with pytest.raises(ValueError, match="lacks the key 'width'"):
        ImagePreprocessor.from_dict({"height": 1})


def test_bad_images_name_the_index():
    p = ImagePreprocessor(H, W)
    with pytest.raises(TypeError, match=r"`images\[1\]` must be a uint8 tensor.*float32"):
        p([frame(), torch.rand(3, 10, 10)])
    with pytest.raises(TypeError, match="`images` must be a uint8 array"):
        p(frame().astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(3, H, W\).*got shape \(4, 10, 10\)"):
        p(torch.zeros(4, 10, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got .*10, 10, 4"):
        p(np.zeros((10, 10, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="at least one image"):
        p([])
    with pytest.raises(TypeError, match="got int"):
        p(3)
    with pytest.raises(FileNotFoundError):
        p("/no/such/file.png")
