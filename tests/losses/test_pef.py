"""Tests for the MSO perceptual edge features loss against a hand-written pass through torchvision's VGG-16."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch import nn

from vireid_layers.losses.pef import PEFLoss

F64 = torch.float64
ORIENTED = torch.tensor([[-4.0, -2.0, 2.0], [-4.0, 0.0, 4.0], [-2.0, 2.0, 4.0]])  # sum of the four Sobel kernels

# Written out from the VGG-16 layout: torchvision's features[i], max pooling at 4, 9, 16, 23, 30.
ENTRY_START = {"conv1_2": 2, "block2": 5, "image": 0}
ENTRY_TAPS = {
    ("conv1_2", "pool"): [4, 9, 16, 23],
    ("conv1_2", "relu"): [3, 8, 15, 22],
    ("block2", "pool"): [9, 16, 23, 30],
    ("block2", "relu"): [8, 15, 22, 29],
    ("image", "pool"): [4, 9, 16, 23],
    ("image", "relu"): [3, 8, 15, 22],
}
CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    """One torchvision VGG-16 with random weights (no download) for the whole module."""
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def vgg_state(vgg: nn.Module) -> dict[str, torch.Tensor]:
    """Its ``features.*`` entries (what the loss needs) plus one classifier entry the loss must ignore."""
    state = {k: v.clone() for k, v in vgg.state_dict().items() if k.startswith("features.")}
    state["classifier.6.bias"] = vgg.state_dict()["classifier.6.bias"].clone()
    return state


@pytest.fixture(scope="module")
def vgg64(vgg: nn.Module) -> nn.Sequential:
    return copy.deepcopy(vgg.features).to(F64)


@pytest.fixture(scope="module")
def weight_files(vgg_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vgg16")
    files = {"pth": folder / "vgg16.pth", "safetensors": folder / "vgg16.safetensors"}
    torch.save(vgg_state, files["pth"])
    save_file({k: v.contiguous() for k, v in vgg_state.items()}, str(files["safetensors"]))
    return files


def inputs(n: int = 2, hw: tuple[int, int] = (64, 64), seed: int = 0, dtype: torch.dtype = F64) -> tuple:
    """Normalised-looking images and a non-negative stem output at a quarter of their resolution."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, *hw, generator=g, dtype=dtype)
    features = torch.rand(n, 64, hw[0] // 4, hw[1] // 4, generator=g, dtype=dtype) * 2
    return features, images


# ----------------------------------------------------------------------------------------- plain reference


def reference_pef(
    features_net: nn.Sequential,
    f: torch.Tensor,
    images: torch.Tensor,
    entry: str,
    block_output: str,
    modalities: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 2-3 by hand: the oriented Sobel kernel on R+G+B, mean over each 4x4 cell, VGG layers one by one."""
    edges = F.conv2d(images.sum(1, keepdim=True), ORIENTED.to(images.dtype).view(1, 1, 3, 3), padding=1)
    cell = (images.shape[2] // f.shape[2], images.shape[3] // f.shape[3])
    edges = F.avg_pool2d(edges, cell)
    if entry == "image":
        f_in, e_in = f.mean(1, keepdim=True).repeat(1, 3, 1, 1), edges.repeat(1, 3, 1, 1)
    else:
        f_in, e_in = f, edges.repeat(1, 64, 1, 1)
    taps = ENTRY_TAPS[(entry, block_output)]

    def phi(x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(ENTRY_START[entry], taps[-1] + 1):
            x = features_net[i](x)
            if i in taps:
                outs.append(x.clone())
        return outs

    with torch.no_grad():
        targets = phi(e_in)
    per_image = sum(((a - b) ** 2).mean(dim=(1, 2, 3)) for a, b in zip(phi(f_in), targets, strict=True))
    if modalities is None:
        return per_image.mean()
    return sum(per_image[modalities == m].mean() for m in (0, 1) if (modalities == m).any())


# --------------------------------------------------------------------------------------------- smoke / shape


def test_smoke_mso_shapes() -> None:
    """MSO's sizes: 288 x 144 images, a 64 x 72 x 36 stem output (small batch)."""
    pef = PEFLoss()
    images = torch.randn(2, 3, 288, 144)
    features = torch.rand(2, 64, 72, 36, requires_grad=True)
    loss = pef(features, images, torch.tensor([0, 1]))
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("entry", "block_output", "convs"),
    [
        ("conv1_2", "pool", [2, 5, 7, 10, 12, 14, 17, 19, 21]),
        ("conv1_2", "relu", [2, 5, 7, 10, 12, 14, 17, 19, 21]),
        ("block2", "pool", [5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
        ("image", "pool", [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]),
    ],
)
def test_only_used_layers_are_kept(entry: str, block_output: str, convs: list[int]) -> None:
    pef = PEFLoss(entry=entry, block_output=block_output)
    assert set(pef.state_dict()) == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    assert pef.features[0].in_channels == (3 if entry == "image" else 64)


# ------------------------------------------------------------------------------------------ weight loading


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_load_from_file(kind: str, weight_files: dict[str, Path], vgg_state: dict[str, torch.Tensor]) -> None:
    pef = PEFLoss(weights=weight_files[kind])
    state = pef.state_dict()
    assert state  # the loss holds the VGG weights it uses, and only those
    for key, value in state.items():
        assert torch.equal(value, vgg_state[key]), key
    assert (
        PEFLoss(weights=str(weight_files[kind]), entry="block2")
        .state_dict()["features.28.weight"]
        .equal(vgg_state["features.28.weight"])
    )


def test_loaded_file_gives_the_reference_loss(weight_files: dict[str, Path], vgg64: nn.Sequential) -> None:
    pef = PEFLoss(weights=weight_files["pth"], dtype=F64)
    f, images = inputs(seed=1)
    torch.testing.assert_close(pef(f, images), reference_pef(vgg64, f, images, "conv1_2", "pool"))


def test_imagenet_uses_torchvision(monkeypatch: pytest.MonkeyPatch, vgg: nn.Module) -> None:
    """weights="imagenet" is torchvision's own IMAGENET1K_V1 loading (faked here: no download)."""
    calls: list[dict] = []

    def fake_vgg16(**kwargs: object) -> nn.Module:
        calls.append(kwargs)
        return vgg

    monkeypatch.setattr(torchvision.models, "vgg16", fake_vgg16)
    pef = PEFLoss(weights="imagenet")
    assert calls == [{"weights": torchvision.models.VGG16_Weights.IMAGENET1K_V1}]
    assert torch.equal(pef.state_dict()["features.21.weight"], vgg.state_dict()["features.21.weight"])


def test_weights_none_is_random_torchvision_init() -> None:
    torch.manual_seed(0)
    pef = PEFLoss()
    conv = pef.features[0]  # conv1_2: fan_out = 64 * 9
    assert torch.equal(conv.bias, torch.zeros(64))
    assert abs(float(conv.weight.std()) - (2 / (64 * 9)) ** 0.5) < 0.01
    assert not torch.equal(pef.features[0].weight, PEFLoss().features[0].weight)


# ----------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(("entry", "block_output"), list(ENTRY_TAPS))
def test_reference(entry: str, block_output: str, vgg_state: dict, vgg64: nn.Sequential) -> None:
    pef = PEFLoss(entry=entry, block_output=block_output, weights=vgg_state, dtype=F64)
    f, images = inputs(seed=2)
    modalities = torch.tensor([1, 0])
    f_lib, f_ref = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    actual = pef(f_lib, images, modalities)
    expected = reference_pef(vgg64, f_ref, images, entry, block_output, modalities)
    assert expected > 0
    torch.testing.assert_close(actual, expected)
    actual.backward()
    expected.backward()
    torch.testing.assert_close(f_lib.grad, f_ref.grad)


def test_zero_when_the_features_are_the_edges(vgg_state: dict) -> None:
    _, images = inputs(seed=3)
    edges = F.avg_pool2d(F.conv2d(images.sum(1, keepdim=True), ORIENTED.to(F64).view(1, 1, 3, 3), padding=1), 4)
    pef = PEFLoss(weights=vgg_state, dtype=F64)
    # zero up to float64 rounding (the library sums four kernels, this test uses their sum)
    assert pef(edges.repeat(1, 64, 1, 1), images) < 1e-20
    assert pef(torch.rand(2, 64, 16, 16, dtype=F64), images) > 1e-3
    image_entry = PEFLoss(entry="image", weights=vgg_state, dtype=F64)
    assert image_entry(edges.repeat(1, 5, 1, 1), images) < 1e-20  # the channel mean is compared
    assert image_entry(torch.rand(2, 5, 16, 16, dtype=F64), images) > 1e-3


def test_combine_changes_the_target(vgg_state: dict) -> None:
    f, images = inputs(seed=4, dtype=torch.float32)
    values = {c: float(PEFLoss(combine=c, weights=vgg_state)(f, images)) for c in ("sum", "abs", "magnitude")}
    assert len(set(values.values())) == 3


def test_modalities(vgg_state: dict) -> None:
    """Eq. 2 adds the per-modality means: equal counts give twice the batch mean; one call per modality adds up."""
    pef = PEFLoss(weights=vgg_state, dtype=F64)
    f, images = inputs(n=4, seed=5)
    modalities = torch.tensor([1, 0, 0, 1])
    per_image = torch.stack([pef(f[i : i + 1], images[i : i + 1]) for i in range(4)])
    both = pef(f, images, modalities)
    torch.testing.assert_close(both, per_image[[1, 2]].mean() + per_image[[0, 3]].mean())
    torch.testing.assert_close(both, 2 * pef(f, images))
    torch.testing.assert_close(pef(f, images, torch.zeros(4, dtype=torch.long)), pef(f, images))  # one modality
    unequal = torch.tensor([1, 0, 0, 0])
    torch.testing.assert_close(pef(f, images, unequal), per_image[0] + per_image[1:].mean())


# ------------------------------------------------------------------------------------- frozen VGG, gradients


def test_vgg_frozen_eval_and_gradient_reaches_the_stem(vgg_state: dict) -> None:
    pef = PEFLoss(weights=vgg_state)
    assert all(not p.requires_grad for p in pef.parameters())
    pef.train()
    assert pef.training and all(not m.training for m in pef.features.modules())
    pef.train(False)
    assert not pef.training and not pef.features.training
    pef.train(True)
    parent = nn.ModuleDict({"loss": pef}).train()
    assert not pef.features.training and not any(m.training for m in pef.features.modules())
    assert all(p.grad is None for p in parent.parameters())

    f, images = inputs(dtype=torch.float32)
    f.requires_grad_(True)
    images.requires_grad_(True)
    pef(f, images, torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in pef.parameters())
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert images.grad is None  # the edge map is a constant target


def test_stem_gradient_flows_through_a_conv(vgg_state: dict) -> None:
    """End to end: only the stem's parameters are updated."""
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    pef = PEFLoss(weights=vgg_state)
    images = torch.randn(2, 3, 64, 64)
    pef(stem(images), images).backward()
    assert stem[0].weight.grad is not None and stem[0].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------- compile / autocast


def test_compile(vgg_state: dict) -> None:
    torch._dynamo.reset()
    pef = PEFLoss(weights=vgg_state)
    compiled = torch.compile(pef, backend="eager", fullgraph=True)  # fullgraph=False would be enough
    f, images = inputs(dtype=torch.float32)
    modalities = torch.tensor([0, 1])
    torch.testing.assert_close(compiled(f, images, modalities), pef(f, images, modalities))


def test_bf16_autocast(vgg_state: dict) -> None:
    pef = PEFLoss(weights=vgg_state)
    f, images = inputs(dtype=torch.float32)
    f.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pef(f, images, torch.tensor([0, 1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_dtype_follows_the_module_and_features(vgg_state: dict) -> None:
    pef = PEFLoss(weights=vgg_state, dtype=F64)
    assert all(p.dtype == F64 for p in pef.parameters())
    f, images = inputs(dtype=F64)
    assert pef(f, images.float()).dtype == F64  # float32 images: the edge target follows the features


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"entry": "conv1_1"}, ValueError, "`entry`"),
        ({"block_output": "conv"}, ValueError, "`block_output`"),
        ({"combine": "none"}, ValueError, "`combine`"),
        ({"combine": "max"}, ValueError, "`combine`"),
        ({"weights": 3}, TypeError, "`weights`"),
        ({"weights": "imagenet1k"}, ValueError, "`weights`"),
        ({"weights": "/nonexistent/vgg16.pth"}, ValueError, "`weights`"),
        ({"weights": {"features.2.weight": torch.zeros(64, 64, 3, 3)}}, ValueError, "`weights`.*missing"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        PEFLoss(**kwargs)


def test_exception_file_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="`weights`"):
        PEFLoss(weights=path)


@pytest.fixture(scope="module")
def small_pef() -> PEFLoss:
    return PEFLoss()


@pytest.mark.parametrize(
    ("features", "images", "modalities", "error", "message"),
    [
        (
            torch.rand(64, 16, 16),
            torch.randn(1, 3, 64, 64),
            None,
            ValueError,
            r"`features` must have shape \(N, 64, h, w\)",
        ),
        (torch.rand(1, 32, 16, 16), torch.randn(1, 3, 64, 64), None, ValueError, r"`features` must have shape \(N, 64"),
        (
            torch.rand(1, 64, 16, 16),
            torch.randn(3, 64, 64),
            None,
            ValueError,
            r"`images` must have shape \(N, C, H, W\)",
        ),
        (
            torch.rand(2, 64, 16, 16),
            torch.randn(1, 3, 64, 64),
            None,
            ValueError,
            r"`images` must have shape \(2, C, H, W\)",
        ),
        (torch.rand(1, 64, 16, 16), torch.randn(1, 3, 8, 8), None, ValueError, "`images`.*at least as large"),
        (torch.rand(1, 64, 8, 4), torch.randn(1, 3, 32, 16), None, ValueError, "`features` must be at least 16x16"),
        (torch.rand(2, 64, 16, 16), torch.randn(2, 3, 64, 64), torch.tensor([0, 2]), ValueError, "`modalities`"),
        (torch.rand(2, 64, 16, 16), torch.randn(2, 3, 64, 64), torch.tensor([0]), ValueError, "`modalities`"),
        ("f", torch.randn(2, 3, 64, 64), None, TypeError, "`features` must be a torch.Tensor"),
    ],
)
def test_exception_forward(
    small_pef: PEFLoss, features: object, images: object, modalities: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        small_pef(features, images, modalities)


def test_minimum_size_with_relu_taps() -> None:
    pef = PEFLoss(block_output="relu")
    assert torch.isfinite(pef(torch.rand(1, 64, 8, 8), torch.randn(1, 3, 32, 32)))
    with pytest.raises(ValueError, match="at least 8x8"):
        pef(torch.rand(1, 64, 4, 8), torch.randn(1, 3, 16, 32))


def test_extra_repr() -> None:
    assert PEFLoss().extra_repr() == "entry='conv1_2', block_output='pool', combine='sum'"
    text = repr(PEFLoss(entry="image", block_output="relu", combine="abs"))
    assert "entry='image', block_output='relu', combine='abs'" in text


# ------------------------------------------------------------------------------------------------ reduction


def test_reduction() -> None:
    """``"none"`` gives the per-image losses; ``"mean"`` (the default) and ``"sum"`` are their reductions."""
    torch.manual_seed(0)
    pef = PEFLoss(weights=None, dtype=F64)
    features, images = inputs(n=4)
    modalities = torch.tensor([0, 1, 1, 1])
    per_image = PEFLoss(weights=None, dtype=F64, reduction="none")
    per_image.load_state_dict(pef.state_dict())
    rows = per_image(features, images)
    assert rows.shape == (4,) and (rows >= 0).all()
    torch.testing.assert_close(per_image(features, images, modalities), rows, rtol=0, atol=0)
    torch.testing.assert_close(pef(features, images), rows.mean())
    # with modalities, "mean" averages within each modality and adds the two averages (Eq. 2)
    torch.testing.assert_close(pef(features, images, modalities), rows[0] + rows[1:].mean())
    summed = PEFLoss(weights=None, dtype=F64, reduction="sum")
    summed.load_state_dict(pef.state_dict())
    torch.testing.assert_close(summed(features, images, modalities), rows.sum())
    assert "reduction='none'" in repr(per_image) and "reduction" not in repr(pef)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        PEFLoss(weights=None, reduction="max")  # type: ignore[arg-type]
