"""Tests for the two-stream timm backbone: shapes, routing, last stride, checkpoint loading, errors, compile."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from vireid_layers import Modality
from vireid_layers.backbones import TwoStreamBackbone, build_two_stream_backbone
from vireid_layers.backbones import two_stream as two_stream_module

ALL_MODELS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet50d",
    "resnext50_32x4d",
    "seresnet50",
    "convnext_tiny",
]
MIXED = torch.tensor([0, 1, 0, 1])
# Comparisons of two computations of a whole network run in float64: float32 rounding differs between the paths
# (batch size, memory format, row gathering pick other kernels) by amounts that depend on the CPU.
F64 = torch.float64


def images(n: int = 4, h: int = 64, w: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def perturb_(module: nn.Module, seed: int, scale: float = 0.1) -> None:
    """Add noise to every float parameter and buffer (BatchNorm running statistics included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.add_(scale * torch.randn(t.shape, generator=gen).abs())


def assert_carries(backbone: TwoStreamBackbone, state: dict[str, torch.Tensor], *, convnext: bool = False) -> None:
    """Both stems and every stage hold exactly the tensors of the timm state dict ``state``."""
    stem_prefix = "stem." if convnext else ""
    seen = set()
    for stem in (backbone.visible_stem, backbone.infrared_stem):
        for key, value in stem.state_dict().items():
            torch.testing.assert_close(value, state[stem_prefix + key], rtol=0, atol=0)
            seen.add(stem_prefix + key)
    for i, stage in enumerate(backbone.stages):
        stage_prefix = f"stages.{i}." if convnext else f"layer{i + 1}."
        for key, value in stage.state_dict().items():
            torch.testing.assert_close(value, state[stage_prefix + key], rtol=0, atol=0)
            seen.add(stage_prefix + key)
    assert seen == {k for k in state if not k.startswith(("fc.", "head."))}


@pytest.fixture(scope="module")
def resnet18() -> TwoStreamBackbone:
    """A shared resnet18 backbone; tests that change it take a deep copy."""
    torch.manual_seed(0)
    return build_two_stream_backbone("resnet18")


# ----------------------------------------------------------------------------- shapes and stage description


@pytest.mark.parametrize("size", [(64, 32), (288, 144)])
def test_shape_resnet18(resnet18: TwoStreamBackbone, size: tuple[int, int]) -> None:
    h, w = size
    with torch.no_grad():
        feats = (
            copy.deepcopy(resnet18).eval().forward_features(images(2, h, w), torch.tensor([0, 1]), return_stages=True)
        )
    expected = [(64, h // 4, w // 4), (64, h // 4, w // 4), (128, h // 8, w // 8)]
    expected += [(256, h // 16, w // 16), (512, h // 16, w // 16)]
    assert [tuple(f.shape) for f in feats] == [(2, *e) for e in expected]
    assert resnet18.stem_channels == 64
    assert resnet18.stem_reduction == 4
    assert resnet18.channels == [64, 128, 256, 512]
    assert resnet18.reductions == [4, 8, 16, 16]
    assert resnet18.num_features == 512
    assert resnet18.num_stages == 4
    assert resnet18.feature_info[0] == {"num_chs": 64, "reduction": 4, "module": "stem"}
    assert resnet18.feature_info[-1] == {"num_chs": 512, "reduction": 16, "module": "stages.3"}


def test_shape_resnet50_deen() -> None:
    """The DEEN shapes at 384x144 (reference deen_mpanet_mso.md §1.1)."""
    backbone = build_two_stream_backbone("resnet50").eval()
    with torch.no_grad():
        feats = backbone.forward_features(images(2, 384, 144), torch.tensor([0, 1]), return_stages=True)
    shapes = [tuple(f.shape[1:]) for f in feats]
    assert shapes == [(64, 96, 36), (256, 96, 36), (512, 48, 18), (1024, 24, 9), (2048, 24, 9)]
    assert backbone.channels == [256, 512, 1024, 2048]
    assert backbone.reductions == [4, 8, 16, 16]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_listed_model(name: str) -> None:
    backbone = build_two_stream_backbone(name, pretrained=False)
    assert backbone.reductions[-1] == 16
    assert backbone.reductions[-2] == 16
    assert backbone.stem_reduction == 4
    with torch.no_grad():
        out = backbone(images(2), torch.tensor([1, 0]))
    assert out.shape == (2, backbone.num_features, 4, 2)
    # last stride removed, not replaced by dilation
    for module in backbone.stages[-1].modules():
        if isinstance(module, nn.Conv2d):
            assert module.stride == (1, 1)
            assert module.dilation == (1, 1)


def test_built_in_training_mode(resnet18: TwoStreamBackbone) -> None:
    assert all(m.training for m in resnet18.modules())


def test_extra_repr(resnet18: TwoStreamBackbone) -> None:
    text = resnet18.extra_repr()
    assert "model_name='resnet18'" in text
    assert "last_stride=1" in text
    assert "reductions=[4, 8, 16, 16]" in text
    assert "last_stride=2" in build_two_stream_backbone("resnet18", last_stride=2).extra_repr()


# ----------------------------------------------------------------------------- last stride against references


def test_last_stride_1_matches_stride_removal_reference() -> None:
    """The visible path equals timm's network with the strides of layer4's first block set to 1 by hand."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=0).eval()
    perturb_(model, 1)
    reference = copy.deepcopy(model)
    reference.layer4[0].conv1.stride = (1, 1)
    reference.layer4[0].downsample[0].stride = (1, 1)
    backbone = _from_model(model, "resnet18").eval().double()
    reference.double()
    x = images(2, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x, Modality.VISIBLE), reference.forward_features(x))


def test_last_stride_1_avg_down_resnet50d() -> None:
    backbone = build_two_stream_backbone("resnet50d")
    block = backbone.stages[-1][0]
    assert isinstance(block.downsample[0], nn.Identity)
    assert block.conv2.stride == (1, 1)


def test_last_stride_1_convnext_pads_the_downsampling_conv() -> None:
    """ConvNeXt's 2x2/2 downsampling becomes a 2x2/1 conv padded by one pixel right and bottom."""
    backbone = build_two_stream_backbone("convnext_atto")
    conv = backbone.stages[-1].downsample[1]
    x = torch.randn(2, conv.in_channels, 5, 3)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-2:] == (5, 3)
    assert list(backbone.stages[-1].downsample.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_last_stride_2_matches_timm(name: str, tmp_path: Path) -> None:
    """With last_stride=2 and the same weights, each stem path equals timm's own forward_features."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0).eval()
    perturb_(model, 2, scale=0.01)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    backbone = build_two_stream_backbone(name, pretrained=tmp_path / "w.pth", last_stride=2).eval()
    assert backbone.reductions == [4, 8, 16, 32]
    backbone.double()
    model.double()
    x = images(2, dtype=F64)
    with torch.no_grad():
        expected = model.forward_features(x)
        torch.testing.assert_close(backbone(x, 0), expected)
        torch.testing.assert_close(backbone(x, torch.tensor([1, 1])), expected)


def _from_model(model: nn.Module, name: str, **kwargs) -> TwoStreamBackbone:
    """Build a backbone carrying the weights of ``model`` through a temporary checkpoint in memory."""
    state = model.state_dict()

    def fake_create_model(*args, **create_kwargs):
        created = real_create_model(*args, **create_kwargs)
        created.load_state_dict(state, strict=False)
        return created

    real_create_model = timm.create_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timm, "create_model", fake_create_model)
        return build_two_stream_backbone(name, **kwargs)


# ----------------------------------------------------------------------------- routing


def _distinct_stems(resnet18: TwoStreamBackbone, dtype: torch.dtype = torch.float32) -> TwoStreamBackbone:
    backbone = copy.deepcopy(resnet18).eval()
    perturb_(backbone.infrared_stem, 3)
    return backbone.to(dtype)


def test_routing_matches_row_by_row_reference(resnet18: TwoStreamBackbone) -> None:
    backbone = _distinct_stems(resnet18, F64)
    x = images(4, dtype=F64)
    with torch.no_grad():
        out = backbone(x, MIXED)
        for i, m in enumerate(MIXED.tolist()):
            stem = backbone.infrared_stem if m == 1 else backbone.visible_stem
            row = stem(x[i : i + 1])
            for stage in backbone.stages:
                row = stage(row)
            torch.testing.assert_close(out[i : i + 1], row)


def test_routing_has_no_ordering_assumption(resnet18: TwoStreamBackbone) -> None:
    backbone = _distinct_stems(resnet18, F64)
    x = images(6, dtype=F64)
    modality = torch.tensor([1, 1, 0, 1, 0, 0])
    perm = torch.tensor([3, 0, 5, 2, 4, 1])
    with torch.no_grad():
        out = backbone(x, modality)
        torch.testing.assert_close(backbone(x[perm], modality[perm]), out[perm])
        # a bool modality tensor routes the same way
        torch.testing.assert_close(backbone(x, modality.bool()), out)


def test_stems_have_separate_parameters(resnet18: TwoStreamBackbone) -> None:
    backbone = copy.deepcopy(resnet18).eval().double()
    x = images(4, dtype=F64)
    with torch.no_grad():
        before = backbone(x, MIXED)
        perturb_(backbone.infrared_stem, 4)
        after = backbone(x, MIXED)
    torch.testing.assert_close(after[MIXED == 0], before[MIXED == 0])
    assert not torch.allclose(after[MIXED == 1], before[MIXED == 1])


def test_single_modality_int_and_enum(resnet18: TwoStreamBackbone) -> None:
    backbone = _distinct_stems(resnet18, F64)
    x = images(2, dtype=F64)
    with torch.no_grad():
        visible, infrared = backbone(x, 0), backbone(x, Modality.INFRARED)
        torch.testing.assert_close(visible, backbone(x, torch.zeros(2, dtype=torch.long)))
        torch.testing.assert_close(infrared, backbone(x, torch.ones(2, dtype=torch.long)))
    assert not torch.allclose(visible, infrared)


def test_each_stem_normalises_only_its_rows(resnet18: TwoStreamBackbone) -> None:
    """In training, a stem's BatchNorm statistics come from its own rows only (as in the official code)."""
    backbone = copy.deepcopy(resnet18).train()
    visible_ref = copy.deepcopy(backbone.visible_stem)
    infrared_ref = copy.deepcopy(backbone.infrared_stem)
    x = images(4)
    with torch.no_grad():
        stem_out = backbone.forward_stem(x, MIXED)
        torch.testing.assert_close(stem_out[MIXED == 0], visible_ref(x[MIXED == 0]))
        torch.testing.assert_close(stem_out[MIXED == 1], infrared_ref(x[MIXED == 1]))
    torch.testing.assert_close(backbone.visible_stem.bn1.running_mean, visible_ref.bn1.running_mean)
    torch.testing.assert_close(backbone.infrared_stem.bn1.running_mean, infrared_ref.bn1.running_mean)


def test_one_modality_tensor_leaves_other_stem_untouched(resnet18: TwoStreamBackbone) -> None:
    backbone = copy.deepcopy(resnet18).train()
    mean = backbone.infrared_stem.bn1.running_mean.clone()
    var = backbone.infrared_stem.bn1.running_var.clone()
    out = backbone(images(3), torch.zeros(3, dtype=torch.long))
    assert out.shape == (3, 512, 4, 2)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(backbone.infrared_stem.bn1.running_mean, mean)
    torch.testing.assert_close(backbone.infrared_stem.bn1.running_var, var)


def _tiny_backbone() -> TwoStreamBackbone:
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
    infrared = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
    stages = [nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(6, 8, 1)]
    return TwoStreamBackbone(
        stem, stages, infrared_stem=infrared, stem_channels=4, stem_reduction=2, channels=[6, 8], reductions=[4, 4]
    )


TINY = _tiny_backbone()


@given(st.lists(st.integers(0, 1), min_size=1, max_size=7), st.integers(0, 2**16))
def test_routing_property(modality: list[int], seed: int) -> None:
    """Any modality pattern (one modality only included) routes every row to its own stem."""
    m = torch.tensor(modality)
    x = torch.randn(len(modality), 3, 8, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = TINY(x, m)
        stems = [TINY.visible_stem, TINY.infrared_stem]
        expected = torch.cat([TINY.forward_stages(stems[v](x[i : i + 1])) for i, v in enumerate(modality)])
    torch.testing.assert_close(out, expected)


def test_constructor_copies_stem_by_default() -> None:
    stem = nn.Conv2d(3, 4, 3, padding=1)
    backbone = TwoStreamBackbone(stem, [nn.Identity()], stem_channels=4, stem_reduction=1, channels=[4], reductions=[1])
    assert backbone.visible_stem is stem
    assert backbone.infrared_stem is not stem
    torch.testing.assert_close(backbone.infrared_stem.weight, stem.weight)


# ----------------------------------------------------------------------------- initial weights and checkpoints


def test_stems_start_equal_but_independent() -> None:
    backbone = build_two_stream_backbone("resnet18")
    visible = backbone.visible_stem.state_dict()
    infrared = backbone.infrared_stem.state_dict()
    assert visible.keys() == infrared.keys()
    for key in visible:
        torch.testing.assert_close(visible[key], infrared[key], rtol=0, atol=0)
        assert visible[key].data_ptr() != infrared[key].data_ptr()


@pytest.fixture(scope="module")
def resnet18_checkpoint() -> dict[str, torch.Tensor]:
    """A timm resnet18 state dict with classifier keys, every tensor perturbed away from any fresh init."""
    torch.manual_seed(1)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    perturb_(model, 5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("fmt", "wrap"),
    [
        ("pth", "plain"),
        ("pth", "state_dict"),
        ("pth", "model"),
        ("pth", "module"),
        ("pt", "plain"),
        ("safetensors", "plain"),
        ("safetensors", "module"),
    ],
)
def test_checkpoint_loading(resnet18_checkpoint: dict[str, torch.Tensor], tmp_path: Path, fmt: str, wrap: str) -> None:
    state = dict(resnet18_checkpoint)
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        payload = {"state_dict": state, "epoch": 3} if wrap == "state_dict" else state
        payload = {"model": state, "optimizer": {}} if wrap == "model" else payload
        torch.save(payload, path)
    as_str = wrap == "plain"  # both a str and a pathlib.Path are accepted
    backbone = build_two_stream_backbone("resnet18", pretrained=str(path) if as_str else path)
    assert_carries(backbone, resnet18_checkpoint)


def test_checkpoint_without_num_batches_tracked(resnet18_checkpoint: dict, tmp_path: Path) -> None:
    """Old torchvision checkpoints have no BatchNorm counters; they load."""
    state = {k: v for k, v in resnet18_checkpoint.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    backbone = build_two_stream_backbone("resnet18", pretrained=tmp_path / "old.pth")
    torch.testing.assert_close(backbone.stages[3][1].conv2.weight, state["layer4.1.conv2.weight"])


def test_convnext_checkpoint_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = timm.create_model("convnext_atto", num_classes=5)
    perturb_(model, 6)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "convnext.safetensors"))
    backbone = build_two_stream_backbone("convnext_atto", pretrained=tmp_path / "convnext.safetensors")
    assert_carries(backbone, state, convnext=True)


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_two_stream_backbone("resnet18", pretrained=tmp_path / "nowhere.pth")


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "r10t.pth")
    with pytest.raises(ValueError, match=r"does not fit timm model 'resnet18'.*missing keys") as info:
        build_two_stream_backbone("resnet18", pretrained=tmp_path / "r10t.pth")
    message = str(info.value)
    assert "r10t.pth" in message
    assert "unexpected keys: conv1.0.weight" in message
    assert "layer1.1.conv1.weight" in message


def test_checkpoint_shape_mismatch(resnet18_checkpoint: dict, tmp_path: Path) -> None:
    torch.save(resnet18_checkpoint, tmp_path / "rgb.pth")
    with pytest.raises(
        ValueError, match=r"1 shape mismatches: conv1\.weight \(64, 3, 7, 7\) \(model \(64, 1, 7, 7\)\)"
    ):
        build_two_stream_backbone("resnet18", pretrained=tmp_path / "rgb.pth", in_chans=1)


def test_checkpoint_missing_stem_key(resnet18_checkpoint: dict, tmp_path: Path) -> None:
    state = {k: v for k, v in resnet18_checkpoint.items() if k != "conv1.weight"}
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"1 missing keys: conv1\.weight; 1 unexpected keys: extra\.weight"):
        build_two_stream_backbone("resnet18", pretrained=tmp_path / "partial.pth")


def test_checkpoint_that_is_no_state_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(TypeError, match="state dict"):
        build_two_stream_backbone("resnet18", pretrained=tmp_path / "list.pth")


def test_pretrained_true_goes_through_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_create_model = timm.create_model

    def fake_create_model(name: str, **kwargs):
        calls.append({"name": name, **kwargs})
        return real_create_model(name, **{**kwargs, "pretrained": False, "pretrained_cfg_overlay": None})

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    overlay = {"file": "/somewhere/resnet18.pth"}
    backbone = build_two_stream_backbone("resnet18", pretrained=True, pretrained_cfg_overlay=overlay)
    assert len(calls) == 1
    assert calls[0]["name"] == "resnet18"
    assert calls[0]["pretrained"] is True
    assert calls[0]["num_classes"] == 0
    assert calls[0]["pretrained_cfg_overlay"] == overlay
    assert isinstance(backbone, TwoStreamBackbone)
    build_two_stream_backbone("resnet18", pretrained=False)
    assert calls[1]["pretrained"] is False


def test_checkpoint_path_creates_model_without_pretrained(
    monkeypatch: pytest.MonkeyPatch, resnet18_checkpoint: dict, tmp_path: Path
) -> None:
    seen: list[object] = []
    real_create_model = timm.create_model

    def fake_create_model(name: str, **kwargs):
        seen.append(kwargs["pretrained"])
        return real_create_model(name, **kwargs)

    monkeypatch.setattr(two_stream_module.timm, "create_model", fake_create_model)
    torch.save(resnet18_checkpoint, tmp_path / "w.pth")
    build_two_stream_backbone("resnet18", pretrained=tmp_path / "w.pth")
    assert seen == [False]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("x", "modality", "error", "match"),
    [
        (torch.randn(3, 64, 32), torch.tensor([0, 1, 0]), ValueError, "`x`"),
        (torch.randn(2, 1, 64, 32), torch.tensor([0, 1]), ValueError, r"`x` must have shape \(N, 3, H, W\)"),
        (torch.zeros(2, 3, 64, 32, dtype=torch.long), torch.tensor([0, 1]), TypeError, "`x`"),
        ([1.0], torch.tensor([0]), TypeError, "`x`"),
        (torch.randn(2, 3, 64, 32), torch.tensor([0, 1, 0]), ValueError, r"`modalities` must have shape \(2,\)"),
        (torch.randn(2, 3, 64, 32), torch.tensor([[0, 1]]), ValueError, "`modalities`"),
        (torch.randn(2, 3, 64, 32), torch.tensor([0, 2]), ValueError, r"`modalities` .*got values \[2\]"),
        (torch.randn(2, 3, 64, 32), torch.tensor([0.0, 1.0]), TypeError, "`modalities`"),
        (torch.randn(2, 3, 64, 32), 2, ValueError, "`modalities`"),
        (torch.randn(2, 3, 64, 32), True, TypeError, "`modalities`"),
        (torch.randn(2, 3, 64, 32), "visible", TypeError, "`modalities`"),
        (torch.randn(2, 3, 64, 32), [0, 1], TypeError, "`modalities`"),
    ],
)
def test_bad_input(resnet18: TwoStreamBackbone, x, modality, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        resnet18(x, modality)


def test_bad_stage_calls(resnet18: TwoStreamBackbone) -> None:
    with pytest.raises(ValueError, match="`index`"):
        resnet18.forward_stage(4, torch.randn(1, 512, 4, 2))
    with pytest.raises(TypeError, match="`index`"):
        resnet18.forward_stage(1.0, torch.randn(1, 64, 4, 2))
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 64, h, w\)"):
        resnet18.forward_stages(torch.randn(1, 3, 16, 8))


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet5O'.*resnet50"):
        build_two_stream_backbone("resnet5O")


def test_unsupported_architecture() -> None:
    with pytest.raises(ValueError, match=r"vit_tiny_patch16_224.*ResNet-like.*ConvNeXt-like"):
        build_two_stream_backbone("vit_tiny_patch16_224")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 50}, TypeError, "`name`"),
        ({"name": "resnet18", "last_stride": 3}, ValueError, "`last_stride`"),
        ({"name": "resnet18", "last_stride": 1.0}, TypeError, "`last_stride`"),
        ({"name": "resnet18", "in_chans": 0}, ValueError, "`in_chans`"),
        ({"name": "resnet18", "pretrained": 1.5}, TypeError, "`pretrained`"),
        ({"name": "resnet18", "num_classes": 10}, TypeError, "num_classes"),
    ],
)
def test_bad_builder_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_two_stream_backbone(**kwargs)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="`channels`"):
        TwoStreamBackbone(
            nn.Identity(), [nn.Identity()], stem_channels=3, stem_reduction=1, channels=[3, 3], reductions=[1]
        )
    with pytest.raises(ValueError, match="`stages`"):
        TwoStreamBackbone(nn.Identity(), [], stem_channels=3, stem_reduction=1, channels=[], reductions=[])


# ----------------------------------------------------------------------------- gradients, formats, compile


def test_gradients_reach_both_stems_and_stages(resnet18: TwoStreamBackbone) -> None:
    backbone = copy.deepcopy(resnet18).train()
    x = images(4).requires_grad_()
    backbone(x, MIXED).square().mean().backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    for stem in (backbone.visible_stem, backbone.infrared_stem):
        assert stem.conv1.weight.grad.abs().sum() > 0
    # timm zero-initialises the last BatchNorm of each residual branch, so look at each stage as a whole
    for stage in backbone.stages:
        assert any(p.grad.abs().sum() > 0 for p in stage.parameters())
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_channels_last(resnet18: TwoStreamBackbone) -> None:
    backbone = _distinct_stems(resnet18, F64)
    x = images(4, dtype=F64)
    with torch.no_grad():
        expected = backbone(x, MIXED)
        out = backbone(x.contiguous(memory_format=torch.channels_last), MIXED)
    torch.testing.assert_close(out, expected)  # float64: the default 1e-7 (was 1e-4 in float32)


def test_bf16_autocast(resnet18: TwoStreamBackbone) -> None:
    backbone = copy.deepcopy(resnet18).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone(images(4), MIXED)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()


def test_compile_shared_stages_fullgraph(resnet18: TwoStreamBackbone, fresh_dynamo: None) -> None:
    backbone = copy.deepcopy(resnet18).eval()
    stem_out = torch.randn(2, 64, 16, 8)
    compiled = torch.compile(backbone.forward_stages, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(stem_out), backbone.forward_stages(stem_out))


def test_compile_whole_module(resnet18: TwoStreamBackbone, fresh_dynamo: None) -> None:
    """Routing gathers rows with nonzero (a data-dependent shape): a graph break, so fullgraph=False."""
    backbone = _distinct_stems(resnet18)
    compiled = torch.compile(backbone, backend="eager", fullgraph=False)
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, MIXED), backbone(x, MIXED))
