"""Tests for the assembled DDAG network and its criterion.

The reference test writes the official network out in plain code from the reference notes (three timm ResNets of
which only the stems or the trunk run, the official IWPA with its ``fc1`` Sequential and its dead ``W`` block, the
pyGAT layers that build the ``N x N x 2d`` pair tensor, the adjacency as the training script builds it, BN neck,
shared classifier), loads the *official* state dict into our model through a plain key renaming, and compares the
training outputs and the test features in float64. The criterion is compared with a loop-based float64 reference
of the official ``train_ddag.py`` objective, over several epochs and across a resume.
"""

from __future__ import annotations

import io
import math
import os
import re
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from official_networks import OfficialDDAG, official_adjacency
from strategies import loop_distance_matrix
from torch import Tensor, nn

from vireid_layers import CGSA, IWPA, Modality, TwoStreamBackbone
from vireid_layers.data import ImageSample
from vireid_layers.models import DDAG, DDAGCriterion, DDAGOutput

F64 = torch.float64
MIXED = torch.tensor([0, 1, 1, 0])


def images(n: int = 4, h: int = 64, w: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine parameters (frozen zero biases included) and a non-uniform IWPA gate."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        for name, p in model.named_parameters():
            if name.endswith("gate"):
                p.copy_(torch.randn(p.shape, generator=gen))
    return model


def calibrate_(model: nn.Module, *inputs: object) -> nn.Module:
    """Running statistics = the statistics of one batch (momentum 1), as in a trained network."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(*inputs)
    for m in norms:
        m.momentum = 0.1
    return model


class Block(nn.Module):
    """conv-BN-ReLU: a stand-in for a residual block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def tiny_backbone() -> TwoStreamBackbone:
    """Stem (8 channels, /2) and two stages, 16 (/4) and 32 (/4): milliseconds instead of a ResNet-18."""
    return TwoStreamBackbone(
        Block(3, 8, 2),
        [Block(8, 16, 2), Block(16, 32, 1)],
        stem_channels=8,
        stem_reduction=2,
        channels=[16, 32],
        reductions=[4, 4],
        infrared_stem=Block(3, 8, 2),
    )


def tiny_ddag(num_classes: int = 5, seed: int = 0, **kwargs: object) -> DDAG:
    torch.manual_seed(seed)
    kwargs.setdefault("backbone", "resnet18")
    kwargs.setdefault("graph_hidden", 16)
    return randomise_(DDAG(num_classes, **kwargs), seed)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- the official network


_STEMS = {"visible_module.visible.": "backbone.visible_stem.", "thermal_module.thermal.": "backbone.infrared_stem."}
_LAYER = re.compile(r"layer(\d+)\.(.+)")


def from_official(key: str) -> str | None:
    """An official DDAG key -> ours; ``None`` for the dead ones (idle ResNet parts, ``classifier1``/``2``).

    ``wpa.W.*`` is passed on: IWPA's load hook drops it.
    """
    for theirs, ours in _STEMS.items():
        if key.startswith(theirs):
            rest = key.removeprefix(theirs)
            return ours + rest if rest.startswith(("conv1.", "bn1.")) else None
    if key.startswith("base_resnet.base."):
        match = _LAYER.fullmatch(key.removeprefix("base_resnet.base."))
        return f"backbone.stages.{int(match[1]) - 1}.{match[2]}" if match else None
    if key.startswith(("classifier1.", "classifier2.")):
        return None
    if key.startswith("bottleneck."):
        return "neck." + key.removeprefix("bottleneck.")
    if key.startswith("wpa."):
        return "iwpa." + key.removeprefix("wpa.")
    if key.startswith(("attention_", "out_att.")):
        return "cgsa." + key
    return key


def convert_official(state: dict[str, Tensor], model: DDAG) -> tuple[dict[str, Tensor], list[str]]:
    ours_keys = set(model.state_dict())
    converted, dead = {}, []
    for key, value in state.items():
        new = from_official(key)
        if new is None:
            dead.append(key)
            continue
        # IWPA's fc1 is a one-element Sequential officially; follow whichever layout our IWPA has.
        if new.startswith("iwpa.fc1.0.") and new not in ours_keys:
            new = new.replace("iwpa.fc1.0.", "iwpa.fc1.")
        converted[new] = value
    return converted, dead


def test_matches_the_official_network_float64() -> None:
    n_class, low_dim = 7, 16
    torch.manual_seed(0)
    official = randomise_(OfficialDDAG("resnet18", n_class, low_dim, drop=0.0), seed=1).double()
    visible, infrared = images(3, 96, 32, seed=1, dtype=F64), images(3, 96, 32, seed=2, dtype=F64)
    labels = torch.tensor([5, 1, 5, 1, 5, 3])  # visible then infrared; identity 3 only in infrared
    adj = official_adjacency(labels, n_class)
    calibrate_(official, images(3, 96, 32, seed=3, dtype=F64), images(3, 96, 32, seed=4, dtype=F64), adj)

    model = DDAG(n_class, backbone="resnet18", graph_hidden=low_dim, graph_dropout=0.0).double()
    converted, dead = convert_official(official.state_dict(), model)
    model.load_state_dict(converted, strict=True)  # IWPA drops W.*, CGSA stacks the heads
    assert all(
        k.startswith(("visible_module", "thermal_module", "base_resnet", "classifier1", "classifier2")) for k in dead
    )
    assert not any(k.startswith(("base_resnet.base.layer", "bottleneck", "wpa", "attention", "out_att")) for k in dead)

    x, modalities = torch.cat([visible, infrared]), torch.tensor([0, 0, 0, 1, 1, 1])
    model.train()
    official.train()
    with torch.no_grad():
        ours = model(x, modalities, labels=labels)
        theirs = official(visible, infrared, adj)
    tol = {"rtol": 1e-9, "atol": 1e-10}
    torch.testing.assert_close(ours.pooled, theirs[0], **tol)
    torch.testing.assert_close(ours.logits, theirs[1], **tol)
    torch.testing.assert_close(ours.part_logits, theirs[2], **tol)
    torch.testing.assert_close(ours.graph, theirs[3], **tol)
    # The running statistics moved the same way in both.
    torch.testing.assert_close(model.iwpa.bottleneck.running_var, official.wpa.bottleneck.running_var, **tol)
    assert ours.graph is not None and not torch.allclose(ours.graph, ours.logits.log_softmax(1))

    model.eval()
    official.eval()
    with torch.no_grad():
        for modality, modal, data in ((Modality.VISIBLE, 1, visible), (Modality.INFRARED, 2, infrared)):
            fc, att = official(data, data, 0, modal=modal)
            torch.testing.assert_close(model.embed(data, modality, mode="fc"), fc, **tol)
            torch.testing.assert_close(model.embed(data, modality), att, **tol)
            torch.testing.assert_close(model.embed(data, torch.full((3,), modal - 1)), att, **tol)
    # The IWPA branch is active: x* differs from the BN-neck feature.
    assert not torch.allclose(model.embed(visible, 0), model.embed(visible, 0, mode="fc"), atol=1e-3)


def test_resnet50_official_layout_and_shapes() -> None:
    """ResNet-50 without downloads: the official 991 keys map onto ours; the documented counts and shapes hold."""
    torch.manual_seed(0)
    official = OfficialDDAG("resnet50", 395, 512, drop=0.2)
    state = official.state_dict()
    assert len(state) == 991
    model = DDAG(395, backbone="resnet50", pretrained=False)
    converted, dead = convert_official(state, model)
    dead += [k for k in state if k.startswith("wpa.W.")]
    assert len(dead) == 639  # reference: 639 dead entries (630 idle ResNet parts, classifier1/2, IWPA's W)
    model.load_state_dict(converted, strict=True)
    assert len(model.state_dict()) == 991 - 639 - 6  # CGSA keeps its 4 heads' W and a stacked: 2 keys, not 8
    # The official parameters used at test time plus the training-only ones (reference section 4.3).
    assert sum(p.numel() for p in model.parameters()) == 36_114_819 + 5_817_110
    assert model.embed_dim == 2048 and model.num_classes == 395 and model.parts == 3
    model.eval()
    with torch.no_grad():
        last_map = model.backbone(images(2, 288, 144), 0)
        out = model(images(2, 288, 144), torch.tensor([0, 1]), labels=torch.tensor([7, 7]))
    assert last_map.shape == (2, 2048, 18, 9)
    assert out.pooled.shape == out.features.shape == out.part_features.shape == (2, 2048)
    assert out.logits.shape == out.part_logits.shape == out.graph.shape == (2, 395)


# ------------------------------------------------------------------------------------------------- shapes


def test_shapes_resnet18() -> None:
    model = tiny_ddag(num_classes=7)
    out = model(images(4), MIXED, labels=torch.tensor([0, 0, 6, 6]))
    assert isinstance(out, DDAGOutput)
    assert out.pooled.shape == out.features.shape == out.part_features.shape == (4, 512)
    assert out.logits.shape == out.part_logits.shape == out.graph.shape == (4, 7)
    assert model(images(4), MIXED).graph is None
    assert model.embed_dim == 512 and model.num_classes == 7 and model.parts == 3
    assert isinstance(model.iwpa, IWPA) and isinstance(model.cgsa, CGSA)


def test_other_timm_backbone() -> None:
    model = DDAG(3, backbone="convnext_atto", graph_hidden=8, parts=2)
    out = model(images(4), MIXED, labels=torch.tensor([0, 1, 1, 0]))
    assert out.part_features.shape == (4, 320) and out.graph.shape == (4, 3)
    model.eval()
    assert model.embed(images(2), 1).shape == (2, 320)


# -------------------------------------------------------------------------------------------- data flow


def test_data_flow_and_paper_form() -> None:
    model = tiny_ddag(iwpa_form="paper").eval()
    x, labels = images(), torch.tensor([1, 1, 2, 2])
    out = model(x, MIXED, labels=labels)
    last = model.backbone(x, MIXED)
    torch.testing.assert_close(out.pooled, last.mean(dim=(2, 3)))
    torch.testing.assert_close(out.features, model.neck(out.pooled))
    torch.testing.assert_close(out.logits, model.classifier(out.features))
    torch.testing.assert_close(out.part_features, model.iwpa(last, out.pooled))  # paper: residual BN(x^o)
    torch.testing.assert_close(out.part_logits, model.classifier(out.part_features))  # the shared classifier
    torch.testing.assert_close(out.graph, model.cgsa(out.pooled, labels))


def test_batch_order_does_not_matter() -> None:
    model = tiny_ddag(graph_dropout=0.0)
    x, perm = images(6), torch.tensor([4, 0, 5, 2, 1, 3])
    modalities, labels = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([1, 2, 3, 3, 1, 2])
    for training in (False, True):  # eval: per row; train: batch statistics are permutation invariant
        model.train(training)
        out, out_perm = model(x, modalities, labels), model(x[perm], modalities[perm], labels[perm])
        for a, b in zip(out_perm, out, strict=True):
            torch.testing.assert_close(a, b[perm], rtol=1e-4, atol=1e-5)


def test_graph_dropout_in_training_only() -> None:
    model = tiny_ddag(graph_dropout=0.5).train()
    x, labels = images(), torch.tensor([1, 1, 2, 2])
    torch.manual_seed(0)
    a = model(x, MIXED, labels)
    torch.manual_seed(1)
    b = model(x, MIXED, labels)
    torch.testing.assert_close(a.part_logits, b.part_logits)  # only the graph branch is random
    assert not torch.allclose(a.graph, b.graph)
    model.eval()
    torch.testing.assert_close(model(x, MIXED, labels).graph, model(x, MIXED, labels).graph)


def test_channels_last_float64() -> None:
    model = tiny_ddag().double().eval()
    x = images(dtype=F64)
    expected = model(x, MIXED, torch.tensor([0, 1, 0, 1]))
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last), MIXED, torch.tensor([0, 1, 0, 1]))
    for a, b in zip(out, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------- embeddings


def test_embed_modes_and_flip() -> None:
    model = tiny_ddag().eval()
    x = images()
    out = model(x, MIXED)
    torch.testing.assert_close(model.embed(x, MIXED), F.normalize(out.part_features, dim=1))
    torch.testing.assert_close(model.embed(x, MIXED, mode="fc"), F.normalize(out.features, dim=1))
    expected = model.embed(x, MIXED) + model.embed(x.flip(-1), MIXED)
    torch.testing.assert_close(model.embed(x, MIXED, flip=True), expected, rtol=1e-5, atol=1e-6)
    for modality in (Modality.VISIBLE, Modality.INFRARED):
        torch.testing.assert_close(model.embed(x, modality), model.embed(x, torch.full((4,), int(modality))))
    assert not torch.allclose(model.embed(x, 0), model.embed(x, 1))


# ----------------------------------------------------------------------------------------- training


def test_gradients_reach_every_parameter_and_are_finite() -> None:
    model = tiny_ddag().train()
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    modalities = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    criterion = DDAGCriterion()
    criterion.running_sum.fill_(3.0)
    criterion.running_count.fill_(1.0)
    criterion.set_epoch(1)  # w = 1/4: the graph loss sends a gradient
    x = images(8)
    out = model(x, modalities, labels=labels)
    loss = criterion.total(criterion(out, ImageSample(x, labels, labels, modalities)))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        if name in ("neck.bias", "iwpa.bottleneck.bias"):
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.cgsa.attentions.W.grad.abs().sum() > 0 and model.iwpa.gate.grad.abs().sum() > 0


def test_first_epoch_graph_sends_no_gradient() -> None:
    model = tiny_ddag().train()
    labels, x = torch.tensor([0, 0, 1, 1]), images()
    criterion = DDAGCriterion()
    criterion.total(criterion(model(x, MIXED, labels), ImageSample(x, labels, labels, MIXED))).backward()
    assert not model.cgsa.attentions.W.grad.any()  # w = 0 in epoch 0, as officially
    assert model.classifier.weight.grad.abs().sum() > 0


def test_bf16_autocast() -> None:
    model = tiny_ddag().train()
    labels = torch.tensor([0, 0, 1, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), MIXED, labels)
    assert out.logits.dtype == torch.bfloat16
    terms = DDAGCriterion()(out, ImageSample(None, labels, labels, MIXED))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        embedded = model.embed(images(), MIXED)
    assert torch.isfinite(embedded).all()
    torch.testing.assert_close(embedded.float(), model.embed(images(), MIXED), rtol=0.1, atol=0.05)


def test_compile(fresh_dynamo: None) -> None:
    model = tiny_ddag(backbone=tiny_backbone()).eval()
    x = images()
    embed = torch.compile(model.embed, backend="eager")  # the stems gather by modality: graph breaks
    torch.testing.assert_close(embed(x, MIXED), model.embed(x, MIXED))
    labels = torch.tensor([0, 0, 1, 1])
    out = model(x, MIXED, labels)
    batch = ImageSample(x, labels, labels, MIXED)
    eager, compiled = DDAGCriterion(), DDAGCriterion()
    fused = torch.compile(compiled, backend="eager", fullgraph=True)
    for _ in range(2):  # the buffers are updated in place inside the compiled graph
        got, expected = fused(out, batch), eager(out, batch)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value)
    torch.testing.assert_close(compiled.running_sum, eager.running_sum)
    assert float(compiled.running_count) == 2.0


# ------------------------------------------------------------------------------------------ criterion


def plain_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    total = torch.zeros((), dtype=F64)
    for row, y in zip(logits.to(F64), labels.tolist(), strict=True):
        total = total + (torch.log(torch.exp(row - row.max()).sum()) + row.max() - row[y])
    return total / len(labels)


def plain_triplet(x: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """The official ``OriTripletLoss``: loop over anchors, hardest positive (self included) and negative."""
    dist = loop_distance_matrix(x)
    losses = []
    for i in range(len(labels)):
        same = labels == labels[i]
        if (~same).any():
            losses.append(torch.relu(dist[i][same].max() - dist[i][~same].min() + margin))
        else:
            losses.append(torch.zeros((), dtype=F64))
    return torch.stack(losses).mean()


def plain_nll(log_probs: Tensor, labels: Tensor) -> Tensor:
    return -sum(log_probs[i, y].to(F64) for i, y in enumerate(labels.tolist())) / len(labels)


def random_output(n: int, k: int, d: int, seed: int, dtype: torch.dtype = F64) -> DDAGOutput:
    gen = torch.Generator().manual_seed(seed)
    pooled = torch.rand(n, d, generator=gen, dtype=F64).to(dtype)
    logits = (3 * torch.randn(n, k, generator=gen, dtype=F64)).to(dtype)
    part = (3 * torch.randn(n, k, generator=gen, dtype=F64)).to(dtype)
    graph = torch.randn(n, k, generator=gen, dtype=F64).log_softmax(1).to(dtype)
    return DDAGOutput(pooled, pooled, logits, pooled, part, graph)


def test_criterion_against_plain_reference_over_epochs() -> None:
    """Every term, the total and the dynamic weight over three epochs of three batches, in float64."""
    labels = torch.tensor([2, 2, 0, 0, 1, 2, 0, 1])
    criterion = DDAGCriterion(lambda_triplet=0.7, lambda_part=1.3, margin=0.4)
    previous_mean = None
    for epoch in range(3):
        criterion.set_epoch(epoch)
        sums = []
        for step in range(3):
            out = random_output(8, 3, 5, seed=10 * epoch + step)
            terms = criterion(out, ImageSample(None, labels, None, None))
            ce, tri = plain_cross_entropy(out.logits, labels), plain_triplet(out.pooled, labels, 0.4)
            part, graph = plain_cross_entropy(out.part_logits, labels), plain_nll(out.graph, labels)
            for key, value in (("ce", ce), ("triplet", tri), ("part", part), ("graph", graph)):
                torch.testing.assert_close(terms[key], value, rtol=1e-12, atol=1e-12)
            loss_p = float(ce + 0.7 * tri + 1.3 * part)
            w = 0.0 if previous_mean is None else 1.0 / (1.0 + previous_mean)
            assert criterion.graph_weight == pytest.approx(w, rel=1e-12, abs=0)
            torch.testing.assert_close(criterion.total(terms), torch.tensor(loss_p + w * float(graph), dtype=F64))
            sums.append(loss_p)
        previous_mean = sum(sums) / len(sums)
    criterion.set_epoch(3)
    assert int(criterion.epoch) == 3
    assert criterion.weights["graph"] == criterion.graph_weight == pytest.approx(1 / (1 + previous_mean), rel=1e-12)


def test_criterion_fixed_weight_sum_reduction_and_eval_mode() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    out = random_output(4, 2, 3, seed=1)
    batch = ImageSample(None, labels, None, None)
    fixed = DDAGCriterion(graph_weight=0.5, graph_reduction="sum")
    terms = fixed(out, batch)
    torch.testing.assert_close(terms["graph"], plain_nll(out.graph, labels) * 4)
    torch.testing.assert_close(
        fixed.total(terms), terms["ce"] + terms["triplet"] + terms["part"] + 0.5 * terms["graph"]
    )
    assert fixed.graph_weight == 0.5 and fixed.weights == {"ce": 1.0, "triplet": 1.0, "part": 1.0, "graph": 0.5}
    criterion = DDAGCriterion().eval()
    criterion(out, batch)
    assert float(criterion.running_count) == 0.0  # eval mode accumulates nothing


def test_dynamic_weight_is_state_and_survives_a_resume() -> None:
    """Save the criterion's state_dict (weights_only) mid-epoch and at an epoch end: the resumed run is identical."""
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    batches = [[random_output(6, 3, 4, seed=10 * e + s) for s in range(3)] for e in range(3)]
    batch = ImageSample(None, labels, None, None)
    assert set(DDAGCriterion().state_dict()) == {"running_sum", "running_count", "previous_epoch_mean", "epoch"}

    def run(criterion: DDAGCriterion, start: tuple[int, int], stop: tuple[int, int] | None = None) -> list[float]:
        totals = []
        for epoch in range(start[0], 3):
            criterion.set_epoch(epoch)
            for step in range(start[1] if epoch == start[0] else 0, 3):
                if (epoch, step) == stop:
                    return totals
                totals.append(float(criterion.total(criterion(batches[epoch][step], batch))))
        return totals

    def round_trip(criterion: DDAGCriterion) -> DDAGCriterion:
        buffer = io.BytesIO()
        torch.save({"criterion": criterion.state_dict()}, buffer)
        buffer.seek(0)
        resumed = DDAGCriterion()
        resumed.load_state_dict(torch.load(buffer, weights_only=True)["criterion"])
        return resumed

    expected = run(DDAGCriterion(), (0, 0))
    assert len(expected) == 9
    for stop in ((1, 2), (2, 0)):  # mid-epoch, and at the start of an epoch (the previous one not yet closed)
        first = DDAGCriterion()
        totals = run(first, (0, 0), stop)
        totals += run(round_trip(first), stop)
        assert totals == pytest.approx(expected, rel=1e-12, abs=0)
    # The official script restarts the weight at 0: a fresh criterion at epoch 2 gives a different objective.
    fresh = DDAGCriterion()
    fresh.set_epoch(2)
    assert fresh.graph_weight == 0.0 and run(fresh, (2, 0)) != pytest.approx(expected[6:])


def test_set_epoch_is_idempotent_and_keeps_the_weight_without_batches() -> None:
    criterion = DDAGCriterion()
    labels = torch.tensor([0, 0, 1, 1])
    criterion(random_output(4, 2, 3, seed=0), ImageSample(None, labels, None, None))
    criterion.set_epoch(0)
    assert float(criterion.running_count) == 1.0
    criterion.set_epoch(1)
    w = criterion.graph_weight
    assert 0 < w < 1
    criterion.set_epoch(1)
    criterion.set_epoch(3)  # no batch in epochs 1, 2: the last mean stays
    assert criterion.graph_weight == w and int(criterion.epoch) == 3
    assert "graph_weight=dynamic" in repr(criterion) and "HardTripletLoss(margin=0.3" in repr(criterion)


def test_trainer_carries_the_dynamic_weight_across_a_resume(tmp_path: Path) -> None:
    """Through the engine: the Trainer closes the epochs (set_epoch) and checkpoints the criterion's buffers."""
    from vireid_layers.engine import Trainer, TrainerConfig

    labels, modalities = torch.arange(4).repeat(2), torch.tensor([0] * 4 + [1] * 4)
    data = [ImageSample(images(8, 32, 16, seed=s), labels, labels, modalities) for s in range(2)]

    def make(run_dir: Path, epochs: int, seed: int = 0) -> Trainer:
        torch.manual_seed(seed)
        model = DDAG(4, backbone=tiny_backbone(), graph_hidden=16)
        return Trainer(
            model,
            DDAGCriterion(),
            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
            data,
            TrainerConfig(device="cpu", run_dir=run_dir, epochs=epochs, progress=False, deterministic=True),
            forward=lambda m, b: m(b.image, b.modality, labels=b.identity),
        )

    full = make(tmp_path / "full", 3)
    full.fit()
    totals = [h["total"] for h in full.history]
    assert 0 < full.criterion.graph_weight < 1 and int(full.criterion.epoch) == 2

    make(tmp_path / "cut", 2).fit()
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert int(state["criterion"]["epoch"]) == 1 and float(state["criterion"]["running_count"]) == 2
    torch.manual_seed(999)
    resumed = make(tmp_path / "cut", 3, seed=7)
    resumed.fit(resume=tmp_path / "cut" / "last.pt")
    assert resumed.criterion.graph_weight == full.criterion.graph_weight
    for key, value in full.criterion.state_dict().items():
        assert torch.equal(value, resumed.criterion.state_dict()[key]), key
    assert [h["total"] for h in resumed.history] == totals
    for key, value in full.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key


@given(
    perm_seed=st.integers(0, 2**16),
    relabel=st.permutations(range(5)),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0]),
)
def test_criterion_properties(perm_seed: int, relabel: list[int], scale: float) -> None:
    """Finite and non-negative (also for coinciding features), invariant to batch order and to renaming classes."""
    gen = torch.Generator().manual_seed(perm_seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    base = random_output(8, 5, 6, seed=perm_seed, dtype=torch.float32)
    pooled = base.pooled * scale
    out = base._replace(pooled=pooled, features=pooled, part_features=pooled)
    criterion = DDAGCriterion(graph_weight=0.5)
    terms = criterion(out, ImageSample(None, labels, None, None))
    assert all(torch.isfinite(v) and v >= 0 for v in terms.values())
    perm = torch.randperm(8, generator=gen)
    permuted = criterion(DDAGOutput(*(t[perm] for t in out)), ImageSample(None, labels[perm], None, None))
    inverse = torch.argsort(torch.tensor(relabel))
    renamed_out = out._replace(
        logits=out.logits[:, inverse], part_logits=out.part_logits[:, inverse], graph=out.graph[:, inverse]
    )
    renamed = criterion(renamed_out, ImageSample(None, torch.tensor(relabel)[labels], None, None))
    for key, value in terms.items():
        torch.testing.assert_close(permuted[key], value, rtol=1e-5, atol=1e-6)  # fp32 sums in another order
        torch.testing.assert_close(renamed[key], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(criterion.total(permuted), criterion.total(terms), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("labels", "modalities"),
    [
        (torch.tensor([3, 3, 3, 3]), torch.tensor([0, 1, 0, 1])),  # one identity: no negative
        (torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 1, 1])),  # one modality
        (torch.tensor([2]), torch.tensor([0])),  # one image
    ],
)
def test_criterion_degenerate_batches(labels: Tensor, modalities: Tensor) -> None:
    n = len(labels)
    out = random_output(n, 4, 6, seed=0, dtype=torch.float32)
    leaves = [t.clone().requires_grad_() for t in out]
    out = DDAGOutput(*leaves)
    criterion = DDAGCriterion(graph_weight=1.0)
    terms = criterion(out, ImageSample(None, labels, None, modalities))
    total = criterion.total(terms)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    total.backward()
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in leaves)


def test_model_degenerate_batches_end_to_end() -> None:
    model = tiny_ddag().train()
    criterion = DDAGCriterion(graph_weight=1.0)
    for labels, modalities in (
        (torch.tensor([1, 1, 1, 1]), MIXED),
        (torch.tensor([0, 1, 0, 1]), torch.zeros(4, dtype=torch.long)),
    ):
        x = images()
        loss = criterion.total(criterion(model(x, modalities, labels), ImageSample(x, labels, None, modalities)))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_non_finite_input_is_not_hidden() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    out = random_output(4, 2, 3, seed=0, dtype=torch.float32)
    bad = out._replace(logits=out.logits.clone().index_fill_(0, torch.tensor([1]), float("nan")))
    criterion = DDAGCriterion()
    terms = criterion(bad, ImageSample(None, labels, None, None))
    assert torch.isnan(terms["ce"]) and torch.isnan(criterion.total(terms))
    with pytest.raises(ValueError, match="diverged"):
        criterion.set_epoch(1)  # a NaN epoch mean is refused, not turned into a weight
    assert int(criterion.epoch) == 0 and criterion.graph_weight == 0.0  # and the state is left as it was


def test_nan_features_give_a_nan_triplet_term() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    out = random_output(4, 2, 3, seed=0, dtype=torch.float32)
    pooled = out.pooled.clone()
    pooled[1, 0] = float("nan")
    terms = DDAGCriterion()(out._replace(pooled=pooled), ImageSample(None, labels, None, None))
    assert torch.isnan(terms["triplet"])


# ---------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        leaves = [torch.full((2, 3), float(10 * rank + i), requires_grad=True) for i in range(6)]
        gathered = DDAGOutput(*leaves).gather()
        without_graph = DDAGOutput(*[t.detach() for t in leaves[:5]], None).gather()
        weights = torch.arange(4.0).unsqueeze(1)  # a different weight for every gathered row
        sum((t * weights).sum() for t in gathered).backward()
        torch.save(
            {
                "gathered": [t.detach() for t in gathered],
                "graph_none": without_graph.graph is None,
                "pooled": without_graph.pooled,
                "grads": [t.grad for t in leaves],
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def test_output_gathers_itself_across_ranks(tmp_path: Path) -> None:
    # fork: the workers inherit the imported modules (spawn re-imports torch and the package in each).
    args = (2, _free_port(), str(tmp_path))
    torch.multiprocessing.start_processes(_gather_worker, args=args, nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["graph_none"]
        for i, t in enumerate(result["gathered"]):  # rank 0's rows, then rank 1's
            torch.testing.assert_close(
                t, torch.tensor([i, i, 10 + i, 10 + i], dtype=torch.float32)[:, None].expand(4, 3)
            )
        torch.testing.assert_close(result["pooled"], result["gathered"][0])
        # Each rank receives the gradient of its own rows (rows 2 rank, 2 rank + 1 of the weights), summed over
        # the 2 ranks that computed the same loss (DDP's averaging divides by the world size again).
        for grad in result["grads"]:
            expected = 2 * torch.tensor([2.0 * rank, 2.0 * rank + 1])[:, None].expand(2, 3)
            torch.testing.assert_close(grad, expected)


def test_gather_without_process_group_is_identity() -> None:
    out = random_output(2, 2, 3, seed=0)
    assert out.gather() is out


# ------------------------------------------------------------------------------------------------ state


def test_init_and_reset_parameters() -> None:
    model = DDAG(300, backbone="resnet18")
    weight = model.neck.weight.detach()
    assert abs(weight.mean() - 1) < 3e-3 and 0.007 < weight.std() < 0.013
    assert torch.equal(model.neck.bias, torch.zeros(512)) and not model.neck.bias.requires_grad
    assert model.classifier.bias is None and 0.0009 < model.classifier.weight.std() < 0.0011
    assert torch.equal(model.iwpa.gate, torch.full((3,), 1 / 3))
    with torch.no_grad():
        model.neck.weight.fill_(3.0)
        model.iwpa.gate.fill_(2.0)
        model.cgsa.out_att.W.zero_()
    before = model.backbone.stages[0][0].conv1.weight.clone()
    model.reset_parameters()
    assert abs(model.neck.weight.mean() - 1) < 3e-3 and torch.equal(model.iwpa.gate, torch.full((3,), 1 / 3))
    assert model.cgsa.out_att.W.abs().sum() > 0
    assert torch.equal(model.backbone.stages[0][0].conv1.weight, before)  # the backbone is kept


def test_state_dict_round_trip_weights_only() -> None:
    model = tiny_ddag(seed=3).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = tiny_ddag(seed=4).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    torch.testing.assert_close(fresh.embed(images(), MIXED), model.embed(images(), MIXED))


def test_extra_repr() -> None:
    model = tiny_ddag()
    assert model.extra_repr() == (
        "num_classes=5, embed_dim=512, parts=3, iwpa_form='official', graph_hidden=16, graph_heads=4"
    )
    assert "(iwpa): IWPA(" in repr(model) and "(cgsa): CGSA(" in repr(model)
    assert DDAGCriterion(graph_weight=0.5).extra_repr() == (
        "lambda_triplet=1.0, lambda_part=1.0, graph_weight=0.5, graph_reduction='mean'"
    )


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": "5"}, TypeError, "num_classes"),
        ({"parts": 0}, ValueError, "parts"),
        ({"iwpa_form": "textbook"}, ValueError, "form"),
        ({"graph_hidden": 0}, ValueError, "graph_hidden"),
        ({"graph_heads": 1.5}, TypeError, "graph_heads"),
        ({"graph_dropout": 1.5}, ValueError, "dropout"),
        ({"graph_output_elu": 1}, TypeError, "output_elu"),
        ({"backbone": 3}, TypeError, "backbone"),
        ({"backbone_kwargs": [1]}, TypeError, "backbone_kwargs"),
    ],
)
def test_exception_constructor(kwargs: dict, error: type, match: str) -> None:
    num_classes = kwargs.pop("num_classes", 5)
    kwargs = {"backbone": "resnet18", **kwargs}
    with pytest.raises(error, match=match):
        DDAG(num_classes, **kwargs)


def test_exception_forward_and_embed() -> None:
    model = tiny_ddag().eval()
    with pytest.raises(ValueError, match="labels"):
        model(images(), MIXED, labels=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="labels"):
        model(images(), MIXED, labels=torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="modality"):
        model(images(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(3, 64, 32), 0)
    with pytest.raises(ValueError, match="mode"):
        model.embed(images(), MIXED, mode="pool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flip"):
        model.embed(images(), MIXED, flip=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lambda_triplet": -1.0}, ValueError, "lambda_triplet"),
        ({"lambda_part": math.inf}, ValueError, "lambda_part"),
        ({"lambda_part": "1"}, TypeError, "lambda_part"),
        ({"graph_weight": -0.5}, ValueError, "graph_weight"),
        ({"graph_weight": math.nan}, ValueError, "graph_weight"),
        ({"graph_reduction": "none"}, ValueError, "graph_reduction"),
        ({"graph_reduction": "max"}, ValueError, "reduction"),
        ({"margin": -0.1}, ValueError, "margin"),
    ],
)
def test_exception_criterion_constructor(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DDAGCriterion(**kwargs)


def test_exception_criterion_calls() -> None:
    criterion = DDAGCriterion()
    labels = torch.tensor([0, 0, 1, 1])
    out = random_output(4, 2, 3, seed=0)
    with pytest.raises(ValueError, match=r"out\.graph"):
        criterion(out._replace(graph=None), ImageSample(None, labels, None, None))
    with pytest.raises(TypeError, match="DDAGOutput"):
        criterion(tuple(out), ImageSample(None, labels, None, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"batch\.identity.*\[0, 2\).*\[0, 5\]"):
        criterion(out, ImageSample(None, torch.tensor([0, 5, 0, 1]), None, None))
    with pytest.raises(ValueError, match=r"batch\.identity"):
        criterion(out, ImageSample(None, torch.tensor([0, 1]), None, None))
    with pytest.raises(TypeError, match=r"batch\.identity"):
        criterion(out, ImageSample(None, torch.tensor([0.0, 1.0, 0.0, 1.0]), None, None))
    with pytest.raises(ValueError, match="missing"):
        criterion.total({"ce": torch.tensor(1.0)})
    criterion.set_epoch(2)
    with pytest.raises(ValueError, match="go back"):
        criterion.set_epoch(1)
    with pytest.raises(TypeError, match="epoch"):
        criterion.set_epoch(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch"):
        criterion.set_epoch(-1)
