"""Activation and Grad-CAM maps against per-image references (float64), edge cases, and the overlay drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vireid_layers import TwoStreamBackbone
from vireid_layers.models import DEEN
from vireid_layers.visualize import activation_maps, default_activation_layer, plot_activation_maps


class Net(nn.Module):
    """A two-stream backbone whose embedding is its pooled, L2-normalised last feature map."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(0)
        stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        stages = [
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1)),
        ]
        self.backbone = TwoStreamBackbone(
            stem, stages, stem_channels=4, stem_reduction=2, channels=[6, 8], reductions=[4, 4]
        )
        with torch.no_grad():  # the infrared stem differs from the visible one
            self.backbone.infrared_stem[0].weight.mul_(-0.5)
        self.to(dtype)

    def embed(self, images: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(images, modalities).mean(dim=(2, 3)), dim=1)


def _normalise(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


def _inputs(n: int = 4, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 16, 8, generator=gen, dtype=dtype), torch.tensor([0, 1, 1, 0][:n])


def test_default_layer() -> None:
    net = Net()
    assert default_activation_layer(net) is net.backbone.stages[-1][-1]
    assert default_activation_layer(net.backbone) is net.backbone.stages[-1][-1]
    with pytest.raises(TypeError, match="layer"):
        default_activation_layer(nn.Linear(2, 2))


def test_activation_matches_a_per_image_reference() -> None:
    net = Net()
    images, modalities = _inputs()
    maps = activation_maps(net, images, modalities)
    assert maps.shape == (4, 16, 8) and maps.dtype == torch.float64
    net.eval()
    with torch.no_grad():
        for i in range(4):
            a = net.backbone(images[i : i + 1], modalities[i : i + 1])[0]
            torch.testing.assert_close(maps[i], _normalise(a.pow(2).sum(0), (16, 8)), rtol=1e-10, atol=1e-10)
    assert maps.amin(dim=(1, 2)).eq(0).all() and maps.amax(dim=(1, 2)).eq(1).all()


def test_gradcam_matches_a_per_image_reference() -> None:
    net = Net()
    images, modalities = _inputs()
    targets = torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net.train()
    maps = activation_maps(net, images, modalities, method="gradcam", targets=targets)
    assert net.training and all(m.training for m in net.modules())  # the modes are restored
    net.eval()
    for i in range(4):
        a = net.backbone(images[i : i + 1], modalities[i : i + 1])
        score = F.cosine_similarity(F.normalize(a.mean(dim=(2, 3)), dim=1), targets[i : i + 1])
        (grad,) = torch.autograd.grad(score.sum(), a)
        alpha = grad[0].mean(dim=(1, 2))
        reference = F.relu((alpha[:, None, None] * a[0]).sum(0)).detach()
        torch.testing.assert_close(maps[i], _normalise(reference, (16, 8)), rtol=1e-9, atol=1e-9)
    # Another target changes the map: the score, not only the image, decides it.
    other = activation_maps(net, images, modalities, method="gradcam", targets=-targets)
    assert not torch.allclose(other, maps)


def test_gradcam_with_frozen_weights_and_under_bf16_autocast() -> None:
    net = Net(torch.float32)
    for p in net.parameters():
        p.requires_grad_(False)
    images, modalities = _inputs(dtype=torch.float32)
    targets = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    maps = activation_maps(net, images, modalities, method="gradcam", targets=targets)
    assert torch.isfinite(maps).all() and maps.max() == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for method in ("activation", "gradcam"):
            out = activation_maps(net, images, modalities, method=method, targets=targets)
            assert out.dtype == torch.float32 and out.shape == (4, 16, 8)
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_deen_official_embedding_sums_the_dee_blocks() -> None:
    torch.manual_seed(0)
    model = DEEN(3, backbone="resnet18")
    images, modalities = torch.randn(2, 3, 32, 16), torch.tensor([1, 0])

    def official(net: nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return net.embed(x, m, mode="official")

    maps = activation_maps(model, images, modalities, embed=official)
    captured = []
    handle = default_activation_layer(model).register_forward_hook(lambda mod, i, o: captured.append(o))
    model.eval()
    with torch.no_grad():
        official(model, images, modalities)
    handle.remove()
    (a,) = captured
    assert a.shape[0] == 3 * 2  # the original rows and the two DEE branches
    blocks = a.unflatten(0, (3, 2)).pow(2).sum(dim=(0, 2))
    for i in range(2):
        torch.testing.assert_close(maps[i], _normalise(blocks[i], (32, 16)), rtol=1e-5, atol=1e-5)
    cam = activation_maps(model, images, modalities, method="gradcam", targets=torch.randn(2, 6 * 512), embed=official)
    assert cam.shape == (2, 32, 16) and torch.isfinite(cam).all()


def test_nan_propagates_constant_maps_are_zero_and_bad_input() -> None:
    net = Net()
    images, modalities = _inputs()
    images[1] = float("nan")
    maps = activation_maps(net, images, modalities)
    assert torch.isnan(maps[1]).all() and torch.isfinite(maps[[0, 2, 3]]).all()
    with torch.no_grad():
        net.backbone.stages[-1][-1].weight.zero_()
        net.backbone.stages[-1][-1].bias.fill_(0.3)
    flat = activation_maps(net, _inputs()[0], modalities)
    assert torch.equal(flat, torch.zeros_like(flat))
    with pytest.raises(ValueError, match="targets"):
        activation_maps(net, _inputs()[0], modalities, method="gradcam")
    with pytest.raises(ValueError, match="targets"):
        activation_maps(net, _inputs()[0], modalities, method="gradcam", targets=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="images"):
        activation_maps(net, torch.zeros(3, 16, 8), modalities[:3])
    with pytest.raises(ValueError, match="modalities"):
        activation_maps(net, _inputs()[0], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="method"):
        activation_maps(net, _inputs()[0], modalities, method="cam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ran 0 times"):
        activation_maps(net, _inputs()[0], modalities, layer=nn.Conv2d(1, 1, 1))


def test_plot_activation_maps_overlays_each_modality(render) -> None:
    images = torch.rand(5, 3, 16, 8, generator=torch.Generator().manual_seed(4))
    maps = torch.rand(5, 4, 2, generator=torch.Generator().manual_seed(5))
    modalities = torch.tensor([1, 0, 1, 0, 1])
    labels = [f"id {i}" for i in range(5)]
    fig = render(plot_activation_maps(images, maps, modalities, labels=labels, alpha=0.4, title="toy"))
    axes = np.array(fig.axes).reshape(2, 3)
    assert fig.get_suptitle() == "toy"
    expected = {0: [1, 3], 1: [0, 2, 4]}  # visible row first, columns in the order of the batch
    for r, modality in enumerate((0, 1)):
        assert axes[r, 0].get_ylabel() == ("visible" if modality == 0 else "infrared")
        for c in range(3):
            ax = axes[r, c]
            if c >= len(expected[modality]):
                assert not ax.axison and not ax.images
                continue
            i = expected[modality][c]
            picture, overlay = ax.images
            np.testing.assert_allclose(picture.get_array(), images[i].permute(1, 2, 0).numpy())
            np.testing.assert_allclose(overlay.get_array(), maps[i].numpy())
            assert overlay.get_alpha() == 0.4 and overlay.get_extent() == picture.get_extent()
            assert overlay.get_clim() == (0.0, 1.0)
            assert ax.get_title() == labels[i]
    with pytest.raises(ValueError, match="alpha"):
        plot_activation_maps(images, maps, modalities, alpha=2)
    with pytest.raises(ValueError, match="labels"):
        plot_activation_maps(images, maps, modalities, labels=labels[:2])
    with pytest.raises(ValueError, match="images"):
        plot_activation_maps(images[:3], maps, modalities)
