"""Every public layer, loss, model and the metrics on every device, compared with a float64 CPU reference.

Each test takes the ``target_device`` fixture (``tests/conftest.py``): it runs on the CPU always, on ``cuda``
(marked ``cuda``, skipped without a GPU) and on the ``--device`` of the run when that is another one. A case
builds its module and inputs on the CPU from a fixed seed, in float32, then

* **float64**: runs forward and backward on the target device in float64 and on the CPU in float64. The two must
  agree to a tolerance derived from float64's precision, the reduction length and the depth of the computation
  (below). Every case, the deep networks included, is compared this way.
* **float32**: runs forward and backward on the target device in float32 (TF32 disabled, ``exact_float32``) and
  compares with the float64 CPU run, to a tolerance derived the same way from float32's precision. Deep networks
  (the backbone, DEEN, AGW) are not compared in float32: batch statistics over a few samples amplify rounding
  through the depth (the brief's rule: float64, or a tolerance derived from dtype and depth).

Tolerance: a dot product of :math:`k` terms computed in precision :math:`u` (unit roundoff) has a relative error
of at most :math:`k u` and typically :math:`\\sqrt{k}\\, u`; a chain of :math:`d` such reductions adds them, and the
backward pass doubles the chain. With a safety factor of 32 for the conditioning of normalisations, softmaxes
and square roots: ``tol = 32 * 2 * d * sqrt(k) * u``, applied to every tensor relative to its largest magnitude
(``|got - ref| <= tol * (max|ref| + |ref|)``). A wrong kernel (wrong index, wrong reduction, a dropped term)
gives errors of the size of the values themselves, far above it. Integer outputs (indices, counts) must be equal.

Host-side helpers that only take and return Python numbers have no device to run on (:data:`HOST_ONLY`);
:func:`test_every_public_name_has_a_device_case` keeps the list of cases complete.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

import vireid_layers
from vireid_layers import (
    CGSA,
    DEE,
    IWPA,
    MAM,
    MFA,
    PAM,
    CenterClusterLoss,
    CMCCLoss,
    CPMLoss,
    DynamicDualAggregation,
    GeM,
    GraphAttentionLoss,
    HardTripletLoss,
    Modality,
    ModalityClassifiers,
    MutualMeanLoss,
    NonLocal,
    OrthogonalLoss,
    PEFLoss,
    SeparationLoss,
    SobelEdges,
    WRTLoss,
    build_two_stream_backbone,
    center_cluster_loss,
    cmcc_loss,
    cpm_loss,
    gem,
    graph_attention,
    graph_attention_loss,
    hard_triplet_loss,
    merge_by_modality,
    mutual_mean_loss,
    orthogonal_loss,
    separation_loss,
    sobel_edges,
    sobel_kernels,
    split_by_modality,
    wrt_loss,
)
from vireid_layers.data import ImageRecord, ImageSample, VIReIDDataset
from vireid_layers.evaluation import (
    SYSUProtocol,
    evaluate_protocol,
    exclude_sysu_indoor_camera,
    retrieval_metrics,
)
from vireid_layers.models import AGW, DEEN, AGWCriterion, DEENCriterion

CPU = torch.device("cpu")
F32, F64 = torch.float32, torch.float64
UNIT_ROUNDOFF = {F32: 2.0**-24, F64: 2.0**-53}
SAFETY = 32.0

#: Public names that take and return Python numbers only: nothing runs on a device.
HOST_ONLY = {
    "dynamic_aggregation_weight": "a float of the previous epoch's mean loss -> a float",
    "mean_classifier_momentum": "an epoch number -> a float",
}
#: Public names that are types or constants, not computations.
NOT_COMPUTATIONS = {"Modality", "ModalityLearningOutput", "PAMOutput", "__version__"}


def tolerance(dtype: torch.dtype, k: int, depth: int) -> float:
    """``SAFETY * 2 * depth * sqrt(k) * u``: forward and backward through ``depth`` reductions of ``k`` terms."""
    return SAFETY * 2 * depth * math.sqrt(k) * UNIT_ROUNDOFF[dtype]


# --------------------------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One computation: ``build()`` returns ``(callable, args)`` on the CPU in float32, from the current seed.

    ``k`` is the longest reduction an output element goes through, ``depth`` the number of chained reductions
    (normalisations and softmaxes count as one each). ``deep`` cases are compared in float64 only; ``grad=False``
    cases (inference: the embeddings) run under ``torch.no_grad()``.
    """

    name: str
    covers: tuple[str, ...]
    build: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]
    k: int
    depth: int
    deep: bool = False
    grad: bool = True


def _g(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 1, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, generator=_g(seed))


def _rand(*shape: int, seed: int = 1, low: float = 0.0) -> Tensor:
    return low + torch.rand(*shape, generator=_g(seed))


def _perturbed(module: nn.Module, scale: float = 0.1, seed: int = 2) -> nn.Module:
    """Add seeded noise to every parameter, so zero-initialised branches (MFA, NonLocal) compute something."""
    g = _g(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def _labels(identities: int, per_identity: int, seed: int = 3) -> Tensor:
    labels = torch.arange(identities).repeat_interleave(per_identity)
    return labels[torch.randperm(labels.numel(), generator=_g(seed))] * 7 + 2  # shuffled, not 0..P-1


def _modalities(n: int, seed: int = 4) -> Tensor:
    return torch.arange(n).remainder(2)[torch.randperm(n, generator=_g(seed))]


def _official_batch(identities: int, instances: int) -> tuple[Tensor, Tensor]:
    """Labels and modalities of the official sampler's layout, ``identities x instances x 2`` rows."""
    labels = torch.arange(identities).repeat_interleave(instances).repeat(2)
    return labels, torch.arange(2).repeat_interleave(identities * instances)


def _cgsa() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _perturbed(CGSA(16, num_classes=5, hidden=8, heads=2, dropout=0.0)), (_randn(8, 16), _labels(4, 2) % 5)


def _graph_attention() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    labels = _labels(3, 3)
    return graph_attention, (_randn(9, 6), labels[:, None] == labels[None, :], _randn(6, seed=5), _randn(6, seed=6))


def _dee() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _perturbed(DEE(8, dropout=0.0)), (_randn(4, 8, 6, 3),)


def _gem_module() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return GeM(learnable=True), (_rand(4, 8, 6, 3, low=0.1),)


def _gem_function() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return (lambda x: gem(x, p=3.0)), (_rand(4, 8, 6, 3, low=0.1),)


def _iwpa(form: str) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        iwpa = _perturbed(IWPA(16, parts=3, form=form))
        return iwpa, (_randn(4, 16, 6, 3), _randn(4, 16, seed=5))

    return build


def _mam() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _perturbed(MAM(16, reduction=4)), (_randn(4, 16, 6, 4),)


def _mfa(form: str) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _perturbed(MFA(16, 8, stride=2, form=form)), (_randn(4, 16, 4, 2), _randn(4, 8, 8, 4, seed=5))

    return build


def _non_local(form: str) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _perturbed(NonLocal(16, form=form)), (_randn(4, 16, 6, 3),)

    return build


def _pam() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return _perturbed(PAM(16, num_parts=3)), (_randn(4, 16, 6, 4),)


def _sobel_module() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return SobelEdges(combine="magnitude"), (_randn(2, 3, 12, 6),)


def _sobel_function() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return (lambda x: sobel_edges(x, combine="abs", stride=2)), (_randn(2, 3, 12, 6),)


def _sobel_kernels() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    # The kernels are built where the probe tensor lives, in its dtype.
    return (lambda probe: sobel_kernels(device=probe.device, dtype=probe.dtype) * probe), (torch.ones(()),)


def _split_merge() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    def fn(x: Tensor, modalities: Tensor) -> Tensor:
        vis, ir, vis_index, ir_index = split_by_modality(x, modalities)
        return merge_by_modality(2 * vis, 3 * ir, vis_index, ir_index)

    return fn, (_randn(6, 3, 4, 2), _modalities(6))


def _backbone() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return build_two_stream_backbone("resnet18"), (_randn(4, 3, 32, 16), _modalities(4))


def _loss_inputs(n_ids: int = 4, per_id: int = 4, dim: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    return _randn(n_ids * per_id, dim), _labels(n_ids, per_id), _modalities(n_ids * per_id)


def _center_cluster(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        x, labels, _ = _loss_inputs()
        return (CenterClusterLoss(margin=0.7) if module else (lambda e, y: center_cluster_loss(e, y))), (x, labels)

    return build


def _cmcc(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        labels, modalities = _official_batch(3, 2)
        return (CMCCLoss() if module else cmcc_loss), (_randn(12, 16), labels, modalities)

    return build


def _cpm(module: bool, form: str = "official") -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        labels, modalities = _official_batch(3, 2)
        fn = CPMLoss(margin=0.2, form=form) if module else (lambda o, g, y, m: cpm_loss(o, g, y, m, form=form))
        return fn, (_randn(12, 16), _randn(2, 12, 16, seed=5), labels, modalities)

    return build


def _graph_loss(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        logits = _randn(8, 5)
        fn = GraphAttentionLoss() if module else graph_attention_loss
        return (lambda z, y: fn(z.log_softmax(1), y)), (logits, _labels(4, 2) % 5)

    return build


def _triplet(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        x, labels, _ = _loss_inputs()
        return (HardTripletLoss(margin=0.3) if module else hard_triplet_loss), (x, labels)

    return build


def _wrt(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        x, labels, _ = _loss_inputs()
        return (WRTLoss() if module else wrt_loss), (x, labels)

    return build


def _modality_classifiers() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    heads = _perturbed(ModalityClassifiers(16, 30))

    def fn(x: Tensor, labels: Tensor, modalities: Tensor) -> Any:
        heads.update_mean(0.2)
        return heads(x, labels, modalities)

    fn.module = heads  # type: ignore[attr-defined]  # moved and differentiated like a module
    x, labels, modalities = _loss_inputs()
    return fn, (x, labels, modalities)


def _mutual_mean(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        fn = MutualMeanLoss(direction="paper") if module else mutual_mean_loss
        return fn, (_randn(8, 10), _randn(8, 10, seed=5), _modalities(8))

    return build


def _orthogonal(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (OrthogonalLoss() if module else orthogonal_loss), (_randn(2, 8, 16),)

    return build


def _pef() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    return PEFLoss(weights=None), (_rand(2, 64, 16, 16), _randn(2, 3, 64, 64, seed=5), torch.tensor([0, 1]))


def _separation(module: bool) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (SeparationLoss() if module else separation_loss), (_rand(4, 3, 6, 4),)

    return build


def _dynamic_dual_aggregation() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    def fn(losses: Tensor) -> Tensor:
        dda = DynamicDualAggregation()
        for epoch_losses in losses:  # two epochs of per-batch losses that live on the device
            for value in epoch_losses:
                dda.update(value)
            dda.step_epoch()
        return torch.tensor(dda.weight, dtype=torch.float64)

    return fn, (_rand(2, 3, low=0.5),)


def _deen(mode: str) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        model = DEEN(20, backbone="resnet18", dee_dropout=0.0)
        _perturbed(model.mfa, 0.05)
        labels, modalities = _official_batch(2, 2)
        images = _randn(8, 3, 32, 16)
        if mode == "train":
            criterion = DEENCriterion()

            def train(images: Tensor, modalities: Tensor) -> Any:
                out = model(images, modalities)
                batch = ImageSample(images, labels.to(images.device), labels.to(images.device), modalities)
                return out, criterion(out, batch)

            train.module = model  # type: ignore[attr-defined]
            return train, (images, modalities)
        model.eval()

        def embed(images: Tensor, modalities: Tensor) -> Tensor:
            return model.embed(images, modalities, mode="official", flip=True)

        embed.module = model  # type: ignore[attr-defined]
        return embed, (images, modalities)

    return build


def _agw(mode: str) -> Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]]:
    def build() -> tuple[Callable[..., Any], tuple[Any, ...]]:
        model = AGW(20, backbone="resnet18", non_local_blocks=(0, 1, 1, 0))
        _perturbed(model, 0.01)
        labels, modalities = _official_batch(2, 2)
        images = _randn(8, 3, 32, 16)
        if mode == "train":
            criterion = AGWCriterion()

            def train(images: Tensor, modalities: Tensor) -> Any:
                out = model(images, modalities)
                batch = ImageSample(images, labels.to(images.device), labels.to(images.device), modalities)
                return out, criterion(out, batch)

            train.module = model  # type: ignore[attr-defined]
            return train, (images, modalities)
        model.eval()

        def embed(images: Tensor, modalities: Tensor) -> Tensor:
            return model.embed(images, modalities, flip=True)

        embed.module = model  # type: ignore[attr-defined]
        return embed, (images, modalities)

    return build


CASES = [
    Case("CGSA", ("CGSA",), _cgsa, k=16, depth=4),
    Case("graph_attention", ("graph_attention",), _graph_attention, k=9, depth=2),
    Case("DEE", ("DEE",), _dee, k=8 * 9, depth=3),
    Case("GeM", ("GeM",), _gem_module, k=18, depth=2),
    Case("gem", ("gem",), _gem_function, k=18, depth=2),
    Case("IWPA-official", ("IWPA",), _iwpa("official"), k=16 * 18, depth=4),
    Case("IWPA-paper", ("IWPA",), _iwpa("paper"), k=16 * 18, depth=4),
    Case("MAM", ("MAM",), _mam, k=16 * 24, depth=3),
    Case("MFA-official", ("MFA",), _mfa("official"), k=16 * 32, depth=5),
    Case("MFA-paper", ("MFA",), _mfa("paper"), k=16 * 32, depth=5),
    Case("NonLocal-official", ("NonLocal",), _non_local("official"), k=16 * 18, depth=4),
    Case("NonLocal-corrected", ("NonLocal",), _non_local("corrected"), k=16 * 18, depth=4),
    Case("PAM", ("PAM",), _pam, k=16 * 24, depth=3),
    Case("SobelEdges", ("SobelEdges",), _sobel_module, k=27, depth=2),
    Case("sobel_edges", ("sobel_edges",), _sobel_function, k=27, depth=1),
    Case("sobel_kernels", ("sobel_kernels",), _sobel_kernels, k=1, depth=1),
    Case("split/merge_by_modality", ("split_by_modality", "merge_by_modality"), _split_merge, k=1, depth=1),
    Case(
        "two-stream backbone",
        ("TwoStreamBackbone", "build_two_stream_backbone"),
        _backbone,
        k=512 * 9,
        depth=20,
        deep=True,
    ),
    Case("CenterClusterLoss", ("CenterClusterLoss",), _center_cluster(True), k=16 * 16, depth=3),
    Case("center_cluster_loss", ("center_cluster_loss",), _center_cluster(False), k=16 * 16, depth=3),
    Case("CMCCLoss", ("CMCCLoss",), _cmcc(True), k=16 * 12, depth=3),
    Case("cmcc_loss", ("cmcc_loss",), _cmcc(False), k=16 * 12, depth=3),
    Case("CPMLoss", ("CPMLoss",), _cpm(True), k=16 * 12, depth=3),
    Case("cpm_loss", ("cpm_loss",), _cpm(False), k=16 * 12, depth=3),
    Case("cpm_loss-paper", ("cpm_loss",), _cpm(False, "paper"), k=16 * 12, depth=3),
    Case("GraphAttentionLoss", ("GraphAttentionLoss",), _graph_loss(True), k=8, depth=2),
    Case("graph_attention_loss", ("graph_attention_loss",), _graph_loss(False), k=8, depth=2),
    Case("HardTripletLoss", ("HardTripletLoss",), _triplet(True), k=16 * 16, depth=2),
    Case("hard_triplet_loss", ("hard_triplet_loss",), _triplet(False), k=16 * 16, depth=2),
    Case("WRTLoss", ("WRTLoss",), _wrt(True), k=16 * 16, depth=3),
    Case("wrt_loss", ("wrt_loss",), _wrt(False), k=16 * 16, depth=3),
    Case("ModalityClassifiers", ("ModalityClassifiers",), _modality_classifiers, k=16 * 30, depth=3),
    Case("MutualMeanLoss", ("MutualMeanLoss",), _mutual_mean(True), k=10 * 8, depth=2),
    Case("mutual_mean_loss", ("mutual_mean_loss",), _mutual_mean(False), k=10 * 8, depth=2),
    Case("OrthogonalLoss", ("OrthogonalLoss",), _orthogonal(True), k=16 * 8, depth=2),
    Case("orthogonal_loss", ("orthogonal_loss",), _orthogonal(False), k=16 * 8, depth=2),
    Case("PEFLoss", ("PEFLoss",), _pef, k=64 * 9, depth=6),
    Case("SeparationLoss", ("SeparationLoss",), _separation(True), k=24 * 3, depth=2),
    Case("separation_loss", ("separation_loss",), _separation(False), k=24 * 3, depth=2),
    Case("DynamicDualAggregation", ("DynamicDualAggregation",), _dynamic_dual_aggregation, k=6, depth=1),
    Case("DEEN-train", ("DEEN", "DEENCriterion"), _deen("train"), k=512 * 9, depth=24, deep=True),
    Case("DEEN-embed", ("DEEN",), _deen("embed"), k=512 * 9, depth=24, deep=True, grad=False),
    Case("AGW-train", ("AGW", "AGWCriterion"), _agw("train"), k=512 * 9, depth=24, deep=True),
    Case("AGW-embed", ("AGW",), _agw("embed"), k=512 * 9, depth=24, deep=True, grad=False),
]
CASE_IDS = [c.name for c in CASES]


# --------------------------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------------------------


def _module_of(fn: Any) -> nn.Module | None:
    if isinstance(fn, nn.Module):
        return fn
    return getattr(fn, "module", None)


def run_case(case: Case, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """Outputs, then gradients of a fixed random projection of the outputs, as float64 CPU tensors.

    The module (and everything it owns) is built on the CPU in float32 from seed 0, then moved to ``device`` and
    ``dtype``; floating-point inputs are cast the same way and require grad. The projection weights are drawn
    on the CPU from the output shapes, so every device differentiates the same scalar.
    """
    torch.manual_seed(0)
    fn, args = case.build()
    module = _module_of(fn)
    if module is not None:
        module.to(device=device, dtype=dtype)
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []

    def move(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        if t.is_floating_point():
            return t.to(device=device, dtype=dtype).requires_grad_(t.dim() > 0)
        return t.to(device)

    args = tree_map(move, args)
    with torch.set_grad_enabled(case.grad):
        out = fn(*args)
    leaves = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
    assert leaves, f"{case.name}: no tensor output"
    for t in leaves:
        assert t.device.type == device.type, f"{case.name}: an output is on {t.device}, expected {device}"
    wrt = [a for a in tree_leaves(args) if isinstance(a, Tensor) and a.requires_grad] + params
    differentiable = [t for t in leaves if t.requires_grad]
    grads: list[Tensor] = []
    if differentiable and wrt:
        g = _g(99)
        scalar = sum(
            (t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(device=device, dtype=t.dtype)).sum()
            for t in differentiable
        )
        found = torch.autograd.grad(scalar, wrt, allow_unused=True)
        grads = [torch.zeros_like(w) if gr is None else gr for w, gr in zip(wrt, found, strict=True)]
    return [t.detach().to(CPU, torch.float64 if t.is_floating_point() else t.dtype) for t in leaves + grads]


def assert_close(case: Case, got: list[Tensor], ref: list[Tensor], tol: float) -> None:
    """``|got - ref| <= tol * (max|ref| + |ref|)`` for every tensor; integer tensors equal; NaNs at the same places.

    A reference tensor that is zero up to float64 rounding (``max|ref| <= 1e-9`` times the largest reference
    value of the case), e.g. the gradient of a bias followed by a training-mode BatchNorm, is the cancellation of
    terms of the case's scale: its rounding error in float32 is of the order of ``u`` times that scale, so it is
    compared against ``tol`` times the largest reference value of the case instead.
    """
    assert len(got) == len(ref), f"{case.name}: {len(got)} tensors vs {len(ref)} in the reference"
    scales = [b.nan_to_num().abs().max().item() for b in ref if b.is_floating_point() and b.numel()]
    case_scale = max(scales, default=0.0)
    for i, (a, b) in enumerate(zip(got, ref, strict=True)):
        assert a.shape == b.shape, f"{case.name} tensor {i}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        if not b.is_floating_point():
            assert torch.equal(a, b), f"{case.name} tensor {i}: integer outputs differ"
            continue
        assert torch.equal(a.isnan(), b.isnan()), f"{case.name} tensor {i}: NaNs differ"
        if not b.numel():
            continue
        a, b = a.nan_to_num(), b.nan_to_num()
        scale = b.abs().max().item()
        if scale <= 1e-9 * case_scale:
            scale = case_scale
        error = (a - b).abs()
        worst = (error - tol * (scale + b.abs())).max().item()
        assert worst <= 0, (
            f"{case.name} tensor {i} {tuple(b.shape)}: max |got - ref| = {error.max().item():.3e}, "
            f"allowed {tol:.2e} x (max|ref| = {scale:.3e} + |ref|)"
        )


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def references() -> dict[str, list[Tensor]]:
    """The float64 CPU run of every case, computed once per module (lazily, by name)."""
    return {}


def _reference(references: dict[str, list[Tensor]], case: Case) -> list[Tensor]:
    if case.name not in references:
        references[case.name] = run_case(case, CPU, F64)
    return references[case.name]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_matches_cpu(case: Case, target_device: torch.device, references: dict[str, list[Tensor]]) -> None:
    ref = _reference(references, case)
    got = run_case(case, target_device, F64)
    assert_close(case, got, ref, tolerance(F64, case.k, case.depth))


@pytest.mark.parametrize("case", [c for c in CASES if not c.deep], ids=[c.name for c in CASES if not c.deep])
def test_float32_matches_float64_cpu(
    case: Case, target_device: torch.device, references: dict[str, list[Tensor]], exact_float32: None
) -> None:
    ref = _reference(references, case)
    got = run_case(case, target_device, F32)
    assert_close(case, got, ref, tolerance(F32, case.k, case.depth))


def test_tolerance_catches_a_wrong_result() -> None:
    """The comparison fails on a perturbation of the size of a real bug (one element off by 1e-3 of the scale)."""
    case = next(c for c in CASES if c.name == "MAM")
    ref = run_case(case, CPU, F64)
    bad = [t.clone() for t in ref]
    bad[0].view(-1)[3] += 1e-3 * bad[0].abs().max()
    assert_close(case, ref, ref, tolerance(F32, case.k, case.depth))
    with pytest.raises(AssertionError, match="max \\|got - ref\\|"):
        assert_close(case, bad, ref, tolerance(F32, case.k, case.depth))


def test_every_public_name_has_a_device_case() -> None:
    covered = {name for case in CASES for name in case.covers}
    computations = set(vireid_layers.__all__) - NOT_COMPUTATIONS - set(HOST_ONLY)
    assert sorted(computations - covered) == []
    assert {"DEEN", "AGW", "DEENCriterion", "AGWCriterion"} <= covered
    assert set(HOST_ONLY) <= set(vireid_layers.__all__)


# ------------------------------------------------------------------------------------------------- the metrics


def _retrieval_inputs() -> tuple[Tensor, ...]:
    g = _g(7)
    num_q, num_g = 40, 30
    q_ids, g_ids = torch.randint(0, 8, (num_q,), generator=g), torch.randint(0, 8, (num_g,), generator=g)
    q_cams = torch.where(torch.rand(num_q, generator=g) < 0.5, 3, 6)
    g_cams = torch.tensor([1, 2, 4, 5]).repeat(num_g // 4 + 1)[:num_g]
    distances = (torch.rand(num_q, num_g, generator=g, dtype=torch.float64) * 16).round() / 16  # many exact ties
    return distances, q_ids, g_ids, q_cams, g_cams


def test_retrieval_metrics_match_cpu(target_device: torch.device) -> None:
    inputs = _retrieval_inputs()
    ref = retrieval_metrics(*inputs, exclude=exclude_sysu_indoor_camera, max_rank=10, chunk_size=16)
    got = retrieval_metrics(
        *(t.to(target_device) for t in inputs), exclude=exclude_sysu_indoor_camera, max_rank=10, chunk_size=16
    )
    assert got.cmc.device.type == target_device.type
    assert got.num_valid == ref.num_valid
    # Means of 0/1 indicators over the same valid queries: equal up to the order of the float64 sums.
    tol = 4 * ref.num_valid * UNIT_ROUNDOFF[F64]
    for name in ("cmc", "cmc_dedup", "average_precision"):
        a, b = getattr(got, name).cpu().double(), getattr(ref, name).double()
        assert torch.equal(a.isnan(), b.isnan()), name
        torch.testing.assert_close(a.nan_to_num(), b.nan_to_num(), rtol=0, atol=tol, msg=name)
    assert got.mAP == pytest.approx(ref.mAP, rel=0, abs=tol)
    assert got.mINP == pytest.approx(ref.mINP, rel=0, abs=tol)


def _sysu_dataset() -> VIReIDDataset:
    rng = random.Random(0)
    records = []
    for pid in (1, 2, 5, 7, 11, 12):
        for cam in range(1, 7):
            modality = Modality.INFRARED if cam in (3, 6) else Modality.VISIBLE
            records += [
                ImageRecord(Path(f"/d/SYSU-MM01/cam{cam}/{pid:04d}/{k:04d}.jpg"), pid, cam, modality)
                for k in range(1, rng.choice([1, 2, 5]) + 1)
            ]
    return VIReIDDataset("synthetic", Path("/d/SYSU-MM01"), (), tuple(records))


def _extractor(device: torch.device) -> Callable[[list[ImageRecord], Modality], Tensor]:
    """Features from each record's identity and file number (so independent of the call's grouping), on ``device``."""

    def extract(records: list[ImageRecord], modality: Modality) -> Tensor:
        rows = []
        for r in records:
            g = _g(1000 * r.identity + 10 * r.camera + int(r.path.stem))
            base = torch.zeros(16, dtype=torch.float64)
            base[r.identity % 16] = 1.0
            rows.append(base + 0.6 * torch.randn(16, generator=g, dtype=torch.float64))
        return torch.stack(rows).to(device)

    return extract


def test_protocol_evaluation_matches_cpu(target_device: torch.device) -> None:
    dataset, protocol = _sysu_dataset(), SYSUProtocol(num_trials=3)
    ref = evaluate_protocol(protocol, dataset, _extractor(CPU))
    got = evaluate_protocol(protocol, dataset, _extractor(target_device))
    assert [t.metrics.cmc.device.type for t in got.trials] == [target_device.type] * 3
    assert [t.metrics.num_valid for t in got.trials] == [t.metrics.num_valid for t in ref.trials]
    tol = 64 * UNIT_ROUNDOFF[F64]
    for key, (mean, std) in ref.reported().items():
        got_mean, got_std = got.reported()[key]
        assert got_mean == pytest.approx(mean, rel=0, abs=tol), key
        assert got_std == pytest.approx(std, rel=0, abs=tol), key


def test_device_fixture_follows_the_option(device: torch.device, pytestconfig: pytest.Config) -> None:
    """The `device` fixture is the configured one (``--device``, ``$VIREID_TEST_DEVICE``, else the CPU)."""
    import os

    expected = pytestconfig.getoption("--device") or os.environ.get("VIREID_TEST_DEVICE") or "cpu"
    assert device == torch.device(expected)
    assert torch.ones(1, device=device).device.type == device.type


def test_module_copies_are_independent() -> None:
    """Each run builds its own module: running a case twice on the CPU in float64 gives identical tensors."""
    case = CASES[CASE_IDS.index("DEE")]
    first, second = run_case(case, CPU, F64), run_case(case, CPU, F64)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
