"""Tests for the assembled AGW network and its criterion.

The reference test builds the official network literally (three timm ResNet-50s of which only the stems or
the trunk run, the official ``Non_local`` forward with its N x N affinity, GeM as ``(mean(x^3) + 1e-12)^(1/3)``,
BN neck, classifier), loads our weights into it under the official module names, and compares the training
and evaluation outputs. Most other tests use a tiny hand-built backbone whose stages are ``nn.Sequential``s
of residual-like blocks, so that they run in milliseconds.
"""

from __future__ import annotations

import io
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from official_checkpoints import agw_layout, build_state_dict, official_checkpoint, save_checkpoint
from torch import Tensor, nn

from vireid_layers import GeM, HardTripletLoss, Modality, NonLocal, TwoStreamBackbone, WRTLoss
from vireid_layers.compat import load_official_agw
from vireid_layers.data import ImageSample
from vireid_layers.models import AGW, OFFICIAL_NON_LOCAL_BLOCKS, AGWCriterion, AGWOutput

MIXED = torch.tensor([0, 1, 1, 0])


class Block(nn.Module):
    """conv-BN-ReLU, ending with a ReLU like a residual block (GeM needs a non-negative input)."""

    def __init__(self, cin: int, cout: int, stride: int, gen: torch.Generator) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * math.sqrt(2 / (9 * cin)))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def tiny_backbone(seed: int = 0, blocks: tuple[int, ...] = (1, 3, 2, 1)) -> TwoStreamBackbone:
    """Stem (8 ch, /2) and stages 16 (/2), 32 (/4), 64 (/8), 64 (/8), each an nn.Sequential of `blocks[s]` blocks."""
    gen = torch.Generator().manual_seed(seed)
    specs = [(8, 16, 1, 2), (16, 32, 2, 4), (32, 64, 2, 8), (64, 64, 1, 8)][: len(blocks)]
    stages = [
        nn.Sequential(*(Block(cin if b == 0 else cout, cout, s if b == 0 else 1, gen) for b in range(count)))
        for (cin, cout, s, _), count in zip(specs, blocks, strict=True)
    ]
    return TwoStreamBackbone(
        nn.Sequential(Block(3, 8, 2, gen)),
        stages,
        stem_channels=8,
        stem_reduction=2,
        channels=[c for _, c, _, _ in specs],
        reductions=[r for *_, r in specs],
        infrared_stem=nn.Sequential(Block(3, 8, 2, gen)),  # different weights: routing by modality matters
    )


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine and statistics everywhere: the non-local blocks are no longer the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
    return model


def tiny_agw(*, seed: int = 0, randomised: bool = True, **kwargs: object) -> AGW:
    torch.manual_seed(seed)
    kwargs.setdefault("backbone", tiny_backbone(seed))
    model = AGW(5, **kwargs)
    return randomise_(model, seed) if randomised else model


def images(n: int = 4, h: int = 32, w: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------- the official network


class OfficialNonLocal(nn.Module):
    """The official ``Non_local`` forward, literally: the N x N affinity divided by N, no softmax."""

    def __init__(self, channels: int, inter: int) -> None:
        super().__init__()
        self.inter = inter
        self.g = nn.Sequential(nn.Conv2d(channels, inter, 1))
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        b = x.size(0)
        g_x = self.g(x).view(b, self.inter, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(b, self.inter, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(b, self.inter, -1)
        f = torch.matmul(theta_x, phi_x)
        f_div_c = f / f.size(-1)
        y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous().view(b, self.inter, *x.size()[2:])
        return self.W(y) + x


class OfficialAGW(nn.Module):
    """The official ``embed_net`` (AGW): three ResNet-50s, non-local after layer2 blocks 2, 3 and layer3 3, 4, 5."""

    def __init__(self, num_classes: int, inter: tuple[int, int], method: str = "agw") -> None:
        super().__init__()
        self.visible, self.thermal, self.base = (timm.create_model("resnet50", num_classes=0) for _ in range(3))
        layer4 = self.base.layer4[0]  # last_conv_stride=1
        layer4.conv2.stride, layer4.downsample[0].stride = (1, 1), (1, 1)
        self.gm_pool = method == "agw"  # --method base: no non-local block, average pooling
        self.NL_2 = nn.ModuleList(OfficialNonLocal(512, inter[0]) for _ in range(2 if self.gm_pool else 0))
        self.NL_3 = nn.ModuleList(OfficialNonLocal(1024, inter[1]) for _ in range(3 if self.gm_pool else 0))
        self.NL_2_idx, self.NL_3_idx = ([2, 3], [3, 4, 5]) if self.gm_pool else ([], [])
        self.bottleneck = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, num_classes, bias=False)

    @staticmethod
    def stem(net: nn.Module, x: Tensor) -> Tensor:
        return net.maxpool(net.act1(net.bn1(net.conv1(x))))

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:  # modal = 0
        x = torch.cat((self.stem(self.visible, x1), self.stem(self.thermal, x2)), 0)
        x = self.base.layer1(x)
        for layer, blocks, idx in (
            (self.base.layer2, self.NL_2, self.NL_2_idx),
            (self.base.layer3, self.NL_3, self.NL_3_idx),
        ):
            counter = 0
            for i in range(len(layer)):
                x = layer[i](x)
                if counter < len(idx) and i == idx[counter]:
                    x = blocks[counter](x)
                    counter += 1
        x = self.base.layer4(x)
        b, c = x.shape[:2]
        if self.gm_pool:
            x_pool = (torch.mean(x.view(b, c, -1) ** 3, dim=-1) + 1e-12) ** (1 / 3)
        else:
            x_pool = x.view(b, c, -1).mean(dim=-1)
        feat = self.bottleneck(x_pool)
        if self.training:
            return x_pool, self.classifier(feat)
        return F.normalize(x_pool, p=2, dim=1), F.normalize(feat, p=2, dim=1)


def calibrate_(model: nn.Module, *inputs: Tensor) -> nn.Module:
    """Running statistics = the statistics of one batch (momentum 1), as in a trained network.

    With random running statistics the non-local blocks, cubic in their input, blow a deep ResNet-50 up to
    inf in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(*inputs)
    for m in norms:
        m.momentum = 0.1
    return model


def official_key(key: str) -> str:
    """Our state-dict key -> the official one."""
    for ours, theirs in (
        ("backbone.visible_stem.", "visible."),
        ("backbone.infrared_stem.", "thermal."),
        ("neck.", "bottleneck."),
    ):
        if key.startswith(ours):
            return theirs + key.removeprefix(ours)
    if key.startswith("backbone.stages."):
        stage, rest = key.removeprefix("backbone.stages.").split(".", 1)
        return f"base.layer{int(stage) + 1}.{rest}"
    if key.startswith("non_local."):
        stage, rest = key.removeprefix("non_local.").split(".", 1)
        return f"NL_{int(stage) + 1}.{rest}"
    return key


F64 = torch.float64


def assert_close_f64(actual: Tensor, expected: Tensor) -> None:
    """Float64 agreement up to rounding: relative 1e-9, absolute 1e-10 of the output's scale."""
    assert actual.dtype == expected.dtype == F64
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("form", ["official", "corrected"])
def test_matches_the_official_network(form: str) -> None:
    # Float64 on both sides: a ResNet-50 with non-local blocks sums in another order than the official code (our
    # non-local block associates its products the other way), which in float32 leaves ~1e-5 differences that
    # depend on the CPU's kernels; in float64 the two agree to ~1e-12.
    visible, infrared = images(3, 64, 32, seed=1, dtype=F64), images(3, 64, 32, seed=2, dtype=F64)
    x = torch.cat([visible, infrared])
    modalities = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.manual_seed(0)
    model = calibrate_(
        randomise_(AGW(7, non_local_form=form)).double(), images(6, 64, 32, seed=3, dtype=F64), modalities
    )
    assert model.non_local_positions == ((), (2, 3), (3, 4, 5), ())
    torch.manual_seed(1)
    official = OfficialAGW(7, inter=(1, 1) if form == "official" else (256, 512)).double()
    state = {official_key(k): v for k, v in model.state_dict().items()}
    missing, unexpected = official.load_state_dict(state, strict=False)
    assert not unexpected
    # Only the idle parts of the three ResNet-50s are left: stems' trunks, the trunk's stem.
    assert all(k.startswith(("visible.layer", "thermal.layer", "base.conv1", "base.bn1")) for k in missing)
    for training in (True, False):
        model.train(training)
        official.train(training)
        with torch.no_grad():
            ours = model(x, modalities)
            theirs = official(visible, infrared)
        if training:
            assert_close_f64(ours.pooled, theirs[0])
            assert_close_f64(ours.logits, theirs[1])
        else:
            with torch.no_grad():
                pool, fc = model.embed(x, modalities, mode="pool"), model.embed(x, modalities)
            assert_close_f64(pool, theirs[0])
            assert_close_f64(fc, theirs[1])
    # The non-local blocks are active: without them the output changes.
    model.eval()
    with torch.no_grad():
        plain = model.pool(model.backbone(x, modalities))
        assert not torch.allclose(plain, model(x, modalities).pooled, rtol=1e-3, atol=1e-4)


def official_network_key(key: str) -> str:
    """Official checkpoint key -> the key of :class:`OfficialAGW` above (its ResNets are attributes, not wrappers)."""
    for theirs, here in (
        ("visible_module.visible.", "visible."),
        ("thermal_module.thermal.", "thermal."),
        ("base_resnet.base.", "base."),
    ):
        if key.startswith(theirs):
            return here + key.removeprefix(theirs)
    return key


@pytest.mark.parametrize("method", ["agw", "base"])
def test_official_checkpoint_gives_the_official_embeddings(tmp_path, method: str) -> None:
    """A checkpoint file in the documented layout loads into AGW, which then embeds as the official network does.

    The file holds every key and shape of the official ``embed_net`` (official_checkpoints.md §6), with random
    float64 values, wrapped as ``train.py`` saves its best model (NumPy metrics). The same state dict loads
    strictly into the official network written out above, and both give the same POOL and FC features.
    """
    state = build_state_dict(agw_layout(7, method=method), seed=3, dtype=F64)
    path = save_checkpoint(official_checkpoint("agw", state), tmp_path / "sysu_agw_p4_n8_lr_0.1_seed_0_best.t")
    model = AGW(7, method=method).double()
    result = load_official_agw(model, path)
    assert result.missing_keys == [] and result.unexpected_keys == [] and len(result.ignored_keys) == 630
    official = OfficialAGW(7, inter=(1, 1), method=method).double()
    official.load_state_dict({official_network_key(k): v for k, v in state.items()}, strict=True)
    model.eval()
    official.eval()
    visible, infrared = images(2, 64, 32, seed=4, dtype=F64), images(2, 64, 32, seed=5, dtype=F64)
    with torch.no_grad():
        pool, fc = official(visible, infrared)
        x, modalities = torch.cat([visible, infrared]), torch.tensor([0, 0, 1, 1])
        assert_close_f64(model.embed(x, modalities, mode="pool"), pool)
        assert_close_f64(model.embed(x, modalities), fc)
        # The official test.py embeds one modality at a time (modal 1 / 2).
        assert_close_f64(model.embed(infrared, Modality.INFRARED), fc[2:])
    assert not torch.allclose(pool, fc)


# ------------------------------------------------------------------------------------------------- shapes


def test_shape_resnet18_and_generalised_placement() -> None:
    model = AGW(7, backbone="resnet18")
    # ResNet-18 has two blocks per stage: counts (0, 2, 3, 0) capped at 2 -> after both blocks of layer2, layer3.
    assert model.non_local_positions == ((), (0, 1), (0, 1), ())
    assert [b.channels for blocks in model.non_local for b in blocks] == [128, 128, 256, 256]
    assert all(b.inter_channels == 1 for blocks in model.non_local for b in blocks)
    out = model(images(4, 64, 32), MIXED)
    assert isinstance(out, AGWOutput)
    assert out.pooled.shape == out.features.shape == (4, 512) and out.logits.shape == (4, 7)
    assert model.embed_dim == 512 and model.num_classes == 7 and isinstance(model.pool, GeM)


def test_placement_is_capped_per_stage() -> None:
    model = tiny_agw()
    assert model.non_local_positions == ((), (1, 2), (0, 1), ())  # stage 2 has 2 blocks for 3 requested
    custom = tiny_agw(non_local_blocks=(1, 0, 1, 1))
    assert custom.non_local_positions == ((0,), (), (1,), (0,))
    assert [len(b) for b in custom.non_local] == [1, 0, 1, 1]
    assert tiny_agw(method="base").non_local_positions == ((), (), (), ())
    assert OFFICIAL_NON_LOCAL_BLOCKS == (0, 2, 3, 0)


def test_corrected_form_has_half_the_channels() -> None:
    model = tiny_agw(non_local_form="corrected")
    assert [b.inter_channels for blocks in model.non_local for b in blocks] == [16, 16, 32, 32]
    assert model.non_local_form == "corrected"


# -------------------------------------------------------------------------------------------- data flow


def manual_pooled(model: AGW, x: Tensor, modalities: Tensor, *, non_local: bool = True) -> Tensor:
    """Stem, the stages block by block with the non-local blocks after the listed positions, then the pooling."""
    h = model.backbone.forward_stem(x, modalities)
    for s, stage in enumerate(model.backbone.stages):
        positions = model.non_local_positions[s]
        for b, block in enumerate(stage):
            h = block(h)
            if non_local and b in positions:
                h = model.non_local[s][positions.index(b)](h)
    return model.pool(h)


def test_data_flow_and_outputs() -> None:
    model = tiny_agw().eval().double()
    x = images(dtype=F64)
    out = model(x, MIXED)
    torch.testing.assert_close(out.pooled, manual_pooled(model, x, MIXED))
    torch.testing.assert_close(out.features, model.neck(out.pooled))
    torch.testing.assert_close(out.logits, model.classifier(out.features))
    gem = (model.backbone(x, MIXED).flatten(2) ** 3).mean(-1).add(1e-12).pow(1 / 3)
    assert not torch.allclose(out.pooled, gem)  # the randomised non-local blocks act


@pytest.mark.parametrize("training", [False, True])
def test_non_local_blocks_are_the_identity_at_init(training: bool) -> None:
    model = AGW(5, backbone=randomise_(tiny_backbone())).train(training).double()
    x = images(dtype=F64)
    gem = (model.backbone(x, MIXED).flatten(2) ** 3).mean(-1).add(1e-12).pow(1 / 3)
    torch.testing.assert_close(model(x, MIXED).pooled, gem)  # float64 default 1e-7 (was 1e-5 in float32)


def test_base_method_is_average_pooling_without_non_local() -> None:
    model = tiny_agw(method="base").eval().double()
    assert not any(len(b) for b in model.non_local) and not isinstance(model.pool, GeM)
    x = images(dtype=F64)
    torch.testing.assert_close(model(x, MIXED).pooled, model.backbone(x, MIXED).mean(dim=(2, 3)))


def test_batch_order_does_not_matter() -> None:
    model = tiny_agw().double()
    x, perm = images(6, dtype=F64), torch.tensor([4, 0, 5, 2, 1, 3])
    modalities = torch.tensor([0, 0, 0, 1, 1, 1])
    for training in (False, True):  # eval: per row; train: batch statistics are permutation invariant
        model.train(training)
        out, out_perm = model(x, modalities), model(x[perm], modalities[perm])
        for a, b in zip(out_perm, out, strict=True):
            torch.testing.assert_close(a, b[perm])  # float64 default 1e-7 (was 1e-4 in float32)


def test_modality_routing() -> None:
    model = tiny_agw().eval().double()
    x = images(dtype=F64)
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        full = torch.full((4,), int(modality))
        torch.testing.assert_close(model.embed(x, modality), model.embed(x, full))
    assert not torch.allclose(model.embed(x, 0), model.embed(x, 1))
    mixed = model.embed(x, MIXED)
    torch.testing.assert_close(mixed[MIXED == 1], model.embed(x, 1)[MIXED == 1])


# ------------------------------------------------------------------------------------------- embeddings


def test_embed_modes() -> None:
    model = tiny_agw().eval().double()
    x = images(dtype=F64)
    out = model(x, MIXED)
    torch.testing.assert_close(model.embed(x, MIXED), F.normalize(out.features, dim=1))
    torch.testing.assert_close(model.embed(x, MIXED, mode="pool"), F.normalize(out.pooled, dim=1))
    torch.testing.assert_close(model.embed(x, MIXED).norm(dim=1), torch.ones(4, dtype=F64))


@pytest.mark.parametrize("mode", ["fc", "pool"])
def test_flip_adds_the_flipped_embedding(mode: str) -> None:
    model = tiny_agw().eval().double()
    x = images(dtype=F64)
    expected = model.embed(x, MIXED, mode=mode) + model.embed(x.flip(-1), MIXED, mode=mode)
    torch.testing.assert_close(model.embed(x, MIXED, mode=mode, flip=True), expected)  # float64 default 1e-7
    expected = model.embed(x, 1, mode=mode) + model.embed(x.flip(-1), 1, mode=mode)
    torch.testing.assert_close(model.embed(x, 1, mode=mode, flip=True), expected)


# ----------------------------------------------------------------------------------------- training


def test_gradients_reach_every_parameter() -> None:
    model = tiny_agw(randomised=False).train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    criterion = AGWCriterion()
    loss = criterion.total(criterion(model(images(8), modalities), ImageSample(None, labels, labels, modalities)))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        if name == "neck.bias":
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # The zero-initialised non-local output BatchNorms get a gradient, so the blocks can leave the identity.
    assert all(b.W[1].weight.grad.abs().sum() > 0 for blocks in model.non_local for b in blocks)


def test_gradcheck_float64() -> None:
    model = tiny_agw(backbone=tiny_backbone(blocks=(1, 2, 1, 1))).double().eval()
    x = (images(2, 8, 8, dtype=torch.float64).abs() + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: model(t, torch.tensor([0, 1])).logits, (x,), eps=1e-6, atol=1e-5)


def test_learnable_p_gets_a_gradient() -> None:
    model = tiny_agw(learnable_p=True).train()
    assert isinstance(model.pool.p, nn.Parameter) and model.pool.clamp == 1e-6
    model(images(), MIXED).pooled.sum().backward()
    assert model.pool.p.grad is not None and model.pool.p.grad.abs() > 0


def test_criterion_terms_and_weighted_total() -> None:
    model = tiny_agw().train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    out = model(images(8), modalities)
    batch = ImageSample(None, labels, labels, modalities)
    terms = AGWCriterion(lambda_triplet=0.5)(out, batch)
    ce = F.cross_entropy(out.logits, labels)
    assert terms.keys() == {"ce", "wrt"}
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["wrt"], WRTLoss()(out.pooled, labels))
    torch.testing.assert_close(AGWCriterion(lambda_triplet=0.5).total(terms), ce + 0.5 * terms["wrt"])
    base = AGWCriterion(method="base", margin=0.4)
    terms = base(out, batch)
    assert terms.keys() == {"ce", "triplet"}
    torch.testing.assert_close(terms["triplet"], HardTripletLoss(margin=0.4)(out.pooled, labels))
    torch.testing.assert_close(base.total(terms), ce + terms["triplet"])
    assert base.extra_repr() == "method='base', lambda_triplet=1.0"
    assert "HardTripletLoss(margin=0.4" in repr(base)


def test_criterion_normalize_passes_to_wrt() -> None:
    criterion = AGWCriterion(normalize=True)
    assert isinstance(criterion.metric, WRTLoss) and criterion.metric.normalize


def test_criterion_is_float32_under_bf16_autocast() -> None:
    model = tiny_agw().train()
    labels, modalities = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(4), modalities)
    assert out.logits.dtype == torch.bfloat16
    terms = AGWCriterion()(out, ImageSample(None, labels, labels, modalities))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())


@given(
    perm_seed=st.integers(0, 2**16),
    relabel=st.permutations(range(5)),
    method=st.sampled_from(["agw", "base"]),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0]),
)
def test_criterion_properties(perm_seed: int, relabel: list[int], method: str, scale: float) -> None:
    """Finite and non-negative (also for coinciding features), invariant to batch order and to renaming classes."""
    gen = torch.Generator().manual_seed(perm_seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    pooled = (torch.randn(8, 6, generator=gen) * scale).abs()
    logits = torch.randn(8, 5, generator=gen)
    out = AGWOutput(pooled, pooled, logits)
    criterion = AGWCriterion(method=method)
    terms = criterion(out, ImageSample(None, labels, labels, labels))
    assert all(torch.isfinite(v) and v >= 0 for v in terms.values())
    perm = torch.randperm(8, generator=gen)
    permuted = criterion(
        AGWOutput(pooled[perm], pooled[perm], logits[perm]), ImageSample(None, labels[perm], None, None)
    )
    mapping = torch.tensor(relabel)
    inverse = torch.argsort(mapping)
    renamed = criterion(AGWOutput(pooled, pooled, logits[:, inverse]), ImageSample(None, mapping[labels], None, None))
    for key, value in terms.items():
        torch.testing.assert_close(permuted[key], value, rtol=1e-4, atol=1e-5)  # fp32 sums in another order
        torch.testing.assert_close(renamed[key], value, rtol=1e-4, atol=1e-5)


def test_criterion_degenerate_batches() -> None:
    """One identity (no negative) and a single image: finite terms connected to the graph."""
    for labels in (torch.tensor([2, 2, 2, 2]), torch.tensor([1])):
        pooled = torch.rand(len(labels), 6, requires_grad=True)
        logits = torch.randn(len(labels), 5, requires_grad=True)
        for method in ("agw", "base"):
            criterion = AGWCriterion(method=method)
            terms = criterion(AGWOutput(pooled, pooled, logits), ImageSample(None, labels, None, None))
            total = criterion.total(terms)
            assert torch.isfinite(total)
            total.backward()
            assert pooled.grad is not None and torch.isfinite(pooled.grad).all()


def test_compile(fresh_dynamo: None) -> None:
    model = tiny_agw().eval()
    x = images()
    compiled = torch.compile(model, backend="eager")  # the stems gather by modality: graph breaks, not fullgraph
    for a, b in zip(compiled(x, MIXED), model(x, MIXED), strict=True):
        torch.testing.assert_close(a, b)
    criterion = AGWCriterion()
    labels = torch.tensor([0, 0, 1, 1])
    out = model(x, MIXED)
    batch = ImageSample(x, labels, labels, MIXED)
    fused = torch.compile(criterion, backend="eager", fullgraph=True)(out, batch)
    for key, value in criterion(out, batch).items():
        torch.testing.assert_close(fused[key], value)


# ------------------------------------------------------------------------------------------------ state


def test_init() -> None:
    model = AGW(300, backbone="resnet18")
    weight = model.neck.weight.detach()
    assert abs(weight.mean() - 1) < 3e-3 and 0.007 < weight.std() < 0.013
    assert torch.equal(model.neck.bias, torch.zeros(512)) and not model.neck.bias.requires_grad
    assert model.classifier.bias is None
    assert 0.0009 < model.classifier.weight.std() < 0.0011 and abs(model.classifier.weight.mean()) < 1e-4
    for blocks in model.non_local:
        for block in blocks:
            assert not block.W[1].weight.any() and not block.W[1].bias.any()
    with torch.no_grad():
        model.neck.weight.fill_(3.0)
        model.non_local[1][0].W[1].weight.fill_(1.0)
        model.neck.running_mean.fill_(1.0)
    before = model.backbone.stages[0][0].conv1.weight.clone()
    model.reset_parameters()
    assert abs(model.neck.weight.mean() - 1) < 3e-3 and not model.non_local[1][0].W[1].weight.any()
    assert not model.neck.running_mean.any()
    assert torch.equal(model.backbone.stages[0][0].conv1.weight, before)  # the backbone is kept


def test_backbone_instance_is_shared_not_modified() -> None:
    backbone = tiny_backbone()
    keys = list(backbone.state_dict())
    x = images()
    with torch.no_grad():
        before = backbone.eval()(x, MIXED)
    model = randomise_(AGW(5, backbone=backbone), seed=1)
    assert model.backbone is backbone and list(backbone.state_dict()) == keys
    assert all(len(stage) == n for stage, n in zip(backbone.stages, (1, 3, 2, 1), strict=True))
    model.eval()
    with torch.no_grad():  # the backbone alone still runs without the non-local blocks
        after = backbone(x, MIXED)
        torch.testing.assert_close(model.pool(after), manual_pooled(model, x, MIXED, non_local=False))
    assert not torch.equal(before, after)  # only because randomise_ changed its BatchNorms


def test_state_dict_round_trip_weights_only() -> None:
    model = tiny_agw(seed=3, non_local_form="corrected").eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"non_local.1.0.theta.weight", "non_local.2.1.W.1.running_var", "neck.weight"} <= set(state)
    fresh = tiny_agw(seed=4, randomised=False, non_local_form="corrected").eval()
    fresh.load_state_dict(state, strict=True)
    x = images()
    torch.testing.assert_close(fresh.embed(x, MIXED), model.embed(x, MIXED))


def test_extra_repr() -> None:
    model = tiny_agw(randomised=False)
    assert model.extra_repr() == (
        "num_classes=5, method='agw', embed_dim=64, non_local_blocks=[0, 2, 2, 0], non_local_form='official'"
    )
    text = repr(model)
    assert "(pool): GeM(p=3.0, learnable=False" in text and "32, inter_channels=1, form='official'" in text
    assert isinstance(model.non_local[1][0], NonLocal)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "caj"}, ValueError, "method"),
        ({"non_local_form": "textbook"}, ValueError, "form"),
        ({"non_local_blocks": (0, 2, 3)}, ValueError, "one count per stage"),
        ({"non_local_blocks": (0, -1, 3, 0)}, ValueError, "non_local_blocks"),
        ({"non_local_blocks": (0, 2.0, 3, 0)}, TypeError, "non_local_blocks"),
        ({"non_local_blocks": "0230"}, TypeError, "non_local_blocks"),
        ({"method": "base", "non_local_blocks": (0, 1, 0, 0)}, ValueError, "no non-local"),
        ({"method": "base", "learnable_p": True}, ValueError, "learnable_p"),
        ({"learnable_p": 1}, TypeError, "learnable_p"),
        ({"gem_p": 0.0}, ValueError, "p"),
        ({"pretrained": True}, ValueError, "pretrained"),
        ({"backbone": 3}, TypeError, "backbone"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, match: str) -> None:
    kwargs = {"backbone": tiny_backbone(), **kwargs}
    with pytest.raises(error, match=match):
        AGW(5, **kwargs)


@pytest.mark.parametrize(("num_classes", "error"), [(0, ValueError), ("5", TypeError), (True, TypeError)])
def test_exception_num_classes(num_classes: object, error: type) -> None:
    with pytest.raises(error, match="num_classes"):
        AGW(num_classes, backbone=tiny_backbone())  # type: ignore[arg-type]


def test_exception_stage_layout() -> None:
    with pytest.raises(ValueError, match="defined for 4 stages"):
        AGW(5, backbone=tiny_backbone(blocks=(1, 2, 2)))
    assert AGW(5, backbone=tiny_backbone(blocks=(1, 2, 2)), non_local_blocks=(0, 1, 1)).embed_dim == 64
    flat = TwoStreamBackbone(
        nn.Conv2d(3, 8, 1),
        [nn.Conv2d(8, 16, 1), nn.ModuleList([nn.Conv2d(16, 16, 1)])],
        stem_channels=8,
        stem_reduction=1,
        channels=[16, 16],
        reductions=[1, 1],
    )
    with pytest.raises(ValueError, match=r"not an nn\.Sequential"):
        AGW(5, backbone=flat, non_local_blocks=(0, 1))


def test_exception_embed() -> None:
    model = tiny_agw().eval()
    with pytest.raises(ValueError, match="mode"):
        model.embed(images(), MIXED, mode="official")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flip"):
        model.embed(images(), MIXED, flip=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modalities"):
        model.embed(images(), torch.tensor([0, 1]), flip=True)
    with pytest.raises(ValueError, match="modality"):
        model(images(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(3, 32, 16), 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"method": "wrt"}, ValueError, "method"), ({"lambda_triplet": -1.0}, ValueError, "lambda_triplet")],
)
def test_exception_criterion(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        AGWCriterion(**kwargs)
