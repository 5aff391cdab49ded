"""Tests for loading official DEEN checkpoints into DEEN.

``OfficialDEEN`` below is a minimal re-implementation of the official module tree, written from the reference
notes (DEEN §1.1-1.4, §1.12; DDAG/AGW §1.2): three complete torchvision-style ResNet-50s
(``visible_module.visible``, ``thermal_module.thermal``, ``base_resnet.base``; v1.5 bottlenecks with the stride
on the 3x3 convolution, no ``fc``, last stride 1), ``MFA1``..``MFA3`` (``CNL`` / ``PNL`` with the folded
``view``), ``DEE`` (``FC11``..``FC2``), ``bottleneck`` and ``classifier``, and the official data flow: stems by
modality concatenated [VIS; IR], layer1, MFA1(x, x_), ..., DEE, layer4, avgpool, bottleneck, l2norm in eval.
Its weights come from the fake official checkpoint of tests/official_checkpoints.py (every key, shape and dtype of
reference/official_checkpoints.md §3, random float64 values), which loads into it strictly and in the documented
order; the same state dict is loaded into our DEEN with ``load_official_deen``, and the outputs are compared in
float64.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import pytest
import timm
import torch
from official_checkpoints import build_state_dict, deen_layout, official_checkpoint, save_checkpoint
from torch import nn

from vireid_layers.compat import convert_official_deen_state_dict, load_official_deen
from vireid_layers.models import DEEN

F64 = torch.float64
B = 2  # images per modality
H, W = 64, 32  # even numbers of positions at every MFA (16x8, 8x4, 4x2)


# ------------------------------------------------------------------------------------- official tree


class OfficialBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class OfficialResNet50(nn.Module):
    """torchvision-style ResNet-50 without fc; ``last_conv_stride`` on layer4's first block."""

    def __init__(self, last_conv_stride: int = 1) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=last_conv_stride)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [OfficialBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [OfficialBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def official_resnet50(used: tuple[str, ...]) -> OfficialResNet50:
    """A full ResNet-50 whose never-run parts live on the meta device (their keys exist, their data does not).

    Converting must drop these parts: copying a meta tensor into the model would fail loudly.
    """
    with torch.device("meta"):
        net = OfficialResNet50()
    for name in used:
        setattr(net, name, getattr(net, name).to_empty(device="cpu"))
    return net


class OfficialStem(nn.Module):
    """``visible_module`` / ``thermal_module``: a full ResNet-50 of which only the stem runs."""

    def __init__(self, attribute: str) -> None:
        super().__init__()
        self.attribute = attribute
        setattr(self, attribute, official_resnet50(("conv1", "bn1")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = getattr(self, self.attribute)
        return net.maxpool(net.relu(net.bn1(net.conv1(x))))


class OfficialBase(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = official_resnet50(("layer1", "layer2", "layer3", "layer4"))
        self.base.avgpool = nn.AdaptiveAvgPool2d((1, 1))


class OfficialCNL(nn.Module):
    def __init__(self, high_dim: int, low_dim: int, flag: int) -> None:
        super().__init__()
        self.low_dim = low_dim
        stride = 1 if flag == 0 else 2
        self.g = nn.Conv2d(low_dim, low_dim, 1)
        self.theta = nn.Conv2d(high_dim, low_dim, 1)
        self.phi = nn.Conv2d(low_dim, low_dim, 1, stride=stride)
        self.W = nn.Sequential(nn.Conv2d(low_dim, high_dim, 1, stride=stride), nn.BatchNorm2d(high_dim))

    def forward(self, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
        b = x_h.size(0)
        g_x = self.g(x_l).view(b, self.low_dim, -1)
        theta_x = self.theta(x_h).view(b, self.low_dim, -1)
        phi_x = self.phi(x_l).view(b, self.low_dim, -1).permute(0, 2, 1)
        energy = torch.matmul(theta_x, phi_x)
        y = torch.matmul(energy / energy.size(-1), g_x)
        return self.W(y.view(b, self.low_dim, *x_l.size()[2:])) + x_h


class OfficialPNL(nn.Module):
    def __init__(self, high_dim: int, low_dim: int, reduc_ratio: int = 2) -> None:
        super().__init__()
        self.low_dim, self.reduc_ratio = low_dim, reduc_ratio
        self.g = nn.Conv2d(low_dim, low_dim // reduc_ratio, 1)
        self.theta = nn.Conv2d(high_dim, low_dim // reduc_ratio, 1)
        self.phi = nn.Conv2d(low_dim, low_dim // reduc_ratio, 1)
        self.W = nn.Sequential(nn.Conv2d(low_dim // reduc_ratio, high_dim, 1), nn.BatchNorm2d(high_dim))

    def forward(self, x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
        b = x_h.size(0)
        g_x = self.g(x_l).view(b, self.low_dim, -1).permute(0, 2, 1)
        theta_x = self.theta(x_h).view(b, self.low_dim, -1).permute(0, 2, 1)
        phi_x = self.phi(x_l).view(b, self.low_dim, -1)
        energy = torch.matmul(theta_x, phi_x)
        y = torch.matmul(energy / energy.size(-1), g_x).permute(0, 2, 1).contiguous()
        y = y.view(b, self.low_dim // self.reduc_ratio, *x_h.size()[2:])
        return self.W(y) + x_h


class OfficialMFA(nn.Module):
    def __init__(self, high_dim: int, low_dim: int, flag: int) -> None:
        super().__init__()
        self.CNL = OfficialCNL(high_dim, low_dim, flag)
        self.PNL = OfficialPNL(high_dim, low_dim)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.PNL(self.CNL(x, x0), x0)


class OfficialDEE(nn.Module):
    def __init__(self, channel: int) -> None:
        super().__init__()
        c, r = channel, channel // 4
        for b in (1, 2):
            for d in (1, 2, 3):
                setattr(self, f"FC{b}{d}", nn.Conv2d(c, r, 3, padding=d, dilation=d, bias=False))
            setattr(self, f"FC{b}", nn.Conv2d(r, c, 1))
        self.dropout = nn.Dropout(p=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = []
        for b in (1, 2):
            mixed = sum(getattr(self, f"FC{b}{d}")(x) for d in (1, 2, 3)) / 3
            branches.append(getattr(self, f"FC{b}")(torch.relu(mixed)))
        return self.dropout(torch.cat((x, *branches), 0))


class OfficialDEEN(nn.Module):
    """The official ``embed_net`` (SYSU/LLCM or RegDB) with its module names and data flow."""

    def __init__(self, class_num: int, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.thermal_module = OfficialStem("thermal")
        self.visible_module = OfficialStem("visible")
        self.base_resnet = OfficialBase()
        pool_dim = 2048 if variant == "sysu" else 1024
        self.DEE = OfficialDEE(1024 if variant == "sysu" else 512)
        self.MFA1, self.MFA2 = OfficialMFA(256, 64, 0), OfficialMFA(512, 256, 1)
        if variant == "sysu":  # the RegDB network has no MFA3 (official_checkpoints.md §3.5)
            self.MFA3 = OfficialMFA(1024, 512, 1)
        self.bottleneck = nn.BatchNorm1d(pool_dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(pool_dim, class_num, bias=False)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """modal=0: (x_pool, logits) in training, (l2norm(x_pool), l2norm(feat)) in eval, plus raw tensors."""
        x = torch.cat((self.visible_module(x1), self.thermal_module(x2)), 0)
        base = self.base_resnet.base
        x_ = x
        x = base.layer1(x_)
        x_ = self.MFA1(x, x_)
        x = base.layer2(x_)
        x_ = self.MFA2(x, x_)
        if self.variant == "sysu":
            x = base.layer3(x_)
            x_ = self.MFA3(x, x_)
            x_ = self.DEE(x_)
            x = base.layer4(x_)
        else:
            x_ = self.DEE(x_)
            x = base.layer3(x_)
        x_pool = self.avgpool(x).view(x.size(0), x.size(1))
        feat = self.bottleneck(x_pool)
        if self.training:
            return x_pool, self.classifier(feat)
        return l2norm(x_pool), l2norm(feat), x_pool, feat, self.classifier(feat)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """The official ``Normalize``: x / ||x||_2 without epsilon."""
    return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5))


@pytest.fixture(scope="module", params=["sysu", "regdb"])
def official_pair(request: pytest.FixtureRequest) -> tuple[OfficialDEEN, DEEN, list[str]]:
    variant = request.param
    entries = deen_layout(variant, num_classes=11)
    state = build_state_dict(entries, seed=1, dtype=F64)
    official = OfficialDEEN(11, variant).to(F64).eval()
    assert list(official.state_dict()) == [e.key for e in entries]  # the documented keys, in the documented order
    with warnings.catch_warnings():  # the dead parts are on the meta device: copying into them is a no-op
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        official.load_state_dict(state, strict=True)
    model = DEEN(11, backbone="resnet50", variant=variant).to(F64)
    result = load_official_deen(model, state)
    assert not result.missing_keys and not result.unexpected_keys
    return official, model.eval(), result.ignored_keys


def official_images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, H, W, generator=gen, dtype=F64), torch.randn(B, 3, H, W, generator=gen, dtype=F64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 * max(scale, 1.0))


# ------------------------------------------------------------------------------------------- key layout


def test_timm_resnet50_has_torchvision_key_layout_and_numerics() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)  # the random weights below: a fixed draw, independent of the tests run before
    tv = torchvision.models.resnet50().eval()
    tm = timm.create_model("resnet50").eval()
    tv_state, tm_state = tv.state_dict(), tm.state_dict()
    assert tv_state.keys() == tm_state.keys()
    assert all(tv_state[k].shape == tm_state[k].shape for k in tv_state)
    with torch.no_grad():
        for t in tv_state.values():  # distinct BN statistics so that a BN mix-up would show
            if t.is_floating_point():
                t.add_(0.01 * torch.randn_like(t)).abs_()
    tm.load_state_dict(tv_state)
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        expected = tv(x)
        # Same operations in the same order; the tolerance is relative to the output's scale (large with these
        # weights), so that only a layout or BatchNorm mix-up, not float rounding, can fail it.
        torch.testing.assert_close(tm(x), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_official_resnet_key_layout_matches_timm() -> None:
    official = set(OfficialResNet50().state_dict())
    assert official == {k for k in timm.create_model("resnet50").state_dict() if not k.startswith("fc.")}


# ------------------------------------------------------------------------------------------ equivalence


def test_ignored_keys(official_pair: tuple[OfficialDEEN, DEEN, list[str]]) -> None:
    official, model, ignored = official_pair
    keys = set(official.state_dict())
    stems = ("visible_module.visible.", "thermal_module.thermal.")
    used_stem = tuple(s + part for s in stems for part in ("conv1.", "bn1."))
    expected = {k for k in keys if k.startswith(stems) and not k.startswith(used_stem)}
    expected |= {k for k in keys if k.startswith(("base_resnet.base.conv1.", "base_resnet.base.bn1."))}
    if model.variant == "regdb":
        expected |= {k for k in keys if k.startswith(("base_resnet.base.layer4.", "MFA3."))}
    assert set(ignored) == expected
    assert len(ignored) == len(set(ignored))


def test_eval_equivalence(official_pair: tuple[OfficialDEEN, DEEN, list[str]]) -> None:
    official, model, _ = official_pair
    x_vis, x_ir = official_images()
    with torch.no_grad():
        pool_n, feat_n, pool, feat, logits = official(x_vis, x_ir)
        out = model(torch.cat([x_vis, x_ir]), torch.tensor([0] * B + [1] * B))
        assert_close(out.pooled, pool)
        assert_close(out.features, feat)
        assert_close(out.logits, logits)
        # The six test-time features: pool and BN of original, gen1, gen2, each L2-normalised.
        images = torch.cat([x_vis, x_ir])
        modalities = torch.tensor([0] * B + [1] * B)
        six = model.embed(images, modalities, mode="official")
        expected = torch.stack([t[k * 2 * B : (k + 1) * 2 * B] for k in range(3) for t in (pool_n, feat_n)], dim=1)
        assert_close(six, expected)
        assert_close(model.embed(images, modalities), feat_n[: 2 * B])


def test_eval_equivalence_single_modality_and_flip(official_pair: tuple[OfficialDEEN, DEEN, list[str]]) -> None:
    # Official evaluation: modal=1 (visible stem) / modal=2 (thermal stem); test.py adds the flipped features.
    official, model, _ = official_pair
    x_vis, x_ir = official_images(seed=1)
    with torch.no_grad():
        pool_n, feat_n, *_ = official(x_vis, x_ir)
        pool_f, feat_f, *_ = official(x_vis.flip(-1), x_ir.flip(-1))
        rows = [slice(k * 2 * B + B, (k + 1) * 2 * B) for k in range(3)]  # the infrared rows of each block
        expected = torch.stack([t[r] for r in rows for t in (pool_n + pool_f, feat_n + feat_f)], dim=1)
        assert_close(model.embed(x_ir, 1, mode="official", flip=True), expected)


def test_train_equivalence(official_pair: tuple[OfficialDEEN, DEEN, list[str]]) -> None:
    # Training mode: BatchNorm batch statistics (stems on their own modality), the same dropout mask.
    official, model = copy.deepcopy(official_pair[0]).train(), copy.deepcopy(official_pair[1]).train()
    x_vis, x_ir = official_images(seed=2)
    torch.manual_seed(5)
    pool, logits = official(x_vis, x_ir)
    torch.manual_seed(5)
    out = model(torch.cat([x_vis, x_ir]), torch.tensor([0] * B + [1] * B))
    assert_close(out.pooled, pool)
    assert_close(out.logits, logits)
    pairs = [
        (model.backbone.visible_stem.bn1, official.visible_module.visible.bn1),
        (model.backbone.infrared_stem.bn1, official.thermal_module.thermal.bn1),
        (model.backbone.stages[-1][-1].bn3, getattr(official.base_resnet.base, f"layer{len(model.mfa) + 1}")[-1].bn3),
        (model.mfa[-1].spatial.W[1], getattr(official, f"MFA{len(model.mfa)}").PNL.W[1]),
        (model.neck, official.bottleneck),
    ]
    for ours, theirs in pairs:
        assert_close(ours.running_mean, theirs.running_mean)
        assert_close(ours.running_var, theirs.running_var)
    (out.logits.sum() + out.pooled.sum()).backward()
    (logits.sum() + pool.sum()).backward()
    assert_close(model.dee.project.bias.grad[: model.dee.channels], official.DEE.FC1.bias.grad)
    assert_close(model.mfa[0].channel.g.weight.grad, official.MFA1.CNL.g.weight.grad)
    assert_close(model.backbone.infrared_stem.conv1.weight.grad, official.thermal_module.thermal.conv1.weight.grad)


# -------------------------------------------------------------------------------------------- loading


def official_value(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """The tensor that our DEEN key ``key`` must hold after loading the official ``state`` (documented mapping)."""
    if key.startswith("dee.dilated."):
        d = int(key.split(".")[2]) + 1
        return torch.cat([state[f"DEE.FC{b}{d}.weight"] for b in (1, 2)])
    if key.startswith("dee.project."):
        return torch.cat([state[f"DEE.FC{b}.{key.rsplit('.', 1)[1]}"] for b in (1, 2)])
    key = key.replace("backbone.visible_stem.", "visible_module.visible.")
    key = key.replace("backbone.infrared_stem.", "thermal_module.thermal.")
    if key.startswith("backbone.stages."):
        _, _, stage, rest = key.split(".", 3)
        key = f"base_resnet.base.layer{int(stage) + 1}.{rest}"
    if key.startswith("mfa."):
        _, block, part, rest = key.split(".", 3)
        key = f"MFA{int(block) + 1}.{'CNL' if part == 'channel' else 'PNL'}.{rest}"
    return state[key.replace("neck.", "bottleneck.", 1) if key.startswith("neck.") else key]


@pytest.fixture(scope="module")
def regdb_checkpoint() -> tuple[list, dict[str, torch.Tensor]]:
    """The documented RegDB checkpoint (1022 entries; random float32 values, dead entries as zeros)."""
    entries = deen_layout("regdb", num_classes=6)
    return entries, build_state_dict(entries, seed=2)


@pytest.mark.parametrize("wrapper", [None, "net", "state_dict", "model"])
def test_load_file_with_wrapper_module_prefix_and_numpy_metrics(
    tmp_path, regdb_checkpoint, wrapper: str | None
) -> None:
    entries, state = regdb_checkpoint
    official = official_checkpoint("deen-regdb", state, module_prefix=True)  # {'net', 'cmc', 'mAP', 'mINP', 'epoch'}
    if wrapper is None:
        checkpoint = official["net"]
    else:
        checkpoint = dict(official)
        checkpoint[wrapper] = checkpoint.pop("net")
    path = save_checkpoint(checkpoint, tmp_path / "regdb_deen_p4_n6_lr_0.1_seed_0_trial_1_best.t")
    model = DEEN(6, backbone="resnet50", variant="regdb")
    result = load_official_deen(model, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    # The dead entries of §3.3 (690, layer4 of the trunk included), in state-dict order.
    assert result.ignored_keys == [e.key for e in entries if e.status == "dead"] and len(result.ignored_keys) == 690
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, official_value(state, key), rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("numpy_major", [1, 2])
def test_load_numpy_1_and_2_pickles(tmp_path, numpy_major: int) -> None:
    """The metrics of a file written under NumPy 1.x (numpy.core.multiarray.*) are allowed too."""
    state = build_state_dict(deen_layout("sysu", num_classes=4), live="zeros")
    path = save_checkpoint(official_checkpoint("deen-sysu", state), tmp_path / "deen.t", numpy=numpy_major)
    result = load_official_deen(DEEN(4, backbone="resnet50"), path)
    assert result.missing_keys == [] and result.unexpected_keys == [] and len(result.ignored_keys) == 630


def test_own_checkpoint_passes_through() -> None:
    source, model = DEEN(6, backbone="resnet18"), DEEN(6, backbone="resnet18")
    result = load_official_deen(model, source.state_dict())
    assert result.ignored_keys == [] and result.missing_keys == []
    assert torch.equal(model.dee.project.weight, source.dee.project.weight)


def test_convert_key_mapping() -> None:
    t = torch.zeros(1)
    official = {
        "visible_module.visible.conv1.weight": t,
        "visible_module.visible.bn1.running_var": t,
        "visible_module.visible.layer3.1.bn2.bias": t,
        "thermal_module.thermal.bn1.weight": t,
        "base_resnet.base.bn1.weight": t,
        "base_resnet.base.layer1.0.downsample.1.weight": t,
        "base_resnet.base.layer4.2.conv3.weight": t,
        "MFA1.CNL.W.1.running_mean": t,
        "MFA3.PNL.theta.bias": t,
        "DEE.FC23.weight": t,
        "bottleneck.num_batches_tracked": t,
        "classifier.weight": t,
        "something.else": t,
    }
    documented = {e.key for e in deen_layout("sysu")}
    assert set(official) - documented == {"something.else"}  # every other key is an official one
    sysu = convert_official_deen_state_dict({"module." + k: v for k, v in official.items()})
    assert list(sysu.state_dict) == [
        "backbone.visible_stem.conv1.weight",
        "backbone.visible_stem.bn1.running_var",
        "backbone.infrared_stem.bn1.weight",
        "backbone.stages.0.0.downsample.1.weight",
        "backbone.stages.3.2.conv3.weight",
        "mfa.0.CNL.W.1.running_mean",
        "mfa.2.PNL.theta.bias",
        "dee.FC23.weight",
        "neck.num_batches_tracked",
        "classifier.weight",
        "something.else",  # foreign keys pass through: a strict load reports them
    ]
    assert sysu.ignored_keys == ["visible_module.visible.layer3.1.bn2.bias", "base_resnet.base.bn1.weight"]
    regdb = convert_official_deen_state_dict(official, variant="regdb")
    assert "backbone.stages.3.2.conv3.weight" not in regdb.state_dict and "mfa.2.PNL.theta.bias" not in regdb.state_dict
    assert regdb.ignored_keys[-2:] == ["base_resnet.base.layer4.2.conv3.weight", "MFA3.PNL.theta.bias"]


def test_convert_detects_variant_mismatch() -> None:
    state = {
        "base_resnet.base.layer2.0.downsample.1.weight": torch.zeros(512),
        "base_resnet.base.layer3.0.downsample.1.weight": torch.zeros(1024),
        "DEE.FC11.weight": torch.zeros(128, 512, 3, 3),
    }
    with pytest.raises(ValueError, match="'regdb' variant"):
        convert_official_deen_state_dict(state)
    convert_official_deen_state_dict(state, variant="regdb")
    state["DEE.FC11.weight"] = torch.zeros(256, 1024, 3, 3)
    with pytest.raises(ValueError, match="'sysu' variant"):
        convert_official_deen_state_dict(state, variant="regdb")
    # The same on the documented checkpoints.
    regdb = build_state_dict(deen_layout("regdb"), live="zeros")
    sysu = build_state_dict(deen_layout("sysu"), live="zeros")
    with pytest.raises(ValueError, match="'regdb' variant"):
        convert_official_deen_state_dict(regdb)
    with pytest.raises(ValueError, match="'sysu' variant"):
        convert_official_deen_state_dict(sysu, variant="regdb")


def test_convert_errors() -> None:
    with pytest.raises(ValueError, match="variant"):
        convert_official_deen_state_dict({}, variant="llcm")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-tensor"):
        convert_official_deen_state_dict({"net": {"a": 1.0}})
    with pytest.raises(TypeError, match="mapping"):
        convert_official_deen_state_dict([("a", torch.zeros(1))])  # type: ignore[arg-type]


def test_load_errors(tmp_path) -> None:
    model = DEEN(6, backbone="resnet18")
    with pytest.raises(TypeError, match="model"):
        load_official_deen(nn.Linear(2, 2), {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 branches"):
        load_official_deen(DEEN(6, backbone="resnet18", num_branches=3), {})
    with pytest.raises(FileNotFoundError):
        load_official_deen(model, tmp_path / "missing.t")
    with pytest.raises(TypeError, match="path_or_state_dict"):
        load_official_deen(model, 3)  # type: ignore[arg-type]
    path = tmp_path / "pickled.t"
    torch.save({"net": {}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_official_deen(model, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_official_deen(model, {"classifier.weight": torch.zeros(6, 512)})
    result = load_official_deen(model, {"classifier.weight": torch.ones(6, 512)}, strict=False)
    assert "neck.weight" in result.missing_keys and torch.equal(model.classifier.weight, torch.ones(6, 512))
