"""Tests for the assembled MSO network and its criterion.

The reference test writes the network out from the paper's equations in plain float64 code: each modality's stem
on its own images, the shared stages with AGW's non-local blocks after the last residual blocks, GeM (p = 3), the
BN neck and the classifier, and Eq. 2-3 of PEF with the four Sobel kernels summed, the edge map average-pooled to
the stem's size and repeated to 64 channels, VGG blocks 1-4 entered at conv1_2. The criterion is compared with
loop-based float64 references of the identity loss, WRT on L2-normalised features and CMCC (Eq. 4-5).
"""

from __future__ import annotations

import copy
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from vireid_layers import PEFLoss
from vireid_layers.data import ImageSample
from vireid_layers.models import MSO, MSOCriterion, MSOOutput

F64 = torch.float64
MIXED = torch.tensor([0, 1, 1, 0])


def images(n: int = 4, h: int = 64, w: int = 64, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def batch(labels: Tensor, modalities: Tensor) -> ImageSample:
    return ImageSample(torch.empty(0), labels, labels, modalities)


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine parameters and running statistics, so that every BatchNorm matters in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.running_var.shape, generator=gen))
        for p in model.parameters():  # non-local W BatchNorms start at 0: make the blocks non-trivial
            if p.dim() == 2:  # the classifier
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def pristine() -> MSO:
    torch.manual_seed(0)
    return MSO(6, backbone="resnet18")


@pytest.fixture
def model(pristine: MSO) -> MSO:
    """A fresh copy per test: a test that trains or feeds NaN must not leak its BatchNorm statistics."""
    return copy.deepcopy(pristine)


# ---------------------------------------------------------------------------------------------------- shapes


def test_shapes_and_properties(model: MSO) -> None:
    out = model.train()(images(), MIXED)
    assert isinstance(out, MSOOutput)
    assert out.pooled.shape == out.features.shape == (4, 512)
    assert out.logits.shape == (4, 6) and out.pef.shape == () and out.pef.dtype == torch.float32
    assert model.num_classes == 6 and model.embed_dim == 512
    assert model.non_local_positions == ((), (0, 1), (0, 1), ())
    assert "num_classes=6" in repr(model) and "entry='conv1_2'" in repr(model)
    model.eval()
    with torch.no_grad():
        for mode in ("fc", "pool"):
            e = model.embed(images(), MIXED, mode=mode)
            assert e.shape == (4, 512)
            torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
        flipped = model.embed(images(), 0, flip=True)
        assert flipped.shape == (4, 512)
    assert out.gather() is out


def test_state_dict_holds_vgg_and_agw_names(model: MSO) -> None:
    keys = set(model.state_dict())
    assert "pef.features.2.weight" in keys and "pef.features.21.bias" in keys
    assert "pef.features.0.weight" not in keys  # conv1_1 is not used by the default entry
    assert {"neck.weight", "neck.bias", "classifier.weight"} <= keys  # AGW's names: AGW state dicts load
    assert any(k.startswith("non_local.1.0.") for k in keys)


# ---------------------------------------------------------------------------------------------------- reference


def sobel_sum_kernel() -> Tensor:
    k0 = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
    k1 = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    k2 = [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]]
    k3 = [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]]
    return sum(torch.tensor(k, dtype=F64) for k in (k0, k1, k2, k3)).view(1, 1, 3, 3)


def reference_pef(vgg: nn.Sequential, f: Tensor, x: Tensor, modalities: Tensor) -> Tensor:
    """Eq. 2-3: entry conv1_2, blocks 1-4 after their max pooling (torchvision indices 4, 9, 16, 23)."""
    e = F.conv2d(x.sum(1, keepdim=True), sobel_sum_kernel(), padding=1)  # the four Sobel maps added
    e = F.adaptive_avg_pool2d(e, f.shape[-2:]).repeat(1, 64, 1, 1)
    layers = dict(vgg.named_children())
    per_image = torch.zeros(f.shape[0], dtype=F64)
    a, b = f, e
    for index in range(2, 24):
        a, b = layers[str(index)](a), layers[str(index)](b)
        if index in (4, 9, 16, 23):
            c, h, w = a.shape[1:]
            per_image = per_image + ((a - b) ** 2).sum((1, 2, 3)) / (c * h * w)
    total = torch.zeros((), dtype=F64)
    for m in (0, 1):
        rows = modalities == m
        if rows.any():
            total = total + per_image[rows].mean()
    return total


def reference_forward(model: MSO, x: Tensor, modalities: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    bb = model.backbone
    f = torch.empty(x.shape[0], 64, x.shape[2] // 4, x.shape[3] // 4, dtype=F64)
    for m, stem in ((0, bb.visible_stem), (1, bb.infrared_stem)):
        rows = modalities == m
        f[rows] = stem(x[rows])  # layer0 of modality m on its own images
    pef = reference_pef(model.pef.features, f, x, modalities)
    h = f
    official = (0, 2, 3, 0)  # AGW: non-local after the last 2 blocks of layer2, the last 3 of layer3
    for s, stage in enumerate(bb.stages):
        blocks = list(stage)
        k = min(official[s], len(blocks))
        for i, block in enumerate(blocks):
            h = block(h)
            if i >= len(blocks) - k:
                h = model.non_local[s][i - (len(blocks) - k)](h)
    pooled = (h.pow(3).mean((2, 3)) + 1e-12).pow(1 / 3)  # GeM, p = 3
    bn = model.neck
    g = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    logits = g @ model.classifier.weight.T
    return pooled, g, logits, pef


def test_forward_matches_paper_reference_float64() -> None:
    torch.manual_seed(1)
    model = randomise_(MSO(5, backbone="resnet18", non_local_form="corrected")).double().eval()
    x = images(6, 64, 64, seed=3, dtype=F64)
    modalities = torch.tensor([1, 0, 0, 1, 1, 0])
    with torch.no_grad():
        out = model(x, modalities)
        ref = reference_forward(model, x, modalities)
        for got, want in zip(out, ref, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert out.pef > 0
        torch.testing.assert_close(model.embed(x, modalities), F.normalize(ref[1], dim=1), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            model.embed(x, modalities, mode="pool"), F.normalize(ref[0], dim=1), rtol=1e-10, atol=1e-12
        )


def test_channels_last_same_output() -> None:
    torch.manual_seed(2)
    model = randomise_(MSO(5, backbone="resnet18")).double().eval()
    x = images(4, 64, 64, seed=4, dtype=F64)
    with torch.no_grad():
        want = model(x, MIXED)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last), MIXED)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- frozen VGG


def test_vgg_frozen_and_eval_after_train(model: MSO) -> None:
    model.train()
    assert model.training and not model.pef.features.training
    assert all(not m.training for m in model.pef.features.modules())
    assert all(not p.requires_grad for p in model.pef.parameters())
    model.zero_grad(set_to_none=True)
    out = model(images(), MIXED)
    out.pef.backward()
    assert all(p.grad is None for p in model.pef.parameters())
    # PEF reaches the stems only: its gradient is non-zero there and absent from the shared stages.
    assert model.backbone.visible_stem.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.infrared_stem.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.stages.parameters())
    before = {k: v.clone() for k, v in model.pef.state_dict().items()}
    torch.optim.SGD(model.parameters(), lr=1.0).step()  # an optimiser over every parameter leaves the VGG alone
    for k, v in model.pef.state_dict().items():
        assert torch.equal(v, before[k])


def vgg16_features_state(seed: int = 0) -> dict[str, Tensor]:
    """A randomly initialised torchvision VGG-16 ``features`` state dict with torchvision's key names."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    return {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg_weights_from_local_file(tmp_path, suffix: str) -> None:
    state = vgg16_features_state(seed=7)
    path = tmp_path / f"vgg16{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = MSO(3, backbone="resnet18", vgg_weights=path)
    for key, value in model.pef.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert all(not p.requires_grad for p in model.pef.parameters())
    # A file that is not a VGG-16 state dict is refused, naming the missing keys.
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        MSO(3, backbone="resnet18", vgg_weights=tmp_path / "bad.pth")


def test_vgg_weights_timm_pretrained(monkeypatch) -> None:
    import timm

    calls = []
    state = vgg16_features_state(seed=9)

    class Fake(nn.Module):
        def state_dict(self, *args, **kwargs):  # type: ignore[override]
            return state

    def create_model(name: str, pretrained: bool = False, **kwargs):
        calls.append((name, pretrained))
        return Fake()

    backbone = MSO(3, backbone="resnet18").backbone  # built before timm is patched
    monkeypatch.setattr(timm, "create_model", create_model)
    model = MSO(3, backbone=backbone, vgg_weights="timm")
    assert calls == [("vgg16", True)]
    torch.testing.assert_close(model.pef.features[0].weight, state["features.2.weight"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- criterion


def reference_wrt(x: Tensor, labels: Tensor, eps: float = 1e-6) -> Tensor:
    x = x / x.norm(dim=1, keepdim=True)
    n = x.shape[0]
    d = torch.stack(
        [torch.stack([((x[i] - x[j]) ** 2).sum().clamp_min(1e-12).sqrt() for j in range(n)]) for i in range(n)]
    )
    losses = []
    for i in range(n):
        pos, neg = labels == labels[i], labels != labels[i]
        dp, dn = d[i][pos], d[i][neg]
        wp = torch.exp(dp - dp.max()) / (torch.exp(dp - dp.max()).sum() + eps)
        fp = (wp * dp).sum()
        if neg.any():
            wn = torch.exp(-dn - (-dn).max()) / (torch.exp(-dn - (-dn).max()).sum() + eps)
            cn = (wn * dn).sum()
        else:
            cn = torch.zeros((), dtype=x.dtype)
        losses.append(F.softplus(fp - cn))
    return torch.stack(losses).mean()


def reference_cmcc(g: Tensor, labels: Tensor, modalities: Tensor) -> Tensor:
    g = g / g.norm(dim=1, keepdim=True)
    ids = [k for k in labels.unique().tolist() if {0, 1} <= set(modalities[labels == k].tolist())]
    centres = {}
    for k in ids:
        c = [g[(labels == k) & (modalities == m)].mean(0) for m in (0, 1)]
        centres[k] = (c[0], c[1], (c[0] + c[1]) / 2)
    terms = []
    for k in ids:
        intra = (centres[k][0] - centres[k][1]).norm()
        others = [(centres[k][2] - centres[j][2]).norm() for j in ids if j != k]
        inter = min(others) if others else torch.tensor(math.inf, dtype=g.dtype)
        terms.append(math.log1p(math.exp(-(float(inter) - float(intra)))))
    return torch.tensor(sum(terms) / max(len(terms), 1), dtype=g.dtype)


def random_output(n: int, num_classes: int, seed: int, dtype: torch.dtype = F64) -> MSOOutput:
    gen = torch.Generator().manual_seed(seed)
    return MSOOutput(
        torch.rand(n, 16, generator=gen, dtype=dtype) * 3,
        torch.randn(n, 16, generator=gen, dtype=dtype),
        torch.randn(n, num_classes, generator=gen, dtype=dtype),
        torch.rand((), generator=gen, dtype=dtype),
    )


def test_criterion_matches_reference_float64() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 2])
    modalities = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 1, 0])  # identity 3 is visible only
    out = random_output(10, 5, seed=1)
    criterion = MSOCriterion()
    terms = criterion(out, batch(labels, modalities))
    assert sorted(terms) == ["ce", "cmcc", "pef", "wrt"] and all(t.dtype == F64 for t in terms.values())
    ce = -(out.logits.log_softmax(1)[torch.arange(10), labels]).mean()
    torch.testing.assert_close(terms["ce"], ce, rtol=1e-12, atol=1e-12)
    # The safe square root floors a zero distance (an anchor to itself) at 1e-6, hence the 1e-6 tolerance.
    torch.testing.assert_close(terms["wrt"], reference_wrt(out.pooled, labels), rtol=0, atol=1e-6)
    torch.testing.assert_close(terms["cmcc"], reference_cmcc(out.features, labels, modalities), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["pef"], out.pef)
    weighted = MSOCriterion(lambda_wrt=0.5, lambda_pef=2.0, lambda_cmcc=3.0)
    want = terms["ce"] + 0.5 * terms["wrt"] + 2.0 * terms["pef"] + 3.0 * terms["cmcc"]
    torch.testing.assert_close(weighted.total(weighted(out, batch(labels, modalities))), want)
    assert "lambda_pef=2.0" in repr(weighted)


def test_criterion_on_model_output_backward(model: MSO) -> None:
    model.train().zero_grad(set_to_none=True)
    labels, modalities = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    criterion = MSOCriterion()
    loss = criterion.total(criterion(model(images(), modalities), batch(labels, modalities)))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.classifier.weight.grad is not None and model.backbone.visible_stem.conv1.weight.grad is not None


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_criterion_batch_order_and_label_renaming(seed: int, data: st.DataObject) -> None:
    n = 8
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    modalities = torch.randint(0, 2, (n,), generator=gen)
    out = random_output(n, 4, seed)
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    criterion = MSOCriterion()
    want = criterion(out, batch(labels, modalities))
    permuted = MSOOutput(out.pooled[perm], out.features[perm], out.logits[perm], out.pef)
    got = criterion(permuted, batch(labels[perm], modalities[perm]))
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)
        assert torch.isfinite(got[k]) and got[k] >= 0
    # Renaming the identities (and moving the logit columns with them) changes nothing.
    rename = torch.tensor(data.draw(st.permutations(range(4))))
    renamed = MSOOutput(out.pooled, out.features, out.logits[:, rename.argsort()], out.pef)
    got = criterion(renamed, batch(rename[labels], modalities))
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- degenerate


def test_degenerate_batches(model: MSO) -> None:
    criterion = MSOCriterion()
    model.train()
    # One modality (an int, and a tensor), one identity: PEF adds 0 for the absent modality, CMCC has no pair.
    for modalities in (1, torch.ones(4, dtype=torch.long)):
        out = model(images(), modalities)
        terms = criterion(out, batch(torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)))
        assert all(torch.isfinite(t) for t in terms.values())
        assert terms["cmcc"] == 0
    # PEF with one modality equals the loss of that modality's images alone.
    pef = PEFLoss()
    pef.load_state_dict(model.pef.state_dict())
    stem = model.backbone.forward_stem(images(), 1)
    torch.testing.assert_close(model(images(), 1).pef, pef(stem, images()))
    # One identity seen in both modalities: CMCC is 0 (no other identity), WRT has no negatives.
    out = model(images(), MIXED)
    terms = criterion(out, batch(torch.zeros(4, dtype=torch.long), MIXED))
    assert all(torch.isfinite(t) for t in terms.values()) and terms["cmcc"] == 0


def test_nan_propagates(model: MSO) -> None:
    x = images()
    x[1, :, 5, 5] = float("nan")
    out = model.train()(x, MIXED)
    assert torch.isnan(out.pef)
    terms = MSOCriterion()(out, batch(torch.tensor([0, 1, 0, 1]), MIXED))
    assert torch.isnan(MSOCriterion().total(terms))


# ---------------------------------------------------------------------------------------------------- bad input


def test_bad_input(model: MSO) -> None:
    with pytest.raises(ValueError, match="modalit"):
        model(images(), torch.tensor([0, 2, 1, 0]))
    with pytest.raises(ValueError):
        model(torch.randn(3, 64, 64), MIXED)
    with pytest.raises(ValueError, match="at least 16x16"):
        model(images(h=32, w=32), MIXED)
    with pytest.raises(ValueError, match="mode"):
        model.embed(images(), MIXED, mode="att")
    with pytest.raises(TypeError, match="flip"):
        model.embed(images(), MIXED, flip=1)
    with pytest.raises(ValueError, match="pef_entry"):
        MSO(3, backbone="resnet18", pef_entry="conv1_1")
    with pytest.raises(ValueError, match="combine"):
        MSO(3, backbone="resnet18", sobel_combine="none")
    with pytest.raises(TypeError, match="weights"):
        MSO(3, backbone="resnet18", vgg_weights=3)
    with pytest.raises(ValueError, match="weights"):
        MSO(3, backbone="resnet18", vgg_weights="/nonexistent/vgg16.pth")


def test_pef_entry_needs_64_stem_channels() -> None:
    model = MSO(3, backbone="resnet18")
    model.backbone._stem_channels = 32  # as a backbone whose stem has 32 channels
    with pytest.raises(ValueError, match="pef_entry='image'"):
        MSO(3, backbone=model.backbone)
    assert MSO(3, backbone=model.backbone, pef_entry="image").pef.entry == "image"


def test_criterion_bad_input() -> None:
    out = random_output(4, 3, seed=0)
    criterion = MSOCriterion()
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(TypeError, match="MSOOutput"):
        criterion(tuple(out), batch(labels, MIXED))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        criterion(out, batch(torch.tensor([0, 1, 3, 1]), MIXED))
    with pytest.raises(TypeError, match=r"batch\.identity"):
        criterion(out, batch(labels.float(), MIXED))
    with pytest.raises(ValueError, match=r"batch\.modality"):
        criterion(out, batch(labels, torch.tensor([0, 1, 2, 1])))
    with pytest.raises(ValueError, match=r"out\.pef"):
        criterion(out._replace(pef=torch.zeros(4)), batch(labels, MIXED))
    with pytest.raises(ValueError, match="lambda_cmcc"):
        MSOCriterion(lambda_cmcc=float("nan"))
    with pytest.raises(ValueError, match="lambda_wrt"):
        MSOCriterion(lambda_wrt=-1.0)
    with pytest.raises(TypeError, match="normalize_wrt"):
        MSOCriterion(normalize_wrt=1)
    with pytest.raises(ValueError, match="missing"):
        criterion.total({"ce": torch.zeros(())})


# ---------------------------------------------------------------------------------------------------- compile, AMP


def test_compile_embed_and_criterion(model: MSO) -> None:
    model.eval()
    x = images()
    with torch.no_grad():
        want = model.embed(x, MIXED)
        got = torch.compile(model.embed, backend="eager")(x, MIXED)
    torch.testing.assert_close(got, want)
    out = random_output(8, 4, seed=5, dtype=torch.float32)
    labels, modalities = torch.tensor([0, 1, 2, 3] * 2), torch.tensor([0] * 4 + [1] * 4)
    criterion = MSOCriterion()
    want_terms = criterion(out, batch(labels, modalities))
    got_terms = torch.compile(criterion, backend="eager")(out, batch(labels, modalities))
    for k in want_terms:
        torch.testing.assert_close(got_terms[k], want_terms[k])


def test_bf16_autocast(model: MSO) -> None:
    model.train()
    labels, modalities = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    criterion = MSOCriterion()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), modalities)
        terms = criterion(out, batch(labels, modalities))
    assert out.pef.dtype == torch.float32
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())
    criterion.total(terms).backward()
    full = criterion(model(images(), modalities), batch(labels, modalities))
    # bf16 keeps 8 bits of mantissa; a ResNet-18 and a VGG-16 deep, the terms agree to a few per cent.
    for k in ("ce", "wrt", "cmcc"):
        torch.testing.assert_close(terms[k], full[k], rtol=0.1, atol=0.05)
    torch.testing.assert_close(terms["pef"], full["pef"], rtol=0.1, atol=0.0)


# ---------------------------------------------------------------------------------------------------- DDP, state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        rows = [torch.full((2, 3), float(10 * rank + i), requires_grad=True) for i in range(3)]
        pef = torch.tensor(float(rank + 1), requires_grad=True)
        gathered = MSOOutput(*rows, pef).gather()
        weights = torch.arange(4.0).unsqueeze(1)  # a different weight for every gathered row
        (sum((t * weights).sum() for t in gathered[:3]) + gathered.pef).backward()
        torch.save(
            {
                "rows": [t.detach() for t in gathered[:3]],
                "pef": gathered.pef.detach(),
                "grads": [t.grad for t in rows],
                "pef_grad": pef.grad,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_output_gathers_itself_across_ranks(tmp_path: Path) -> None:
    args = (2, _free_port(), str(tmp_path))
    torch.multiprocessing.start_processes(_gather_worker, args=args, nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for i, t in enumerate(result["rows"]):  # rank 0's rows, then rank 1's
            torch.testing.assert_close(
                t, torch.tensor([i, i, 10 + i, 10 + i], dtype=torch.float32)[:, None].expand(4, 3)
            )
        assert result["pef"].shape == () and float(result["pef"]) == 1.5  # the mean of the ranks' values
        # Each rank gets its own rows' gradient summed over the 2 ranks that computed the same loss (DDP's
        # averaging divides by the world size again); PEF's mean gives 2 x 1/2.
        for grad in result["grads"]:
            torch.testing.assert_close(grad, 2 * torch.tensor([2.0 * rank, 2.0 * rank + 1])[:, None].expand(2, 3))
        torch.testing.assert_close(result["pef_grad"], torch.tensor(1.0))


def test_agw_state_dict_loads_and_reset_parameters() -> None:
    from vireid_layers.models import AGW

    torch.manual_seed(3)
    agw = AGW(6, backbone="resnet18")
    model = MSO(6, backbone="resnet18")
    result = model.load_state_dict(agw.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("pef.") for k in result.missing_keys)
    x = images()
    agw.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x, MIXED), agw.embed(x, MIXED), rtol=0, atol=0)
    vgg = {k: v.clone() for k, v in model.pef.state_dict().items()}
    with torch.no_grad():
        model.neck.weight.fill_(5.0)
    model.reset_parameters()
    assert abs(model.neck.weight.mean() - 1) < 0.01 and not model.neck.bias.requires_grad
    assert all(torch.equal(v, vgg[k]) for k, v in model.pef.state_dict().items())  # the VGG is kept


def test_criterion_promotes_half_never_casts_down() -> None:
    labels, modalities = torch.tensor([0, 1, 2, 3] * 2), torch.tensor([0] * 4 + [1] * 4)
    for dtype, want in ((torch.bfloat16, torch.float32), (torch.float16, torch.float32), (F64, F64)):
        terms = MSOCriterion()(random_output(8, 4, seed=2, dtype=dtype), batch(labels, modalities))
        assert all(t.dtype == want for t in terms.values()), (dtype, {k: t.dtype for k, t in terms.items()})
