"""Tests for the assembled MPANet network and its criterion.

The reference test writes the official ``Baseline`` out in plain code from the reference notes (one timm ResNet
with ``MAM3``/``MAM4`` registered inside it, ``channel_attention`` Sequentials and a parameter-free
``InstanceNorm2d``, the ``spatial_attention`` convolution and a loop over the parts, the BN neck, the shared and the
modality classifiers with their EMA copies as frozen parameters, updated inside the forward), loads its *official*
state dict into our model as it is, and compares the outputs in float64. The criterion is compared with a
loop-based float64 reference of the official objective (anchors at the block starts of the official sampler's
layout, ``KLDivLoss(batchmean)(log q, p)``, the double-added specific losses).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from official_checkpoints import build_state_dict, mpanet_layout
from official_networks import OfficialMPANet
from torch import Tensor, nn

from vireid_layers import Modality
from vireid_layers.data import ImageSample
from vireid_layers.models import MPANet, MPANetCriterion, MPANetOutput

F64 = torch.float64
MIXED = torch.tensor([1, 0, 1, 0])


def images(n: int = 4, h: int = 64, w: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def tiny(num_classes: int = 5, **kwargs: object) -> MPANet:
    torch.manual_seed(0)
    return MPANet(num_classes, backbone="resnet18", **kwargs)  # type: ignore[arg-type]


def sample(labels: Tensor, modalities: Tensor) -> ImageSample:
    return ImageSample(None, labels, labels, modalities)


# ---------------------------------------------------------------------------------------- official network


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                if module.bias.requires_grad:
                    module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
        model.spatial_attention.bias.copy_(torch.randn(model.spatial_attention.bias.shape, generator=gen))
    return model


def test_matches_the_official_network_float64() -> None:
    torch.manual_seed(0)
    official = randomise_(OfficialMPANet("resnet18", 7)).double()
    # Distinct mean classifiers, as in a trained checkpoint (the fresh official model aliases them).
    with torch.no_grad():
        official.visible_classifier_.weight = nn.Parameter(torch.randn(7, 512 * 7, dtype=F64), requires_grad=False)
        official.infrared_classifier_.weight = nn.Parameter(torch.randn(7, 512 * 7, dtype=F64), requires_grad=False)
    model = MPANet(7, backbone="resnet18").double()
    model.load_state_dict(official.state_dict(), strict=True)  # the official keys as they are

    x = images(6, 96, 32, seed=1, dtype=F64)
    cams = torch.tensor([3, 1, 6, 2, 3, 4])  # SYSU infrared cameras 3 and 6
    modalities = ((cams == 3) | (cams == 6)).long()
    tol = {"rtol": 1e-9, "atol": 1e-10}
    for step in range(2):  # the EMA step happens inside both forwards, before the mean predictions
        with torch.no_grad():
            ours, theirs = model.train()(x, modalities), official.train()(x, cams)
        for got, expected in zip(ours, theirs, strict=True):
            torch.testing.assert_close(got, expected, **tol)
        torch.testing.assert_close(
            model.modality_classifiers.visible_mean, official.visible_classifier_.weight, **tol, msg=f"step {step}"
        )
    torch.testing.assert_close(model.neck.running_var, official.bn_neck.running_var, **tol)
    model.eval()
    official.eval()
    with torch.no_grad():
        (neck,) = official(x, cams)
        torch.testing.assert_close(model.embed(x, modalities, normalize=False), neck, **tol)
        torch.testing.assert_close(model.embed(x, Modality.INFRARED), F.normalize(neck, dim=1), **tol)
        # The pattern parts come first, the global feature last.
        torch.testing.assert_close(model(x, modalities).features[:, -512:], official.maps(x).mean(dim=(2, 3)), **tol)


def test_official_resnet50_checkpoint_loads_and_14336_width() -> None:
    model = MPANet(395, backbone="resnet50", pretrained=False)
    state = build_state_dict(mpanet_layout())
    assert len(state) == 334
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.embed_dim == 14336 and model.num_parts == 6 and model.modality_attention == 2
    torch.testing.assert_close(model.mam["3"].fc1.weight, state["backbone.MAM3.channel_attention.0.weight"])
    torch.testing.assert_close(model.pam.generator.bias, state["spatial_attention.bias"])
    torch.testing.assert_close(model.modality_classifiers.infrared_mean, state["infrared_classifier_.weight"])
    torch.testing.assert_close(model.backbone.infrared_stem.conv1.weight, state["backbone.conv1.weight"])
    torch.testing.assert_close(model.backbone.stages[3][2].conv3.weight, state["backbone.layer4.2.conv3.weight"])
    torch.testing.assert_close(model.neck.running_mean, state["bn_neck.running_mean"])
    model.eval()
    with torch.no_grad():
        out = model(images(2, 64, 32), torch.tensor([0, 1]))
    assert out.features.shape == (2, 14336) and out.masks.shape == (2, 6, 4, 2)
    assert out.logits.shape == out.modality_logits.shape == (2, 395)
    # The official parameter counts: used at test time (backbone + MAMs + PAM + BN neck).
    test_time = sum(
        p.numel() for n, p in model.named_parameters() if "classifier" not in n and "infrared_stem" not in n
    )
    assert test_time == 24_204_358


def test_shapes_and_properties_resnet18() -> None:
    model = tiny(5)
    out = model(images(), MIXED)
    assert isinstance(out, MPANetOutput)
    assert out.features.shape == out.neck_features.shape == (4, 7 * 512)
    assert out.masks.shape == (4, 6, 4, 2) and ((out.masks > 0) & (out.masks < 1)).all()
    assert out.logits.shape == out.modality_logits.shape == out.mean_logits.shape == (4, 5)
    assert not out.mean_logits.requires_grad and out.modality_logits.requires_grad
    assert model.num_classes == 5 and model.embed_dim == 3584
    assert "num_parts=6" in repr(model) and "shared_stem=True" in repr(model)
    # MAM only after the last stage, or none.
    assert list(tiny(modality_attention=1).mam) == ["4"] and len(tiny(modality_attention=0).mam) == 0
    assert tiny(num_parts=2)(images(), MIXED).features.shape == (4, 3 * 512)


def test_other_timm_backbone_and_two_stems() -> None:
    torch.manual_seed(0)
    model = MPANet(3, backbone="resnet18", shared_stem=False)
    out = model(images(), MIXED)
    assert out.features.shape == (4, 3584)
    assert all(p.requires_grad for p in model.backbone.infrared_stem.parameters())
    shared = tiny()
    assert not any(p.requires_grad for p in shared.backbone.infrared_stem.parameters())
    convnext = MPANet(3, backbone="convnext_atto", num_parts=2, mam_reduction=8)
    assert convnext(images(2, 64, 64), torch.tensor([0, 1])).features.shape == (2, 3 * 320)


def test_shared_stem_ignores_modalities_and_batch_order() -> None:
    model = tiny().eval()
    x = images()
    with torch.no_grad():
        a, b = model.embed(x, MIXED), model.embed(x, 0)
        perm = torch.tensor([2, 0, 3, 1])
        c = model(x[perm], MIXED[perm])
        d = model(x, MIXED)
    torch.testing.assert_close(a, b)
    for got, expected in zip(c, d, strict=True):
        torch.testing.assert_close(got, expected[perm])


def test_ema_in_forward_and_set_epoch() -> None:
    model = tiny()
    heads = model.modality_classifiers
    with torch.no_grad():
        heads.visible.weight.add_(1.0)
    before = heads.visible_mean.clone()
    model(images(), MIXED)
    torch.testing.assert_close(heads.visible_mean, 0.8 * before + 0.2 * heads.visible.weight)
    model.eval()(images(), MIXED)  # no update in eval mode
    torch.testing.assert_close(heads.visible_mean, 0.8 * before + 0.2 * heads.visible.weight)
    model.set_epoch(139)
    assert model.mean_update_rate == pytest.approx(0.2 * 100 / 141)
    model.set_epoch(0)
    assert model.mean_update_rate == 0.2
    frozen = tiny(mean_update_rate=None).train()
    copy = frozen.modality_classifiers.infrared_mean.clone()
    frozen(images(), MIXED)
    frozen.set_epoch(120)
    assert frozen.mean_update_rate is None
    torch.testing.assert_close(frozen.modality_classifiers.infrared_mean, copy)


def test_embed_flip_and_channels_last() -> None:
    model = tiny().eval()
    x = images(dtype=F64)
    model.double()
    with torch.no_grad():
        plain = model.embed(x, MIXED, normalize=False)
        flipped = model.embed(x, MIXED, flip=True)
        cl = model.embed(x.to(memory_format=torch.channels_last), MIXED, normalize=False)
        cl_model = model.to(memory_format=torch.channels_last).embed(x, MIXED, normalize=False)
    torch.testing.assert_close(flipped, F.normalize(plain, dim=1) + model.embed(x.flip(-1), MIXED))
    torch.testing.assert_close(cl, plain, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cl_model, plain, rtol=1e-10, atol=1e-10)
    assert torch.allclose(model.embed(x, 0).norm(dim=1), torch.ones(4, dtype=F64))


def test_gradients_reach_every_trainable_parameter() -> None:
    model = tiny()
    labels = torch.tensor([0, 0, 1, 1])
    terms = MPANetCriterion()(model(images(), MIXED), sample(labels, MIXED))
    MPANetCriterion().total(terms).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.neck.bias.grad is None and model.modality_classifiers.visible_mean.grad is None


def test_init_and_reset_parameters() -> None:
    model = tiny()
    with torch.no_grad():
        model.neck.weight.fill_(3.0)
        model.pam.generator.bias.fill_(1.0)
        model.modality_classifiers.visible_mean.zero_()
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.reset_parameters()
    assert (model.neck.weight == 1).all() and (model.neck.bias == 0).all()
    assert (model.pam.generator.bias == 0).all()
    torch.testing.assert_close(model.modality_classifiers.visible_mean, model.modality_classifiers.visible.weight)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, backbone[k])


def test_bf16_autocast() -> None:
    model = tiny().train()
    labels = torch.tensor([0, 0, 1, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), MIXED)
    assert out.logits.dtype == torch.bfloat16
    terms = MPANetCriterion()(out, sample(labels, MIXED))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        embedded = model.embed(images(), MIXED)
    assert torch.isfinite(embedded).all()
    torch.testing.assert_close(embedded.float(), model.embed(images(), MIXED), rtol=0.1, atol=0.05)


def test_compile(fresh_dynamo: None) -> None:
    model = tiny().eval()
    x = images()
    embed = torch.compile(model.embed, backend="eager")
    torch.testing.assert_close(embed(x, MIXED), model.embed(x, MIXED))
    labels = torch.tensor([0, 0, 1, 1])
    out = model(x, MIXED)
    batch = sample(labels, MIXED)
    criterion = MPANetCriterion()
    fused = torch.compile(criterion, backend="eager", fullgraph=True)
    got, expected = fused(out, batch), criterion(out, batch)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)


# ------------------------------------------------------------------------------------------------ criterion


def official_objective(
    out: MPANetOutput, labels: Tensor, is_ir: Tensor, k: int, margin: float = 0.7
) -> dict[str, Tensor]:
    """The official loss terms, loop by loop, in float64, on a batch in the official sampler's layout."""
    feats = out.features.double()
    n = feats.shape[0]
    centers = torch.stack([feats[labels == labels[i]].mean(0) for i in range(n)])
    intra = sum(torch.sqrt(((feats[i] - centers[i]) ** 2).sum()) for i in range(n)) / n
    anchors = range(0, n, k)
    inter = 0.0
    for a in anchors:
        others = [j for j in range(n) if labels[j] != labels[a]]
        inter = inter + sum(
            torch.clamp(margin - torch.sqrt(((centers[a] - centers[j]) ** 2).sum().clamp(min=1e-12)), min=0)
            for j in others
        ) / len(others)
    masks = out.masks.double().flatten(2)
    b, parts = masks.shape[:2]
    sep = sum(masks[i, p] @ masks[i, q] for i in range(b) for p in range(parts) for q in range(p + 1, parts))
    sep = sep / (b * parts * (parts - 1) / 2)
    own = out.modality_logits.double()
    ce_rows = [-own[i].log_softmax(0)[labels[i]] for i in range(n)]
    vis = sum(ce_rows[i] for i in range(n) if not is_ir[i]) / int((~is_ir).sum())
    ir = sum(ce_rows[i] for i in range(n) if is_ir[i]) / int(is_ir.sum())
    p, log_q = own.softmax(1), out.mean_logits.double().log_softmax(1)
    kl = sum((p[i] * (p[i].log() - log_q[i])).sum() for i in range(n)) / n
    ce = sum(-out.logits.double()[i].log_softmax(0)[labels[i]] for i in range(n)) / n
    return {
        "ce": ce,
        "center_cluster": intra + inter / len(anchors),
        "separation": sep,
        "visible": vis,
        "infrared": ir,
        "mutual_mean": kl,
    }


def fake_output(n: int, num_classes: int = 6, seed: int = 0, dtype: torch.dtype = F64) -> MPANetOutput:
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    feats = r(n, 12)
    return MPANetOutput(
        feats,
        feats * 2,
        r(n, num_classes),
        torch.rand(n, 3, 4, 2, generator=gen, dtype=dtype),
        r(n, num_classes),
        r(n, num_classes),
    )


def official_batch(p: int = 3, k: int = 4) -> tuple[Tensor, Tensor]:
    """Identity blocks of ``k`` rows, infrared and visible alternating (IR first), as the official sampler."""
    labels = torch.tensor([3, 0, 5, 1][:p]).repeat_interleave(k)
    modalities = torch.tensor([1, 0]).repeat(p * k // 2)
    return labels, modalities


def test_criterion_against_official_reference() -> None:
    labels, modalities = official_batch()
    out = fake_output(12)
    expected = official_objective(out, labels, modalities.bool(), k=4)
    criterion = MPANetCriterion()
    terms = criterion(out, sample(labels, modalities))
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value, rtol=1e-10, atol=1e-12, msg=key)
    total = expected["ce"] + expected["center_cluster"] + 0.5 * expected["separation"]
    total = total + 0.5 * (expected["visible"] + expected["infrared"]) * 2 + 2.5 * expected["mutual_mean"]
    torch.testing.assert_close(criterion.total(terms), total, rtol=1e-10, atol=1e-12)


def test_criterion_paper_variants() -> None:
    labels, modalities = official_batch()
    out = fake_output(12, seed=1)
    terms = MPANetCriterion(mutual_mean="paper", lambda_specific=0.5)(out, sample(labels, modalities))
    p, log_q = out.modality_logits.log_softmax(1), out.mean_logits.log_softmax(1)
    kl = (log_q.exp() * (log_q - p)).sum(1)
    ir = modalities.bool()
    torch.testing.assert_close(terms["mutual_mean"], kl[~ir].mean() + kl[ir].mean())
    weights = MPANetCriterion(lambda_specific=0.5).weights
    assert weights["visible"] == weights["infrared"] == 0.5 and weights["mutual_mean"] == 2.5


@given(st.integers(0, 10_000), st.permutations([0, 1, 2, 3, 4, 5]))
def test_criterion_batch_order_and_label_renaming(perm_seed: int, relabel: list[int]) -> None:
    labels, modalities = official_batch()
    out = fake_output(12, seed=2)
    criterion = MPANetCriterion()
    base = criterion(out, sample(labels, modalities))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(perm_seed))
    shuffled = MPANetOutput(*(t[perm] for t in out))
    got = criterion(shuffled, sample(labels[perm], modalities[perm]))
    for key, value in base.items():
        torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12, msg=key)
        assert torch.isfinite(value) and value >= 0
    # Renaming the identities (with the classifier columns) changes nothing.
    mapping = torch.tensor(relabel)
    inverse = torch.argsort(mapping)
    renamed = out._replace(
        logits=out.logits[:, inverse],
        modality_logits=out.modality_logits[:, inverse],
        mean_logits=out.mean_logits[:, inverse],
    )
    got = criterion(renamed, sample(mapping[labels], modalities))
    for key, value in base.items():
        torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize(
    ("labels", "modalities"),
    [
        (torch.tensor([2, 2, 2, 2]), torch.tensor([0, 1, 0, 1])),  # one identity: no centre pair
        (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 0])),  # singletons, no infrared row
        (torch.tensor([1]), torch.tensor([1])),  # one row
    ],
)
def test_criterion_degenerate_batches(labels: Tensor, modalities: Tensor) -> None:
    out = fake_output(len(labels), dtype=torch.float32)
    leaves = [t.requires_grad_() for t in out]
    terms = MPANetCriterion()(out, sample(labels, modalities))
    assert all(torch.isfinite(v) for v in terms.values())
    MPANetCriterion().total(terms).backward()
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in leaves)


def test_model_degenerate_batches_end_to_end() -> None:
    model = tiny()
    terms = MPANetCriterion()(
        model(images(2), torch.tensor([1, 1])), sample(torch.tensor([4, 4]), torch.tensor([1, 1]))
    )
    assert all(torch.isfinite(v) for v in terms.values()) and float(terms["visible"].detach()) == 0.0


def test_nan_propagates() -> None:
    labels, modalities = official_batch()
    out = fake_output(12)
    features = out.features.clone()
    features[0, 0] = math.nan
    terms = MPANetCriterion()(out._replace(features=features), sample(labels, modalities))
    assert torch.isnan(terms["center_cluster"])
    model = tiny().eval()
    x = images()
    x[0, 0, 0, 0] = math.nan
    with torch.no_grad():
        assert torch.isnan(model.embed(x, MIXED)[0]).all()


def test_gather_without_process_group_is_identity() -> None:
    out = fake_output(4)
    assert out.gather() is out


def test_state_dict_round_trip() -> None:
    model = tiny()
    model(images(), MIXED)  # an EMA step: the mean classifiers differ from the live ones
    other = tiny()
    other.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(other.modality_classifiers.visible_mean, model.modality_classifiers.visible_mean)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_parts": 0}, ValueError, "num_parts"),
        ({"modality_attention": 3}, ValueError, "modality_attention"),
        ({"shared_stem": 1}, TypeError, "shared_stem"),
        ({"mean_update_rate": 1.5}, ValueError, "mean_update_rate"),
        ({"backbone": 3}, TypeError, "backbone"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, match: str) -> None:
    args = {"num_classes": 3, "backbone": "resnet18", **kwargs}
    with pytest.raises(error, match=match):
        MPANet(args.pop("num_classes"), **args)


def test_exception_forward_embed_and_criterion() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="modalities"):
        model(images(), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="modalities"):
        model(images(), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="modalities"):
        model(images(), "visible")
    with pytest.raises(ValueError, match="modalities"):
        model(images(), 2)
    with pytest.raises(TypeError, match="x"):
        model(torch.zeros(2, 3, 64, 32, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="flip"):
        model.embed(images(), 0, flip=1)
    with pytest.raises(TypeError, match="normalize"):
        model.embed(images(), 0, normalize=None)
    with pytest.raises(ValueError, match="epoch"):
        model.set_epoch(-1)
    criterion = MPANetCriterion()
    out = fake_output(4)
    with pytest.raises(TypeError, match="MPANetOutput"):
        criterion(tuple(out), sample(torch.zeros(4, dtype=torch.long), MIXED))
    with pytest.raises(ValueError, match=r"batch\.identity"):
        criterion(out, sample(torch.tensor([0, 1, 2, 6]), MIXED))
    with pytest.raises(ValueError, match=r"batch\.modality"):
        criterion(out, sample(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 3, 0])))
    with pytest.raises(ValueError, match="lambda_separation"):
        MPANetCriterion(lambda_separation=-1.0)
    with pytest.raises(ValueError, match="lambda_mutual_mean"):
        MPANetCriterion(lambda_mutual_mean=math.inf)
    with pytest.raises(ValueError, match="direction"):
        MPANetCriterion(mutual_mean="reverse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="terms"):
        criterion.total({"ce": torch.zeros(())})
