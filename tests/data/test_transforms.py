"""Tests for the training augmentations (random erasing, CAJ channel augmentations) and the named pipelines."""

from __future__ import annotations

import math
import pickle

import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from vireid_layers.data import transforms as T
from vireid_layers.data.transforms import (
    CIFAR_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_PIPELINES,
    ChannelAdapGray,
    ChannelExchange,
    ChannelRandomErasing,
    RandomErasingFill,
    build_test_transform,
    build_train_transform,
    random_erasing_params,
    register_pipeline,
    replicate_channel,
    weighted_gray,
)


def zscore_binomial(successes: int, trials: int, p: float) -> float:
    """Normal approximation of the binomial test (scipy is not a dependency)."""
    return (successes - trials * p) / math.sqrt(trials * p * (1 - p))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


BACKGROUND = -7.0  # no fill value equals it, so the erased pixels are exactly those that changed


def erased_box(before: torch.Tensor, after: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of the changed pixels, asserting that they form a filled rectangle."""
    changed = (after != before).any(dim=0)
    if not changed.any():
        return None
    rows = changed.any(dim=1).nonzero().flatten()
    cols = changed.any(dim=0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert changed[top : top + h, left : left + w].all() and int(changed.sum()) == h * w
    return top, left, h, w


def reference_erasing_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], attempts: int, seed: int
) -> tuple[int, int, int, int] | None:
    """The official attempt loop, one attempt at a time in Python, on the same uniform draws."""
    g = gen(seed)
    u = torch.rand(2, attempts, generator=g, dtype=torch.float64).tolist()
    for a in range(attempts):
        target = (scale[0] + (scale[1] - scale[0]) * u[0][a]) * height * width
        aspect = ratio[0] + (ratio[1] - ratio[0]) * u[1][a]
        h = round(math.sqrt(target * aspect))  # Python rounds half to even, like the official code
        w = round(math.sqrt(target / aspect))
        if h < height and w < width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    return None


# ------------------------------------------------------------------------------------------ random erasing


@pytest.mark.parametrize(("height", "width"), [(288, 144), (20, 6), (7, 7)])
@pytest.mark.parametrize("scale", [(0.2, 0.8), (0.02, 0.4)])
def test_erasing_params_reference(height: int, width: int, scale: tuple[float, float]) -> None:
    for seed in range(60):
        got = random_erasing_params(height, width, scale=scale, generator=gen(seed))
        assert got == reference_erasing_params(height, width, scale, (0.3, 1 / 0.3), 100, seed)


@pytest.mark.parametrize("scale", [(0.2, 0.8), (0.02, 0.4)])
def test_erasing_area_and_fill(scale: tuple[float, float]) -> None:
    height, width = 96, 48
    fill = (0.485, 0.456, 0.406)
    erase = RandomErasingFill(1.0, scale=scale, fill=fill, generator=gen(0))
    image = torch.full((3, height, width), BACKGROUND)
    for _ in range(200):
        out = erase(image)
        box = erased_box(image, out)
        assert box is not None  # p = 1 and a fitting attempt always exists at this size
        top, left, h, w = box
        assert h < height and w < width
        # area fraction in [sl, sh], up to the rounding of h and w to integers
        assert (h + 0.5) * (w + 0.5) >= scale[0] * height * width
        assert (h - 0.5) * (w - 0.5) <= scale[1] * height * width
        for c in range(3):  # the fill values are written exactly, per channel
            assert (out[c, top : top + h, left : left + w] == torch.tensor(fill[c])).all()
        assert torch.equal(image, torch.full((3, height, width), BACKGROUND))  # the input is not modified


def test_erasing_aspect_ratio_is_uniform_not_log_uniform() -> None:
    # small boxes in a big image are never rejected, so h / w follows the drawn ratio: U(0.3, 1/0.3) has mean
    # 1.82, the log-uniform ratio of torchvision's RandomErasing mean 1.26
    g = gen(1)
    ratios = []
    for _ in range(2000):
        _, _, h, w = random_erasing_params(2000, 2000, scale=(0.01, 0.02), generator=g)
        ratios.append(h / w)
    mean = sum(ratios) / len(ratios)
    expected, sd = (0.3 + 1 / 0.3) / 2, (1 / 0.3 - 0.3) / math.sqrt(12)
    assert abs(mean - expected) / (sd / math.sqrt(len(ratios))) < 4, mean


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_erasing_probability(p: float) -> None:
    erase = RandomErasingFill(p, scale=(0.02, 0.4), generator=gen(3))
    image = torch.full((3, 40, 20), BACKGROUND)
    trials = 2000
    applied = sum(erased_box(image, erase(image)) is not None for _ in range(trials))
    assert abs(zscore_binomial(applied, trials, p)) < 4


def test_erasing_p0_never_p1_always() -> None:
    image = torch.full((3, 40, 20), BACKGROUND)
    never = RandomErasingFill(0.0, generator=gen(0))
    assert all(never(image) is image for _ in range(100))
    always = RandomErasingFill(1.0, generator=gen(0))
    assert all(erased_box(image, always(image)) is not None for _ in range(100))
    # p = 1 but no attempt fits: a square box of the whole image area is never smaller than the image
    no_fit = RandomErasingFill(1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(0))
    square = torch.full((3, 10, 10), BACKGROUND)
    assert no_fit(square) is square
    assert random_erasing_params(10, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0)) is None


def test_erasing_determinism_with_generator() -> None:
    image = torch.randn(3, 50, 30)
    t1, t2 = RandomErasingFill(1.0, generator=gen(7)), RandomErasingFill(1.0, generator=gen(7))
    outs1 = [t1(image) for _ in range(20)]
    outs2 = [t2(image) for _ in range(20)]
    assert all(torch.equal(x, y) for x, y in zip(outs1, outs2, strict=True))
    assert not all(torch.equal(outs1[0], x) for x in outs1[1:])
    # the transform is the functional after the probability draw
    g = gen(11)
    torch.rand(1, generator=g)
    box = random_erasing_params(50, 30, scale=(0.02, 0.4), generator=g)
    image = torch.full((3, 50, 30), BACKGROUND)
    assert erased_box(image, RandomErasingFill(1.0, generator=gen(11))(image)) == box


def test_erasing_global_rng_without_generator() -> None:
    image = torch.full((3, 40, 20), BACKGROUND)
    erase = RandomErasingFill(1.0)
    torch.manual_seed(5)
    a = erase(image)
    torch.manual_seed(5)
    assert torch.equal(erase(image), a)


def test_erasing_fill_variants() -> None:
    one_channel = torch.full((1, 30, 30), BACKGROUND)
    out = RandomErasingFill(1.0, fill=(0.5, 0.6, 0.7), generator=gen(0))(one_channel)
    assert set(out.unique().tolist()) == {BACKGROUND, 0.5}  # official: a 1-channel image takes fill[0]
    out = RandomErasingFill(1.0, fill=0.0, generator=gen(0))(torch.full((3, 30, 30), BACKGROUND))
    assert set(out.unique().tolist()) == {BACKGROUND, 0.0}
    with pytest.raises(ValueError, match="fill"):
        RandomErasingFill(1.0, fill=(0.1, 0.2))(torch.zeros(3, 10, 10))
    # a batch gets one rectangle for all its images, like torchvision's transform
    batch = torch.full((4, 3, 30, 20), BACKGROUND)
    out = RandomErasingFill(1.0, generator=gen(2))(batch)
    boxes = {erased_box(batch[i], out[i]) for i in range(4)}
    assert len(boxes) == 1 and None not in boxes


def test_erasing_keeps_tv_tensor_type() -> None:
    image = tv_tensors.Image(torch.full((3, 30, 20), BACKGROUND))
    out = RandomErasingFill(1.0, generator=gen(0))(image)
    assert type(out) is tv_tensors.Image
    label = torch.tensor(3)
    out_image, out_label = RandomErasingFill(1.0, generator=gen(0))(image, label)
    assert out_label is label and type(out_image) is tv_tensors.Image


def test_erasing_errors() -> None:
    with pytest.raises(ValueError, match="p"):
        RandomErasingFill(1.5)
    with pytest.raises(ValueError, match="scale"):
        RandomErasingFill(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="scale"):
        RandomErasingFill(scale=(0.2, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        RandomErasingFill(ratio=(0.0, 2.0))
    with pytest.raises(TypeError, match="scale"):
        RandomErasingFill(scale=0.3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        RandomErasingFill(attempts=0)
    with pytest.raises(TypeError, match="generator"):
        RandomErasingFill(generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        RandomErasingFill(1.0)(torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL"):
        RandomErasingFill(1.0)(PIL.Image.new("RGB", (10, 10)))


def test_channel_random_erasing_defaults() -> None:
    t = ChannelRandomErasing()
    assert (t.p, t.scale, t.fill, t.attempts) == (0.5, (0.02, 0.4), CIFAR_MEAN, 100)
    assert t.ratio == pytest.approx((0.3, 1 / 0.3))
    out = ChannelRandomErasing(1.0, generator=gen(0))(torch.full((3, 40, 20), BACKGROUND))
    assert set(out.unique().tolist()) == {BACKGROUND, *(torch.tensor(CIFAR_MEAN).tolist())}


def test_extra_repr() -> None:
    assert repr(RandomErasingFill(0.3, scale=(0.2, 0.8))) == (
        "RandomErasingFill(p=0.3, scale=(0.2, 0.8), ratio=(0.3, 3.333), fill=(0.485, 0.456, 0.406), attempts=100)"
    )
    assert repr(ChannelAdapGray(0.25)) == "ChannelAdapGray(p=0.25)"
    assert repr(ChannelExchange(3, generator=gen(0))) == "ChannelExchange(gray=3, generator=<torch.Generator>)"


# ------------------------------------------------------------------------------------ channel augmentations

RGB = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1).expand(3, 4, 2).clone()  # the branch is read off the values
GRAY_VALUE = 0.2989 * 1.0 + 0.5870 * 2.0 + 0.1140 * 3.0


def branch_of(out: torch.Tensor) -> str:
    values = tuple(round(float(out[c, 0, 0]), 4) for c in range(3))
    names = {(1.0, 1.0, 1.0): "R", (2.0, 2.0, 2.0): "G", (3.0, 3.0, 3.0): "B", (1.0, 2.0, 3.0): "same"}
    if values in names:
        return names[values]
    assert values == (round(GRAY_VALUE, 4),) * 3, values
    return "gray"


def test_replicate_and_gray_exact() -> None:
    x = torch.randn(3, 6, 5)
    for c in range(3):
        out = replicate_channel(x, c)
        assert all(torch.equal(out[j], x[c]) for j in range(3))
    gray = 0.2989 * x[0] + 0.5870 * x[1] + 0.1140 * x[2]  # the official expression
    out = weighted_gray(x)
    assert all(torch.equal(out[j], gray) for j in range(3))
    batch = torch.randn(2, 3, 4, 4)
    assert torch.equal(weighted_gray(batch)[1, 2], weighted_gray(batch[1])[0])
    u8 = torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1)
    assert weighted_gray(u8).flatten().tolist() == [round(0.2989 * 10 + 0.5870 * 200 + 0.1140 * 30)] * 3
    image = tv_tensors.Image(x)
    assert type(replicate_channel(image, 1)) is tv_tensors.Image and type(weighted_gray(image)) is tv_tensors.Image
    with pytest.raises(ValueError, match="3-channel"):
        weighted_gray(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="channel"):
        replicate_channel(x, 3)


def test_channel_adap_gray_branches_exact() -> None:
    t = ChannelAdapGray(0.5)
    x = torch.randn(3, 5, 4)
    for c in range(3):
        assert torch.equal(t.transform(x, {"branch": c, "gray": False}), replicate_channel(x, c))
    assert torch.equal(t.transform(x, {"branch": 3, "gray": True}), weighted_gray(x))
    assert t.transform(x, {"branch": 3, "gray": False}) is x


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.5, {"R": 0.25, "G": 0.25, "B": 0.25, "gray": 0.125, "same": 0.125}),
        (0.0, {"R": 0.25, "G": 0.25, "B": 0.25, "gray": 0.0, "same": 0.25}),
        (1.0, {"R": 0.25, "G": 0.25, "B": 0.25, "gray": 0.25, "same": 0.0}),
    ],
)
def test_channel_adap_gray_frequencies(p: float, expected: dict[str, float]) -> None:
    t = ChannelAdapGray(p, generator=gen(0))
    trials = 4000
    outcomes = [branch_of(t(RGB)) for _ in range(trials)]
    for name, q in expected.items():
        hits = outcomes.count(name)
        if q in (0.0, 1.0):
            assert hits == q * trials, (name, hits)
        else:
            assert abs(zscore_binomial(hits, trials, q)) < 4, (name, hits)


@pytest.mark.parametrize(
    ("gray", "expected"),
    [
        (2, {"R": 1 / 3, "G": 1 / 3, "B": 1 / 3, "gray": 0.0}),
        (3, {"R": 0.25, "G": 0.25, "B": 0.25, "gray": 0.25}),
        (5, {"R": 1 / 6, "G": 1 / 6, "B": 1 / 6, "gray": 0.5}),
        (0, {"R": 1.0, "G": 0.0, "B": 0.0, "gray": 0.0}),
    ],
)
def test_channel_exchange_frequencies(gray: int, expected: dict[str, float]) -> None:
    t = ChannelExchange(gray, generator=gen(1))
    trials = 3000
    outcomes = [branch_of(t(RGB)) for _ in range(trials)]
    assert "same" not in outcomes  # the image always changes
    for name, q in expected.items():
        hits = outcomes.count(name)
        if q in (0.0, 1.0):
            assert hits == q * trials, (name, hits)
        else:
            assert abs(zscore_binomial(hits, trials, q)) < 4, (name, hits)


def test_channel_exchange_branches_exact() -> None:
    t = ChannelExchange(4)
    x = torch.randn(3, 5, 4)
    for c in range(3):
        assert torch.equal(t.transform(x, {"branch": c}), replicate_channel(x, c))
    for branch in (3, 4):
        assert torch.equal(t.transform(x, {"branch": branch}), weighted_gray(x))


def test_channel_transforms_determinism_and_errors() -> None:
    x = torch.randn(3, 6, 4)
    for make in (lambda g: ChannelAdapGray(0.5, generator=g), lambda g: ChannelExchange(3, generator=g)):
        t1, t2 = make(gen(4)), make(gen(4))
        assert all(torch.equal(t1(x), t2(x)) for _ in range(30))
    with pytest.raises(ValueError, match="3-channel"):
        ChannelAdapGray()(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="3-channel"):
        ChannelExchange()(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="gray"):
        ChannelExchange(-1)
    with pytest.raises(TypeError, match="gray"):
        ChannelExchange(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p"):
        ChannelAdapGray(-0.1)
    with pytest.raises(TypeError, match="PIL"):
        ChannelExchange()(PIL.Image.new("RGB", (4, 4)))


# ---------------------------------------------------------------------------------------------- pipelines

OFFICIAL_SIZES = {
    "deen_sysu": (384, 144),
    "deen_regdb": (384, 144),
    "deen_llcm": (384, 144),
    "ddag": (288, 144),
    "agw": (288, 144),
    "agw_llcm": (288, 144),
    "caj_visible": (288, 144),
    "caj_visible_exchange": (288, 144),
    "caj_infrared": (288, 144),
    "mso": (288, 144),
    "mpanet": (384, 128),
}


#: The two pipelines for tiny images (not official) and their default size (the examples' quick runs).
LIGHT_SIZES = {"light": (64, 32), "light_gray": (64, 32)}


def test_registered_names() -> None:
    assert set(TRAIN_PIPELINES) == set(OFFICIAL_SIZES) | set(LIGHT_SIZES)
    for name, (h, w) in LIGHT_SIZES.items():
        assert (TRAIN_PIPELINES[name].height, TRAIN_PIPELINES[name].width) == (h, w)
    for name, (h, w) in OFFICIAL_SIZES.items():
        assert (TRAIN_PIPELINES[name].height, TRAIN_PIPELINES[name].width) == (h, w)


def images() -> dict[str, object]:
    return {
        "rgb": PIL.Image.new("RGB", (70, 150), (200, 40, 90)),
        "grey_as_rgb": PIL.Image.new("L", (50, 120), 130).convert("RGB"),
        "grey": PIL.Image.new("L", (50, 120), 130),
        "uint8": torch.randint(0, 256, (3, 100, 41), dtype=torch.uint8, generator=gen(0)),
        "uint8_grey": torch.randint(0, 256, (1, 100, 41), dtype=torch.uint8, generator=gen(1)),
    }


@pytest.mark.parametrize("name", sorted(OFFICIAL_SIZES | LIGHT_SIZES))
def test_pipeline_output(name: str) -> None:
    torch.manual_seed(0)
    transform = build_train_transform(name)
    h, w = (OFFICIAL_SIZES | LIGHT_SIZES)[name]
    for kind, image in images().items():
        for _ in range(3):
            out = transform(image)
            assert type(out) is torch.Tensor, kind
            assert out.shape == (3, h, w) and out.dtype == torch.float32, kind
            assert torch.isfinite(out).all()
    custom = build_train_transform(name, height=64, width=32)
    assert custom(images()["rgb"]).shape == (3, 64, 32)
    # DataLoader workers started with "spawn" receive the transform pickled
    assert pickle.loads(pickle.dumps(transform))(images()["rgb"]).shape == (3, h, w)


def normalized(value: float) -> set[float]:
    """The three normalised channel values of a grey pixel ``value`` in [0, 255]."""
    return {round((value / 255 - m) / s, 4) for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)}


@pytest.mark.parametrize(
    ("name", "pad", "fills"),
    [
        ("ddag", 0, ()),
        ("agw", 0, ()),
        ("agw_llcm", 0, (0.0,)),
        ("deen_sysu", 0, IMAGENET_MEAN),
        ("deen_regdb", 0, IMAGENET_MEAN),
        ("mpanet", 127, (0.0,)),
    ],
)
def test_pipeline_values(name: str, pad: int, fills: tuple[float, ...]) -> None:
    # a grey image is unchanged by resizing, grayscale and flips: only the image value, the padding value
    # and the erasing fill can appear, each normalised with the ImageNet statistics (the fill is not)
    h, w = OFFICIAL_SIZES[name]
    transform = build_train_transform(name)
    image = PIL.Image.new("RGB", (w, h), (100, 100, 100))
    allowed = normalized(100) | normalized(pad) | {round(f, 4) for f in fills}
    torch.manual_seed(1)
    seen: set[float] = set()
    for _ in range(30):
        values = {round(v, 4) for v in transform(image).unique().tolist()}
        assert values <= allowed, values - allowed
        seen |= values
    assert normalized(pad) <= seen  # the pad is visible in some crop (offset != 10)
    if fills:
        assert {round(f, 4) for f in fills} <= seen  # erasing happened


def steps(name: str) -> list[v2.Transform]:
    return list(build_train_transform(name).transforms)


def test_pipeline_steps_are_the_official_ones() -> None:
    load = [v2.ToPILImage, v2.RGB, v2.Resize]
    tensor = [v2.ToImage, v2.ToDtype, v2.Normalize]
    agw = [*load, v2.Pad, v2.RandomCrop, v2.RandomHorizontalFlip, *tensor]
    deen = [*load, v2.Pad, v2.RandomGrayscale, v2.RandomCrop, v2.RandomHorizontalFlip, *tensor, RandomErasingFill]
    expected = {
        "deen_sysu": deen,
        "deen_regdb": deen,
        "deen_llcm": deen,
        "ddag": agw,
        "agw": agw,
        "agw_llcm": [*agw, RandomErasingFill],
        "caj_visible": [*agw, ChannelRandomErasing],
        "caj_visible_exchange": [*agw, ChannelRandomErasing, ChannelExchange],
        "caj_infrared": [*agw, ChannelRandomErasing, ChannelAdapGray],
        "mpanet": [*load, v2.RandomHorizontalFlip, v2.Pad, v2.RandomCrop, *tensor, v2.RandomErasing],
    }
    for name, types in expected.items():
        assert [type(t) for t in steps(name)] == [*types, v2.ToPureTensor], name
    for name in expected:
        s = steps(name)
        normalize = next(t for t in s if isinstance(t, v2.Normalize))
        assert (tuple(normalize.mean), tuple(normalize.std)) == (IMAGENET_MEAN, IMAGENET_STD)
        resize = next(t for t in s if isinstance(t, v2.Resize))
        expected_mode = v2.InterpolationMode.BILINEAR if name == "mpanet" else v2.InterpolationMode.LANCZOS
        assert resize.interpolation == expected_mode
        pad = next(t for t in s if isinstance(t, v2.Pad))
        assert (pad.padding, pad.fill, pad.padding_mode) == (10, 127 if name == "mpanet" else 0, "constant")
    erasing = {name: steps(name)[-2] for name in expected if isinstance(steps(name)[-2], RandomErasingFill)}
    assert erasing["deen_sysu"].scale == (0.2, 0.8) and erasing["deen_sysu"].fill == IMAGENET_MEAN
    for name in ("deen_regdb", "deen_llcm"):
        assert erasing[name].scale == (0.02, 0.4) and erasing[name].fill == IMAGENET_MEAN
    assert erasing["agw_llcm"].scale == (0.02, 0.4) and erasing["agw_llcm"].fill == (0.0,)
    assert erasing["caj_visible"].fill == CIFAR_MEAN
    for name in ("deen_sysu", "agw_llcm", "caj_visible"):
        assert erasing[name].p == 0.5 and erasing[name].attempts == 100
        assert erasing[name].ratio == pytest.approx((0.3, 1 / 0.3))
    assert steps("caj_visible_exchange")[-2].gray == 2
    assert steps("caj_infrared")[-2].p == 0.5
    mpanet_erasing = steps("mpanet")[-2]
    defaults = (0.5, (0.02, 0.33), (0.3, 3.3), [0.0])
    assert (mpanet_erasing.p, mpanet_erasing.scale, mpanet_erasing.ratio, mpanet_erasing.value) == defaults
    grayscale = next(t for t in steps("deen_sysu") if isinstance(t, v2.RandomGrayscale))
    assert grayscale.p == 0.5


def test_test_transform() -> None:
    t = build_test_transform(288, 144)
    for image in images().values():
        out = t(image)
        assert type(out) is torch.Tensor and out.shape == (3, 288, 144) and out.dtype == torch.float32
    same_size = PIL.Image.new("RGB", (144, 288), (100, 100, 100))
    assert {round(v, 4) for v in t(same_size).unique().tolist()} == normalized(100)  # deterministic
    assert torch.equal(t(same_size), t(same_size))
    bilinear = build_test_transform(256, 128, interpolation=v2.InterpolationMode.BILINEAR)
    assert bilinear(images()["rgb"]).shape == (3, 256, 128)
    with pytest.raises(ValueError, match="height"):
        build_test_transform(0, 144)


def test_unknown_name_lists_options() -> None:
    with pytest.raises(ValueError, match="unknown training pipeline 'deen'") as info:
        build_train_transform("deen")
    for name in OFFICIAL_SIZES:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="width"):
        build_train_transform("agw", width=0)


def test_register_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "TRAIN_PIPELINES", dict(TRAIN_PIPELINES))
    with pytest.raises(ValueError, match="already registered"):
        register_pipeline("agw", TRAIN_PIPELINES["agw"].build, height=288, width=144)

    def build(height: int, width: int) -> v2.Compose:
        return v2.Compose([v2.ToImage(), v2.Resize((height, width)), v2.ToDtype(torch.float32, scale=True)])

    register_pipeline("mine", build, height=32, width=16, description="resize only")
    assert T.TRAIN_PIPELINES["mine"].description == "resize only"
    assert build_train_transform("mine")(PIL.Image.new("RGB", (10, 10))).shape == (3, 32, 16)
    with pytest.raises(TypeError, match="build"):
        register_pipeline("other", "not callable", height=1, width=1)  # type: ignore[arg-type]
    assert "mine" not in TRAIN_PIPELINES  # the module dict is restored by monkeypatch


# ------------------------------------------------------------------------------------------ light pipelines


def reference_light(height: int, width: int, *, gray: bool) -> v2.Compose:
    """The "light" training transforms as the examples wrote them before they were registered here."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            v2.Resize((height, width), antialias=True),
            *([v2.RandomGrayscale(0.5)] if gray else []),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.ToPureTensor(),
        ]
    )


@pytest.mark.parametrize("name", sorted(LIGHT_SIZES))
def test_light_pipeline_steps(name: str) -> None:
    gray = name == "light_gray"
    s = steps(name)
    expected = [v2.ToImage, v2.RGB, v2.Resize, *([v2.RandomGrayscale] if gray else []), v2.RandomHorizontalFlip]
    assert [type(t) for t in s] == [*expected, v2.ToDtype, v2.Normalize, v2.ToPureTensor]
    resize = next(t for t in s if isinstance(t, v2.Resize))
    mode = v2.InterpolationMode(resize.interpolation)
    assert (resize.size, mode, resize.antialias) == ([64, 32], v2.InterpolationMode.BILINEAR, True)
    assert next(t for t in s if isinstance(t, v2.RandomHorizontalFlip)).p == 0.5
    if gray:
        assert next(t for t in s if isinstance(t, v2.RandomGrayscale)).p == 0.5
    to_dtype = next(t for t in s if isinstance(t, v2.ToDtype))
    assert (to_dtype.dtype, to_dtype.scale) == (torch.float32, True)
    normalize = next(t for t in s if isinstance(t, v2.Normalize))
    assert (tuple(normalize.mean), tuple(normalize.std)) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("name", sorted(LIGHT_SIZES))
@pytest.mark.parametrize(("height", "width"), [(64, 32), (16, 8)])
def test_light_pipeline_equals_the_examples_transform(name: str, height: int, width: int) -> None:
    transform = build_train_transform(name, height=height, width=width)
    reference = reference_light(height, width, gray=name == "light_gray")
    for kind, image in images().items():
        for seed in range(6):  # the same random draws: flips and greys at the same steps
            torch.manual_seed(seed)
            got = transform(image)
            torch.manual_seed(seed)
            assert torch.equal(got, reference(image)), (kind, seed)


def test_light_gray_greys_half_the_images_and_light_none() -> None:
    image = PIL.Image.new("RGB", (20, 40), (200, 30, 90))
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]

    def grey(x: torch.Tensor) -> bool:
        rgb = x.double() * std.double() + mean.double()
        return bool(torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5))

    torch.manual_seed(0)
    light, light_gray = build_train_transform("light"), build_train_transform("light_gray")
    assert not any(grey(light(image)) for _ in range(50))
    trials = 400
    greys = sum(grey(light_gray(image)) for _ in range(trials))
    assert abs(zscore_binomial(greys, trials, 0.5)) < 4


@pytest.mark.parametrize("cls", [RandomErasingFill, ChannelAdapGray])
def test_probability_is_checked_by_the_shared_validator(cls: type) -> None:
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\], got "):
            cls(bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match=r"`p` must be a real number, got "):
            cls(bad)
    assert cls(0).p == 0.0 and type(cls(1).p) is float
