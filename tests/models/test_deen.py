"""Tests for the assembled DEEN network: data flow, variants, outputs for the losses, embeddings, errors.

Most tests use a tiny hand-built TwoStreamBackbone (plain conv-BN-ReLU stages with the ResNet reduction
pattern) so that they run in milliseconds; the shape tests use timm's resnet18 and one resnet50 at the
official 384x144. The equivalence with the official network and its checkpoints is in
tests/compat/test_deen_compat.py.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vireid_layers import CPMLoss, HardTripletLoss, Modality, OrthogonalLoss, TwoStreamBackbone
from vireid_layers.data import ImageSample
from vireid_layers.models import DEEN, DEENCriterion, DEENOutput

MIXED = torch.tensor([0, 1, 1, 0])


def tiny_backbone(seed: int = 0, stages: int = 4) -> TwoStreamBackbone:
    """Stem (8 ch, /2) and stages 16 (/2), 32 (/4), 64 (/8), 64 (/8): the ResNet pattern in miniature."""
    gen = torch.Generator().manual_seed(seed)

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2 / (9 * cin)))
        return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

    specs = [(8, 16, 1, 2), (16, 32, 2, 4), (32, 64, 2, 8), (64, 64, 1, 8)][:stages]
    backbone = TwoStreamBackbone(
        block(3, 8, 2),
        [block(cin, cout, s) for cin, cout, s, _ in specs],
        stem_channels=8,
        stem_reduction=2,
        channels=[c for _, c, _, _ in specs],
        reductions=[r for *_, r in specs],
        infrared_stem=block(3, 8, 2),  # different weights: routing by modality matters
    )
    return backbone


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine and statistics everywhere (MFA no longer the identity) and random MFA convs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
    return model


def tiny_deen(variant: str = "sysu", *, seed: int = 0, randomised: bool = True, **kwargs: object) -> DEEN:
    torch.manual_seed(seed)
    model = DEEN(5, backbone=tiny_backbone(seed), variant=variant, **kwargs)
    return randomise_(model, seed) if randomised else model


def images(n: int = 4, h: int = 32, w: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# Two computations of the whole network (another batch composition, order or code path) are compared in float64:
# their float32 rounding differs by amounts that depend on the CPU's kernels.
F64 = torch.float64


# ------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("last_stride", [1, 2])
def test_shape_sysu_resnet18(last_stride: int) -> None:
    model = DEEN(7, backbone="resnet18", backbone_kwargs={"last_stride": last_stride})
    out = model(images(4, 64, 32), MIXED)
    assert isinstance(out, DEENOutput)
    assert out.pooled.shape == out.features.shape == (12, 512)
    assert out.logits.shape == (12, 7)
    assert out.original.shape == (4, 512) and out.generated.shape == (2, 4, 512)
    assert out.num_branches == 2
    assert model.backbone.num_stages == 4 and model.embed_dim == 512
    assert [(m.high_channels, m.low_channels, m.stride) for m in model.mfa] == [
        (64, 64, 1),
        (128, 64, 2),
        (256, 128, 2),
    ]
    assert model.dee.channels == 256


def test_shape_regdb_resnet18_drops_last_stage() -> None:
    sysu = DEEN(7, backbone="resnet18")
    model = DEEN(7, backbone="resnet18", variant="regdb")
    out = model(images(4, 64, 32), MIXED)
    assert out.pooled.shape == out.features.shape == (12, 256)
    assert out.logits.shape == (12, 7) and out.generated.shape == (2, 4, 256)
    assert model.backbone.num_stages == 3 and model.backbone.channels == [64, 128, 256]
    assert len(model.mfa) == 2 and model.dee.channels == 128 and model.embed_dim == 256
    assert not any(k.startswith("backbone.stages.3.") for k in model.state_dict())
    layer4 = sum(p.numel() for p in sysu.backbone.stages[3].parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.backbone) == count(sysu.backbone) - layer4


def test_shape_resnet50_384x144() -> None:
    model = DEEN(395).eval()
    assert [(m.high_channels, m.low_channels, m.stride) for m in model.mfa] == [
        (256, 64, 1),
        (512, 256, 2),
        (1024, 512, 2),
    ]
    assert model.dee.channels == 1024 and model.embed_dim == 2048
    with torch.no_grad():
        out = model(images(2, 384, 144), torch.tensor([0, 1]))
    assert out.pooled.shape == (6, 2048) and out.logits.shape == (6, 395)


def test_output_fields_are_consistent() -> None:
    model = tiny_deen().eval()
    out = model(images(), MIXED)
    n, k, d = 4, 2, model.embed_dim
    torch.testing.assert_close(out.original, out.pooled[:n], rtol=0, atol=0)
    torch.testing.assert_close(out.generated, out.pooled[n:].view(k, n, d), rtol=0, atol=0)
    torch.testing.assert_close(out.features, model.neck(out.pooled))
    torch.testing.assert_close(out.logits, model.classifier(out.features))
    labels = torch.tensor([3, 1, 3, 1])
    assert out.per_row(labels).tolist() == labels.repeat(3).tolist()
    assert out.per_row(torch.ones(4, 2)).shape == (12, 2)


# ------------------------------------------------------------------------------------------- data flow


def manual_forward(model: DEEN, x: torch.Tensor, modalities: torch.Tensor, *, mfa: bool) -> torch.Tensor:
    """The data flow written out: stem, stages with (or without) MFA, DEE, remaining stages, GAP."""
    bb = model.backbone
    h = bb.forward_stem(x, modalities)
    for i in range(len(model.mfa)):
        out = bb.forward_stage(i, h)
        h = model.mfa[i](out, h) if mfa else out
    h = model.dee(h)
    for i in range(len(model.mfa), bb.num_stages):
        h = bb.forward_stage(i, h)
    return h.mean(dim=(2, 3))


@pytest.mark.parametrize("variant", ["sysu", "regdb"])
def test_data_flow(variant: str) -> None:
    model = tiny_deen(variant).eval().double()
    x = images(dtype=F64)
    torch.testing.assert_close(model(x, MIXED).pooled, manual_forward(model, x, MIXED, mfa=True))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("variant", ["sysu", "regdb"])
def test_mfa_identity_at_init(variant: str, training: bool) -> None:
    # At initialisation every MFA is the identity: the network is backbone -> DEE -> last stage(s) -> GAP.
    model = DEEN(5, backbone=randomise_(tiny_backbone()), variant=variant, dee_dropout=0.0).train(training).double()
    x = images(dtype=F64)
    torch.testing.assert_close(model(x, MIXED).pooled, manual_forward(model, x, MIXED, mfa=False))


def test_batch_order_does_not_matter() -> None:
    model = tiny_deen(dee_dropout=0.0).double()
    x, perm = images(6, dtype=F64), torch.tensor([4, 0, 5, 2, 1, 3])
    modalities = torch.tensor([0, 0, 0, 1, 1, 1])
    for training in (False, True):  # eval: per-row; train: batch statistics are permutation invariant
        model.train(training)
        out, out_perm = model(x, modalities), model(x[perm], modalities[perm])
        torch.testing.assert_close(out_perm.original, out.original[perm])
        torch.testing.assert_close(out_perm.generated, out.generated[:, perm])
        torch.testing.assert_close(out_perm.logits.view(3, 6, -1), out.logits.view(3, 6, -1)[:, perm])


def test_modality_routing() -> None:
    model = tiny_deen().eval().double()
    x = images(dtype=F64)
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        full = torch.full((4,), int(modality))
        torch.testing.assert_close(model.embed(x, modality), model.embed(x, full))
    assert not torch.allclose(model.embed(x, 0), model.embed(x, 1))


# ------------------------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("variant", ["sysu", "regdb"])
def test_plain_embed_skips_dee_and_equals_original_rows(variant: str) -> None:
    model = tiny_deen(variant).eval().double()
    calls = []
    model.dee.project.register_forward_hook(lambda *args: calls.append(1))
    x = images(dtype=F64)
    plain = model.embed(x, MIXED)
    assert not calls  # DEE never ran
    out = model(x, MIXED)
    assert calls  # ... while the full forward runs it
    torch.testing.assert_close(plain, F.normalize(out.features[:4], dim=1))  # float64 default 1e-7 (was 1e-5)
    torch.testing.assert_close(plain.norm(dim=1), torch.ones(4, dtype=F64))


@pytest.mark.parametrize("variant", ["sysu", "regdb"])
def test_official_embed_is_the_six_normalised_features(variant: str) -> None:
    model = tiny_deen(variant).eval().double()
    x = images(dtype=F64)
    feats = model.embed(x, MIXED, mode="official")
    assert feats.shape == (4, 6, model.embed_dim)
    out = model(x, MIXED)
    expected = []
    for k in range(3):
        rows = slice(4 * k, 4 * (k + 1))
        expected += [F.normalize(out.pooled[rows], dim=1), F.normalize(out.features[rows], dim=1)]
    torch.testing.assert_close(feats, torch.stack(expected, dim=1))  # float64 default 1e-7 (was 1e-5)
    torch.testing.assert_close(feats[:, 1], model.embed(x, MIXED))


def test_official_embed_dot_product_is_sum_of_six_cosines() -> None:
    model = tiny_deen().eval()
    query, gallery = (
        model.embed(images(3, seed=1), 1, mode="official"),
        model.embed(images(5, seed=2), 0, mode="official"),
    )
    sim = query.flatten(1) @ gallery.flatten(1).T
    expected = torch.zeros(3, 5)
    for i in range(3):
        for j in range(5):
            expected[i, j] = sum(F.cosine_similarity(query[i, p], gallery[j, p], dim=0) for p in range(6))
    torch.testing.assert_close(sim, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["plain", "official"])
def test_flip_adds_the_flipped_embedding(mode: str) -> None:
    model = tiny_deen().eval().double()
    x = images(dtype=F64)
    expected = model.embed(x, MIXED, mode=mode) + model.embed(x.flip(-1), MIXED, mode=mode)
    torch.testing.assert_close(model.embed(x, MIXED, mode=mode, flip=True), expected)  # float64 default 1e-7
    expected = model.embed(x, 1, mode=mode) + model.embed(x.flip(-1), 1, mode=mode)
    torch.testing.assert_close(model.embed(x, 1, mode=mode, flip=True), expected)


def test_embed_has_no_dropout_in_train_mode() -> None:
    model = tiny_deen(dee_dropout=0.9).train()
    x = images()
    torch.manual_seed(0)
    a = model.embed(x, MIXED, mode="official")
    torch.manual_seed(1)
    torch.testing.assert_close(model.embed(x, MIXED, mode="official"), a)


# ----------------------------------------------------------------------------------------- training


def test_losses_and_gradients() -> None:
    model = tiny_deen(randomised=False).train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    out = model(images(8), modalities)
    loss = (
        F.cross_entropy(out.logits, out.per_row(labels))
        + HardTripletLoss()(out.pooled, out.per_row(labels))
        + 0.8 * CPMLoss()(out.original, out.generated, labels, modalities)
        + 0.01 * OrthogonalLoss()(out.generated)
    )
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        if name == "neck.bias":
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # The zero-initialised MFA output BatchNorms get a gradient, so the blocks can leave the identity.
    assert all(m.channel.W[1].weight.grad.abs().sum() > 0 for m in model.mfa)


def test_criterion_terms_and_weighted_total() -> None:
    model = tiny_deen().train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    x = images(8)
    torch.manual_seed(1)
    out = model(x, modalities)
    criterion = DEENCriterion(lambda_triplet=0.5, lambda_cpm=0.8, lambda_ort=0.01, margin=0.4, cpm_margin=0.1)
    terms = criterion(out, ImageSample(x, labels, labels, modalities))
    expected = {
        "ce": F.cross_entropy(out.logits, out.per_row(labels)),
        "triplet": HardTripletLoss(margin=0.4)(out.pooled, out.per_row(labels)),
        "cpm": CPMLoss(margin=0.1)(out.original, out.generated, labels, modalities),
        "ort": OrthogonalLoss()(out.generated),
    }
    assert terms.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value, msg=key)
    total = expected["ce"] + 0.5 * expected["triplet"] + 0.8 * expected["cpm"] + 0.01 * expected["ort"]
    torch.testing.assert_close(criterion.total(terms), total)
    assert "lambda_cpm=0.8" in repr(criterion)


def test_criterion_is_float32_under_bf16_autocast() -> None:
    model = tiny_deen().train()
    labels, modalities = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    x = images(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, modalities)
    terms = DEENCriterion()(out, ImageSample(x, labels, labels, modalities))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize(("kwargs", "error"), [({"lambda_cpm": -1.0}, ValueError), ({"lambda_ort": "0.1"}, TypeError)])
def test_criterion_rejects_bad_weights(kwargs: dict, error: type) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        DEENCriterion(**kwargs)


def test_init() -> None:
    model = DEEN(300, backbone="resnet18")
    weight = model.neck.weight.detach()
    assert abs(weight.mean() - 1) < 3e-3 and 0.007 < weight.std() < 0.013
    assert torch.equal(model.neck.bias, torch.zeros(512)) and not model.neck.bias.requires_grad
    assert model.classifier.bias is None
    assert 0.0009 < model.classifier.weight.std() < 0.0011 and abs(model.classifier.weight.mean()) < 1e-4
    for mfa in model.mfa:
        for part in (mfa.channel, mfa.spatial):
            assert not part.W[1].weight.any() and not part.W[1].bias.any()
    with torch.no_grad():
        model.neck.weight.fill_(3.0)
        model.mfa[0].channel.W[1].weight.fill_(1.0)
        model.neck.running_mean.fill_(1.0)
    before = model.backbone.stages[0][0].conv1.weight.clone()
    model.reset_parameters()
    assert abs(model.neck.weight.mean() - 1) < 3e-3 and not model.mfa[0].channel.W[1].weight.any()
    assert not model.neck.running_mean.any()
    assert torch.equal(model.backbone.stages[0][0].conv1.weight, before)  # the backbone is kept


def test_backbone_instance_is_shared_not_modified() -> None:
    backbone = tiny_backbone()
    model = DEEN(5, backbone=backbone, variant="regdb")
    assert backbone.num_stages == 4 and model.backbone.num_stages == 3
    assert model.backbone.stages[0] is backbone.stages[0] and model.backbone.visible_stem is backbone.visible_stem
    assert model.backbone.infrared_stem is backbone.infrared_stem
    assert model.backbone.last_stride == 2  # the stride of the (new) last stage
    assert DEEN(5, backbone=backbone).backbone is backbone


def test_state_dict_round_trip_weights_only() -> None:
    model = tiny_deen(seed=3).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = tiny_deen(seed=4, randomised=False).eval()
    fresh.load_state_dict(state, strict=True)
    x = images()
    torch.testing.assert_close(fresh.embed(x, MIXED, mode="official"), model.embed(x, MIXED, mode="official"))


def test_paper_mfa_form_accepts_odd_positions() -> None:
    model = tiny_deen(mfa_form="paper").eval()
    assert model.mfa_form == "paper"
    assert model.embed(images(2, 36, 20), 0).shape == (2, 64)


def test_extra_repr() -> None:
    model = tiny_deen("regdb", randomised=False)
    assert model.extra_repr() == "num_classes=5, variant='regdb', num_branches=2, embed_dim=64, mfa_form='official'"
    assert "32, num_branches=2, dropout=0.01" in repr(model.dee) and "(mfa): ModuleList" in repr(model)


# ------------------------------------------------------------------------------- ablation switches
# num_branches=0 (no DEE: the base network of the paper's Table 4) and mfa=False (no MFA).

ABLATIONS = [(2, True), (2, False), (0, True), (0, False), (1, False)]


@pytest.mark.parametrize("variant", ["sysu", "regdb"])
@pytest.mark.parametrize(("k", "mfa"), ABLATIONS)
def test_ablation_shapes(variant: str, k: int, mfa: bool) -> None:
    model = tiny_deen(variant, num_branches=k, mfa=mfa)
    d = model.embed_dim
    out = model.train()(images(), MIXED)
    assert out.pooled.shape == out.features.shape == ((1 + k) * 4, d) and out.logits.shape == ((1 + k) * 4, 5)
    assert out.original.shape == (4, d) and out.generated.shape == (k, 4, d) and out.num_branches == k
    assert model.num_branches == k and model.has_mfa == mfa and (model.dee is None) == (k == 0)
    assert len(model.mfa) == (0 if not mfa else 3 if variant == "sysu" else 2)
    assert out.per_row(torch.arange(4)).tolist() == list(range(4)) * (1 + k)
    assert out.gather() is out
    model.eval()
    with torch.no_grad():
        assert model.embed(images(), MIXED).shape == (4, d)
        assert model.embed(images(), MIXED, mode="official").shape == (4, 2 * (1 + k), d)
        assert model.embed(images(), 1, mode="official", flip=True).shape == (4, 2 * (1 + k), d)


def test_full_model_keys_are_unchanged() -> None:
    """The defaults are the official network: the same keys (checkpoints load), and the switches only drop keys."""
    full = DEEN(4, backbone="resnet18").state_dict()
    assert DEEN(4, backbone="resnet18", num_branches=2, mfa=True).state_dict().keys() == full.keys()
    assert len(full) == 215 and {k.split(".")[0] for k in full} == {"backbone", "mfa", "dee", "neck", "classifier"}
    assert {k for k in full if k.startswith("dee.")} == {
        "dee.dilated.0.weight",
        "dee.dilated.1.weight",
        "dee.dilated.2.weight",
        "dee.project.weight",
        "dee.project.bias",
    }
    no_dee = DEEN(4, backbone="resnet18", num_branches=0).state_dict()
    no_mfa = DEEN(4, backbone="resnet18", mfa=False).state_dict()
    assert no_dee.keys() == {k for k in full if not k.startswith("dee.")}
    assert no_mfa.keys() == {k for k in full if not k.startswith("mfa.")}


def test_without_mfa_equals_the_identity_mfa() -> None:
    """At initialisation every MFA is the identity, so the model without MFA computes the same thing."""
    without = tiny_deen(mfa=False, randomised=False).eval()
    with_mfa = tiny_deen(randomised=False).eval()
    missing, unexpected = with_mfa.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("mfa.") for k in missing)
    without, with_mfa = without.double(), with_mfa.double()
    x = images(dtype=F64)
    with torch.no_grad():
        a, b = without(x, MIXED), with_mfa(x, MIXED)
        torch.testing.assert_close(a.pooled, b.pooled)
        torch.testing.assert_close(without.embed(x, MIXED, mode="official"), with_mfa.embed(x, MIXED, mode="official"))


@pytest.mark.parametrize("mfa", [True, False])
def test_without_dee_equals_the_original_rows(mfa: bool) -> None:
    """Without DEE the network is the full one minus DEE: its rows are the original rows of the full network."""
    full = tiny_deen(mfa=mfa).eval().double()
    base = tiny_deen(num_branches=0, mfa=mfa).eval().double()
    missing, unexpected = full.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("dee.") for k in missing)
    x = images(dtype=F64)
    with torch.no_grad():
        out, ref = base(x, MIXED), full(x, MIXED)
        torch.testing.assert_close(out.pooled, ref.original)
        torch.testing.assert_close(out.logits, ref.logits[:4])
        torch.testing.assert_close(base.embed(x, MIXED), full.embed(x, MIXED))
        # The official feature keeps the pool and BN parts of the original rows only.
        torch.testing.assert_close(base.embed(x, MIXED, mode="official"), full.embed(x, MIXED, mode="official")[:, :2])


def test_without_dee_no_dropout_and_batch_order() -> None:
    model = tiny_deen(num_branches=0, mfa=False).train()
    x = images(8).double()
    modalities = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    model = model.double()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    model.eval()  # BatchNorm statistics of the batch would mix the rows; DEE's dropout is gone in any mode
    with torch.no_grad():
        out, shuffled = model(x, modalities), model(x[perm], modalities[perm])
    torch.testing.assert_close(shuffled.pooled, out.pooled[perm])
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


@pytest.mark.parametrize(("k", "mfa"), ABLATIONS)
def test_ablation_criterion_is_finite_and_trains(k: int, mfa: bool) -> None:
    model = tiny_deen(num_branches=k, mfa=mfa, randomised=False).train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    x = images(8)
    out = model(x, modalities)
    criterion = DEENCriterion(lambda_cpm=0.0 if k == 0 else 0.8, lambda_ort=0.0 if k < 2 else 0.01)
    terms = criterion(out, ImageSample(x, labels, labels, modalities))
    assert sorted(terms) == ["ce", "cpm", "ort", "triplet"]
    assert all(torch.isfinite(v) for v in terms.values())
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, out.per_row(labels)))
    torch.testing.assert_close(terms["triplet"], HardTripletLoss()(out.pooled, out.per_row(labels)))
    if k == 0:  # no generated rows: CPM and the orthogonal loss have nothing to act on
        assert terms["cpm"].item() == 0.0 and terms["ort"].item() == 0.0
    if k < 2:  # the orthogonal loss needs two branches
        assert terms["ort"].item() == 0.0
    total = criterion.total(terms)
    total.backward()
    assert torch.isfinite(total)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_ablation_criterion_is_float32_under_bf16_autocast() -> None:
    model = tiny_deen(num_branches=0, mfa=False).train()
    labels, modalities = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    x = images(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, modalities)
    terms = DEENCriterion()(out, ImageSample(x, labels, labels, modalities))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())


def test_ablation_extra_repr_and_mfa_form() -> None:
    model = tiny_deen(num_branches=0, mfa=False, mfa_form="paper", randomised=False)
    assert model.extra_repr() == (
        "num_classes=5, variant='sysu', num_branches=0, embed_dim=64, mfa_form='paper', mfa=False"
    )
    assert model.mfa_form == "paper" and not model.has_mfa and model.dee is None
    model.reset_parameters()  # nothing to reset in DEE or MFA: no error


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"variant": "llcm"}, ValueError, "variant"),
        ({"num_branches": -1}, ValueError, "num_branches"),
        ({"num_branches": True}, ValueError, "num_branches"),
        ({"num_branches": 1.5}, ValueError, "num_branches"),
        ({"mfa": "no"}, TypeError, "mfa"),
        ({"mfa": 0}, TypeError, "mfa"),
        ({"mfa_form": "textbook"}, ValueError, "form"),
        ({"dee_dropout": 1.5}, ValueError, "dropout"),
        ({"pretrained": True}, ValueError, "pretrained"),
        ({"backbone_kwargs": {"last_stride": 2}}, ValueError, "backbone_kwargs"),
        ({"backbone": 3}, TypeError, "backbone"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, match: str) -> None:
    kwargs = {"backbone": tiny_backbone(), **kwargs}
    with pytest.raises(error, match=match):
        DEEN(5, **kwargs)


@pytest.mark.parametrize(("num_classes", "error"), [(0, ValueError), ("5", TypeError), (True, TypeError)])
def test_exception_num_classes(num_classes: object, error: type) -> None:
    with pytest.raises(error, match="num_classes"):
        DEEN(num_classes, backbone=tiny_backbone())  # type: ignore[arg-type]


def test_exception_too_few_stages() -> None:
    with pytest.raises(ValueError, match="at least 3 stages"):
        DEEN(5, backbone=tiny_backbone(stages=2), variant="regdb")
    assert DEEN(5, backbone=tiny_backbone(stages=2)).embed_dim == 32


def test_exception_unknown_timm_model() -> None:
    with pytest.raises(ValueError, match="timm model name"):
        DEEN(5, backbone="resnet_does_not_exist")


def test_exception_stage_resolution_not_mfa_compatible() -> None:
    backbone = TwoStreamBackbone(
        nn.Conv2d(3, 8, 1),
        [nn.Conv2d(8, 16, 1), nn.Conv2d(16, 32, 3, stride=4, padding=1), nn.Conv2d(32, 32, 1)],
        stem_channels=8,
        stem_reduction=1,
        channels=[16, 32, 32],
        reductions=[1, 4, 4],
    )
    with pytest.raises(ValueError, match="keep or halve"):
        DEEN(5, backbone=backbone)


def test_exception_official_mfa_odd_positions() -> None:
    # 36x20 input: stage 2 maps are 9x5 = 45 positions, which the official folded PNL cannot fold.
    model = tiny_deen().eval()
    with pytest.raises(ValueError, match="divisible by reduction=2"):
        model(images(2, 36, 20), 0)


def test_exception_forward_and_embed() -> None:
    model = tiny_deen().eval()
    with pytest.raises(ValueError, match="modality"):
        model(images(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mode"):
        model.embed(images(), MIXED, mode="pool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flip"):
        model.embed(images(), MIXED, flip=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="modalities"):
        model.embed(images(), torch.tensor([0, 1]), flip=True)
    with pytest.raises(ValueError, match="images"):
        model.embed(torch.randn(3, 32, 16), 0, flip=True)
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(3, 32, 16), 0)
