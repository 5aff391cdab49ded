"""The benchmark cases of the ``layers`` suite: every layer and loss at the DEEN SYSU shapes.

Shapes (``deen_mpanet_mso.md`` §1.1, §1.3, §1.6, §1.7): 384×144 images, 6 identities × 4 images × 2
modalities = 48 images per batch, DEE after MFA3 turns 48 rows into 144 (original + 2 generated branches),
pooled embeddings are 2048-d.

Each :class:`Case` is built lazily (``case.build(device)``) so that only one case's tensors are alive at a
time. ``build`` returns the zero-argument callable that is timed and memory-tracked:

* ``fwd``: the forward pass under :func:`torch.no_grad`, modules in training mode (dropout and batch
  statistics as in training);
* ``fwd+bwd``: the forward pass recording the graph, then :func:`torch.autograd.grad` of the output with
  respect to the inputs that require grad and all parameters (a fixed random output gradient for layers,
  the scalar loss itself for losses), so nothing accumulates between calls;
* ``bf16``: the forward pass runs under ``torch.autocast(device, dtype=torch.bfloat16)`` with fp32 inputs
  and parameters (the backward runs outside autocast, as recommended); the losses receive bf16 embeddings,
  which exercises their fp32 distance path.

The per-anchor / per-identity loop baselines and the materialised-attention MFA1 are the references of the
comparison note in the results (``benchmarks/README.md``). They are written here from the equations in the
reference notes, in the official code's formulation (per-anchor boolean indexing, chunked centres), not
copied from any repository.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vireid_layers as vl

FWD = "fwd"
FWD_BWD = "fwd+bwd"
PASSES = (FWD, FWD_BWD)
DTYPES = ("fp32", "bf16")


# --------------------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MFAStage:
    """One MFA block of the SYSU network: channels, stride and the (N, C, H, W) of both inputs."""

    name: str
    high: tuple[int, int, int, int]
    low: tuple[int, int, int, int]
    stride: int


@dataclass(frozen=True)
class Shapes:
    """All sizes of one suite configuration (the real SYSU one, or the tiny ``--quick`` one)."""

    identities: int  # P
    instances: int  # K, per modality
    image: tuple[int, int]  # H, W
    dee: tuple[int, int, int, int]  # input of DEE (after MFA3)
    mam: tuple[int, int, int, int]  # a stage-3 map, the input of MPANet's MAM3 (here at the DEEN SYSU size)
    mfa: tuple[MFAStage, ...]
    embedding_dim: int
    num_branches: int
    backbone: str
    backbone_batch: int

    @property
    def images(self) -> int:
        """Images per batch, both modalities (48 for SYSU)."""
        return 2 * self.identities * self.instances

    @property
    def rows(self) -> int:
        """Embedding rows after DEE (144 for SYSU)."""
        return (1 + self.num_branches) * self.images


def sysu_shapes(device: torch.device) -> Shapes:
    """The DEEN SYSU-MM01 setting; the backbone batch is 8 on CPU (runtime) and 48 elsewhere."""
    n = 48
    return Shapes(
        identities=6,
        instances=4,
        image=(384, 144),
        dee=(n, 1024, 24, 9),
        mam=(n, 1024, 24, 9),
        mfa=(
            MFAStage("MFA1", (n, 256, 96, 36), (n, 64, 96, 36), 1),
            MFAStage("MFA2", (n, 512, 48, 18), (n, 256, 96, 36), 2),
            MFAStage("MFA3", (n, 1024, 24, 9), (n, 512, 48, 18), 2),
        ),
        embedding_dim=2048,
        num_branches=2,
        backbone="resnet50",
        backbone_batch=8 if device.type == "cpu" else n,
    )


def quick_shapes(device: torch.device) -> Shapes:
    """Tiny shapes with the same structure, for a smoke run in seconds."""
    n = 8
    return Shapes(
        identities=2,
        instances=2,
        image=(64, 32),
        dee=(n, 32, 4, 2),
        mam=(n, 32, 4, 2),
        mfa=(
            MFAStage("MFA1", (n, 16, 16, 8), (n, 8, 16, 8), 1),
            MFAStage("MFA2", (n, 32, 8, 4), (n, 16, 16, 8), 2),
            MFAStage("MFA3", (n, 32, 4, 2), (n, 32, 8, 4), 2),
        ),
        embedding_dim=32,
        num_branches=2,
        backbone="resnet18",
        backbone_batch=4,
    )


def dims(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


class _Inputs:
    """Seeded random inputs, generated on the CPU and moved to the device (the same data on every device)."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int, requires_grad: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
        x = torch.randn(shape, generator=self.generator).to(self.device, dtype)
        return x.requires_grad_(requires_grad)

    def features(self, *shape: int, requires_grad: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
        """Non-negative values, like the pre-BN pooled features after the last ReLU."""
        x = torch.randn(shape, generator=self.generator).abs().to(self.device, dtype)
        return x.requires_grad_(requires_grad)


def sysu_labels(shapes: Shapes, device: torch.device) -> tuple[Tensor, Tensor]:
    """Labels and modalities of one batch as the official IdentitySampler lays it out.

    ``P`` identities × ``K`` images per modality, identities contiguous, visible block then infrared block
    with the same identity order.
    """
    per_modality = torch.arange(shapes.identities).repeat_interleave(shapes.instances)
    labels = torch.cat([per_modality, per_modality])
    modalities = torch.cat([torch.zeros_like(per_modality), torch.ones_like(per_modality)])
    return labels.to(device), modalities.to(device)


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _torch_dtype(dtype: str) -> torch.dtype:
    return torch.bfloat16 if dtype == "bf16" else torch.float32


# --------------------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One row of the results table.

    ``build(device)`` creates the module and inputs and returns the callable to measure. ``memory_only``
    cases are measured for peak memory (and one call's wall time) but not timed. ``forward_of`` names the
    ``fwd`` case of the same configuration; the runner uses its duration to skip a ``fwd+bwd`` case that
    cannot finish in the per-call limit.
    """

    id: str
    name: str
    group: str  # "layer", "loss", "backbone", "baseline"
    component: str
    shape: str
    dtype: str
    pass_: str
    batch: int
    build: Callable[[torch.device], Callable[[], Any]]
    memory_only: bool = False
    forward_of: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _module_fn(
    module: nn.Module,
    inputs: Sequence[Any],
    *,
    device: torch.device,
    dtype: str,
    pass_: str,
    grad_shape: Sequence[int] | None,
    data: _Inputs,
) -> Callable[[], Any]:
    """The measured callable for ``module(*inputs)`` (a layer: ``grad_shape`` given; a loss: scalar output)."""
    module.train()
    if pass_ == FWD:

        def forward() -> Any:
            with torch.no_grad(), _autocast(device, dtype):
                return module(*inputs)

        return forward

    wrt = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    wrt += [p for p in module.parameters() if p.requires_grad]
    grad_out = None if grad_shape is None else data.randn(*grad_shape)

    def forward_backward() -> Any:
        with _autocast(device, dtype):
            out = module(*inputs)
        return torch.autograd.grad(out, wrt, grad_out)

    return forward_backward


def _layer_cases(shapes: Shapes, dtypes: Sequence[str]) -> Iterator[Case]:
    dee_out = (shapes.rows, *shapes.dee[1:])
    dee_shape = f"{dims(shapes.dee)} → {dims(dee_out)}"
    for pass_ in PASSES:
        for dtype in dtypes:

            def build(device: torch.device, pass_: str = pass_, dtype: str = dtype) -> Callable[[], Any]:
                data = _Inputs(device)
                module = vl.DEE(shapes.dee[1], num_branches=shapes.num_branches).to(device)
                x = data.randn(*shapes.dee, requires_grad=pass_ == FWD_BWD)
                return _module_fn(module, [x], device=device, dtype=dtype, pass_=pass_, grad_shape=dee_out, data=data)

            yield Case(
                id=f"DEE/{pass_}/{dtype}",
                name=f"DEE({shapes.dee[1]})",
                group="layer",
                component="DEE",
                shape=dee_shape,
                dtype=dtype,
                pass_=pass_,
                batch=shapes.dee[0],
                build=build,
                forward_of=f"DEE/{FWD}/{dtype}" if pass_ == FWD_BWD else None,
            )

    for stage in shapes.mfa:
        for form in ("official", "paper"):
            for pass_ in PASSES:
                for dtype in dtypes:

                    def build(
                        device: torch.device,
                        stage: MFAStage = stage,
                        form: str = form,
                        pass_: str = pass_,
                        dtype: str = dtype,
                    ) -> Callable[[], Any]:
                        data = _Inputs(device)
                        module = vl.MFA(stage.high[1], stage.low[1], stride=stage.stride, form=form).to(device)
                        _activate_mfa(module)
                        requires_grad = pass_ == FWD_BWD
                        x_high = data.randn(*stage.high, requires_grad=requires_grad)
                        x_low = data.randn(*stage.low, requires_grad=requires_grad)
                        return _module_fn(
                            module,
                            [x_high, x_low],
                            device=device,
                            dtype=dtype,
                            pass_=pass_,
                            grad_shape=stage.high,
                            data=data,
                        )

                    key = f"MFA/{stage.name}-{form}"
                    yield Case(
                        id=f"{key}/{pass_}/{dtype}",
                        name=f"{stage.name} {form}",
                        group="layer",
                        component="MFA",
                        shape=f"x_high {dims(stage.high)}, x_low {dims(stage.low)}, stride {stage.stride}",
                        dtype=dtype,
                        pass_=pass_,
                        batch=stage.high[0],
                        build=build,
                        forward_of=f"{key}/{FWD}/{dtype}" if pass_ == FWD_BWD else None,
                    )


def _mam_cases(shapes: Shapes, dtypes: Sequence[str]) -> Iterator[Case]:
    """MAM on the stage-3 map (MPANet puts MAM3 there; the DEEN SYSU batch and size, 48×1024×24×9)."""
    for pass_ in PASSES:
        for dtype in dtypes:

            def build(device: torch.device, pass_: str = pass_, dtype: str = dtype) -> Callable[[], Any]:
                data = _Inputs(device)
                module = vl.MAM(shapes.mam[1]).to(device)
                x = data.randn(*shapes.mam, requires_grad=pass_ == FWD_BWD)
                return _module_fn(
                    module, [x], device=device, dtype=dtype, pass_=pass_, grad_shape=shapes.mam, data=data
                )

            yield Case(
                id=f"MAM/{pass_}/{dtype}",
                name=f"MAM({shapes.mam[1]})",
                group="layer",
                component="MAM",
                shape=dims(shapes.mam),
                dtype=dtype,
                pass_=pass_,
                batch=shapes.mam[0],
                build=build,
                forward_of=f"MAM/{FWD}/{dtype}" if pass_ == FWD_BWD else None,
            )


def _activate_mfa(module: vl.MFA) -> None:
    """Give the zero-initialised output BatchNorms weight 1, as after training (the cost is unchanged)."""
    with torch.no_grad():
        for bn in (module.channel.W[1], module.spatial.W[1]):
            bn.weight.fill_(1.0)


def _loss_cases(shapes: Shapes, dtypes: Sequence[str]) -> Iterator[Case]:
    n, d, k = shapes.images, shapes.embedding_dim, shapes.num_branches

    def cpm_inputs(device: torch.device, data: _Inputs, dtype: str, grad: bool) -> list[Any]:
        labels, modalities = sysu_labels(shapes, device)
        original = data.features(n, d, requires_grad=grad, dtype=_torch_dtype(dtype))
        generated = data.features(k, n, d, requires_grad=grad, dtype=_torch_dtype(dtype))
        return [original, generated, labels, modalities]

    def ort_inputs(device: torch.device, data: _Inputs, dtype: str, grad: bool) -> list[Any]:
        return [data.features(k, n, d, requires_grad=grad, dtype=_torch_dtype(dtype))]

    def rows_inputs(device: torch.device, data: _Inputs, dtype: str, grad: bool) -> list[Any]:
        labels, _ = sysu_labels(shapes, device)
        x = data.features(shapes.rows, d, requires_grad=grad, dtype=_torch_dtype(dtype))
        return [x, labels.repeat(1 + k)]

    specs: list[tuple[str, Callable[[], nn.Module], Callable[..., list[Any]], str]] = [
        ("CPMLoss", lambda: vl.CPMLoss(), cpm_inputs, f"original {n}×{d}, generated {k}×{n}×{d}"),
        ("OrthogonalLoss", lambda: vl.OrthogonalLoss(), ort_inputs, f"generated {k}×{n}×{d}"),
        ("HardTripletLoss", lambda: vl.HardTripletLoss(), rows_inputs, f"{shapes.rows}×{d}"),
        ("WRTLoss", lambda: vl.WRTLoss(), rows_inputs, f"{shapes.rows}×{d}"),
        ("WRTLoss[official]", lambda: vl.WRTLoss(form="official"), rows_inputs, f"{shapes.rows}×{d}"),
    ]
    for component, factory, make_inputs, shape in specs:
        for pass_ in PASSES:
            for dtype in dtypes:

                def build(
                    device: torch.device,
                    factory: Callable[[], nn.Module] = factory,
                    make_inputs: Callable[..., list[Any]] = make_inputs,
                    pass_: str = pass_,
                    dtype: str = dtype,
                ) -> Callable[[], Any]:
                    data = _Inputs(device)
                    inputs = make_inputs(device, data, dtype, pass_ == FWD_BWD)
                    return _module_fn(
                        factory().to(device),
                        inputs,
                        device=device,
                        dtype=dtype,
                        pass_=pass_,
                        grad_shape=None,
                        data=data,
                    )

                yield Case(
                    id=f"{component}/{pass_}/{dtype}",
                    name=component,
                    group="loss",
                    component=component,
                    shape=shape,
                    dtype=dtype,
                    pass_=pass_,
                    batch=shapes.rows if make_inputs is rows_inputs else n,
                    build=build,
                    forward_of=f"{component}/{FWD}/{dtype}" if pass_ == FWD_BWD else None,
                )


def _backbone_cases(shapes: Shapes, dtypes: Sequence[str]) -> Iterator[Case]:
    b, (h, w) = shapes.backbone_batch, shapes.image
    for pass_ in PASSES:
        for dtype in dtypes:

            def build(device: torch.device, pass_: str = pass_, dtype: str = dtype) -> Callable[[], Any]:
                data = _Inputs(device)
                module = vl.build_two_stream_backbone(shapes.backbone, pretrained=False).to(device)
                images = data.randn(b, 3, h, w)
                modalities = torch.arange(b, device=device) >= b // 2  # visible half, infrared half
                reduction = module.reductions[-1]
                out_shape = (b, module.num_features, -(-h // reduction), -(-w // reduction))
                return _module_fn(
                    module,
                    [images, modalities.long()],
                    device=device,
                    dtype=dtype,
                    pass_=pass_,
                    grad_shape=out_shape,
                    data=data,
                )

            yield Case(
                id=f"TwoStreamBackbone/{pass_}/{dtype}",
                name=f"two-stream {shapes.backbone}",
                group="backbone",
                component="TwoStreamBackbone",
                shape=f"{b}×3×{h}×{w}",
                dtype=dtype,
                pass_=pass_,
                batch=b,
                build=build,
                forward_of=f"TwoStreamBackbone/{FWD}/{dtype}" if pass_ == FWD_BWD else None,
                note="" if b == shapes.images else f"batch {b} to bound the CPU runtime; {shapes.images} on CUDA",
            )


def _modality_cases(shapes: Shapes, dtypes: Sequence[str]) -> Iterator[Case]:
    """``split_by_modality`` of the images and ``merge_by_modality`` of the stem outputs: the routing overhead of
    ``TwoStreamBackbone.forward_stem`` (fp32 only: autocast does not apply to indexing)."""
    if "fp32" not in dtypes:
        return
    b, (h, w) = shapes.images, shapes.image
    stem = (64, -(-h // 4), -(-w // 4))  # a ResNet stem: 64 channels, reduction 4
    for pass_ in PASSES:

        def build(device: torch.device, pass_: str = pass_) -> Callable[[], Any]:
            data = _Inputs(device)
            _, modalities = sysu_labels(shapes, device)
            modalities = modalities[torch.randperm(b, generator=data.generator).to(device)]  # any order
            images = data.randn(b, 3, h, w)
            half = b // 2
            visible = data.randn(half, *stem, requires_grad=pass_ == FWD_BWD)
            infrared = data.randn(b - half, *stem, requires_grad=pass_ == FWD_BWD)

            def call() -> Tensor:
                _, _, visible_index, infrared_index = vl.split_by_modality(images, modalities)
                return vl.merge_by_modality(visible, infrared, visible_index, infrared_index)

            grad_out = data.randn(b, *stem) if pass_ == FWD_BWD else None
            return _measured(call, pass_, [visible, infrared], grad_out)

        yield Case(
            id=f"modality/split+merge/{pass_}/fp32",
            name="split_by_modality + merge_by_modality",
            group="backbone",
            component="modality",
            shape=f"split {b}×3×{h}×{w}, merge 2×{b // 2}×{dims(stem)} → {b}×{dims(stem)}",
            dtype="fp32",
            pass_=pass_,
            batch=b,
            build=build,
            note="the stem's routing by modality, 24 + 24 rows in shuffled order",
        )


# --------------------------------------------------------------------------------------------------------------
# Baselines: the official per-anchor / per-identity formulations, and the materialised MFA attention
# --------------------------------------------------------------------------------------------------------------


def _official_distance(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean distance matrix by the official expansion: ||x||² + ||y||² − 2xyᵀ, clamp(1e-12), sqrt."""
    xx = x.pow(2).sum(1, keepdim=True).expand(x.shape[0], y.shape[0])
    yy = y.pow(2).sum(1, keepdim=True).expand(y.shape[0], x.shape[0]).t()
    return torch.addmm(xx + yy, x, y.t(), beta=1.0, alpha=-2.0).clamp(min=1e-12).sqrt()


def _ranking_hinge(closer: Tensor, farther: Tensor, margin: float) -> Tensor:
    """``MarginRankingLoss(margin)(farther, closer, target=1)``: mean of [closer − farther + margin]₊."""
    return F.margin_ranking_loss(farther, closer, torch.ones_like(farther), margin=margin)


def triplet_loop(embeddings: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet, official ``OriTripletLoss`` form: a Python loop over anchors on the full matrix."""
    dist = _official_distance(embeddings, embeddings)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    hardest_pos, hardest_neg = [], []
    for i in range(embeddings.shape[0]):
        hardest_pos.append(dist[i][same[i]].max().unsqueeze(0))
        hardest_neg.append(dist[i][~same[i]].min().unsqueeze(0))
    return _ranking_hinge(torch.cat(hardest_pos), torch.cat(hardest_neg), margin)


def _cpm_loop_one_branch(inputs: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Official ``CPMLoss`` form for one branch: inputs = [orig-VIS; orig-IR; gen-VIS; gen-IR] in equal blocks.

    Centres by chunking every block into as many equal consecutive pieces as there are identities in the
    first block (the sampler's layout), then a Python loop over identities collecting the pull, the
    detached push and the two hardest inter-identity distances.
    """
    blocks = inputs.chunk(4, 0)
    identities = labels.chunk(4, 0)[0].unique()
    n = identities.shape[0]
    vis, ir, gen_vis, gen_ir = (torch.cat([p.mean(0, keepdim=True) for p in b.chunk(n, 0)]) for b in blocks)
    d_ir_genvis, d_vis_genvis = _official_distance(ir, gen_vis), _official_distance(vis, gen_vis)
    d_vis_genir, d_ir_genir = _official_distance(vis, gen_ir), _official_distance(ir, gen_ir)
    d_genvis, d_genir = _official_distance(gen_vis, gen_vis), _official_distance(gen_ir, gen_ir)
    d_vis, d_ir = _official_distance(vis, vis), _official_distance(ir, ir)
    same = identities.unsqueeze(0) == identities.unsqueeze(1)
    terms: dict[str, list[Tensor]] = {k: [] for k in ("ap_v", "an_v", "ig_v", "io_v", "ap_i", "an_i", "ig_i", "io_i")}
    for j in range(n):
        pos, neg = same[j], ~same[j]
        terms["ap_v"].append(d_ir_genvis[j][pos].max().unsqueeze(0))
        terms["an_v"].append(d_vis_genvis[j][pos].min().unsqueeze(0))
        terms["ig_v"].append(d_genvis[j][neg].min().unsqueeze(0))
        terms["io_v"].append(d_vis[j][neg].min().unsqueeze(0))
        terms["ap_i"].append(d_vis_genir[j][pos].max().unsqueeze(0))
        terms["an_i"].append(d_ir_genir[j][pos].min().unsqueeze(0))
        terms["ig_i"].append(d_genir[j][neg].min().unsqueeze(0))
        terms["io_i"].append(d_ir[j][neg].min().unsqueeze(0))
    t = {k: torch.cat(v) for k, v in terms.items()}
    sides = []
    for s in ("v", "i"):
        ap = t[f"ap_{s}"]
        sides.append(
            _ranking_hinge(ap, t[f"an_{s}"].detach(), margin)
            + 0.5 * (_ranking_hinge(ap, t[f"ig_{s}"], margin) + _ranking_hinge(ap, t[f"io_{s}"], margin))
        )
    return (sides[0] + sides[1]) / 2


def cpm_loop(original: Tensor, generated: Tensor, labels: Tensor, margin: float = 0.2) -> Tensor:
    """CPM as the official training script uses it: once per DEE branch on ``[original; branch]``, summed."""
    both = torch.cat([labels, labels])
    return sum(_cpm_loop_one_branch(torch.cat([original, g]), both, margin) for g in generated)  # type: ignore[return-value]


def wrt_loop(embeddings: Tensor, labels: Tensor, eps: float = 1e-6) -> Tensor:
    """Weighted regularised triplet with a Python loop over anchors (the library's max-shifted weights)."""
    dist = _official_distance(embeddings, embeddings)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    losses = []
    for i in range(embeddings.shape[0]):
        pos, neg = dist[i][same[i]], dist[i][~same[i]]
        w_pos = (pos - pos.max()).exp()
        w_neg = (neg.min() - neg).exp()
        furthest = (pos * w_pos / (w_pos.sum() + eps)).sum()
        closest = (neg * w_neg / (w_neg.sum() + eps)).sum()
        losses.append(F.softplus(furthest - closest))
    return torch.stack(losses).mean()


def wrt_official_loop(embeddings: Tensor, labels: Tensor, eps: float = 1e-6) -> Tensor:
    """The official ``TripletLoss_WRT`` one anchor at a time: positives max-shifted, negatives not, eps in both."""
    dist = _official_distance(embeddings, embeddings)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    losses = []
    for i in range(embeddings.shape[0]):
        pos, neg = dist[i][same[i]], dist[i][~same[i]]
        w_pos = (pos - pos.max()).exp()  # the masked row maximum of dist * is_pos is the largest positive
        w_neg = (-neg).exp()  # the masked row maximum of -dist * is_neg is 0
        furthest = (pos * w_pos / (w_pos.sum() + eps)).sum()
        closest = (neg * w_neg / (w_neg.sum() + eps)).sum()
        losses.append(torch.log1p(torch.exp(furthest - closest)))
    return torch.stack(losses).mean()


def orthogonal_loop(generated: Tensor) -> Tensor:
    """Orthogonal loss with a Python loop over samples: ⟨gen_a(n), gen_b(n)⟩ summed, divided by (K + 1)N."""
    k, n = generated.shape[0], generated.shape[1]
    total = generated.new_zeros(())
    for i in range(n):
        for a in range(k):
            for b in range(a + 1, k):
                total = total + torch.dot(generated[a, i], generated[b, i])
    return total / ((k + 1) * n)


def mfa_materialised(module: vl.MFA, x_high: Tensor, x_low: Tensor) -> Tensor:
    """The official MFA block with its spatial attention evaluated as written: (QKᵀ / n) V.

    Same parameters and the same folded reshapes as the library's ``form="official"``, but the
    ``(N_h/r) × (N_l/r)`` energy matrix is built explicitly (the official ``PNL``) instead of the library's
    associative ``Q (Kᵀ V) / n``.
    """
    z = module.channel(x_high, x_low)
    spatial = module.spatial
    theta, phi, g = spatial.theta(z), spatial.phi(x_low), spatial.g(x_low)
    y = attention_materialised(theta, phi, g, spatial.low)
    return spatial.W(y) + z


def attention_associative(theta: Tensor, phi: Tensor, g: Tensor, rows: int) -> Tensor:
    """The library's official-form spatial aggregation order (``mfa.py``): fold, then Q (Kᵀ V) / n."""
    b = theta.shape[0]
    q = theta.reshape(b, rows, -1).transpose(1, 2)
    k = phi.reshape(b, rows, -1)
    v = g.reshape(b, rows, -1).transpose(1, 2)
    return (torch.matmul(q, torch.matmul(k, v)) / k.shape[-1]).transpose(1, 2).reshape(theta.shape)


def attention_materialised(theta: Tensor, phi: Tensor, g: Tensor, rows: int) -> Tensor:
    """The official ``PNL`` order: fold, energy = Q Kᵀ, attention = energy / n, then attention V."""
    b = theta.shape[0]
    q = theta.reshape(b, rows, -1).transpose(1, 2)
    k = phi.reshape(b, rows, -1)
    v = g.reshape(b, rows, -1).transpose(1, 2)
    energy = torch.matmul(q, k)  # (B, N_h/r, N_l/r)
    attention = energy / k.shape[-1]
    return torch.matmul(attention, v).transpose(1, 2).reshape(theta.shape)


def mam_official(module: vl.MAM, x: Tensor) -> Tensor:
    """MAM as the official MPANet code computes it, with the library module's weights.

    Global average pooling to :math:`1\times1`, the ``channel_attention`` convolutions (1×1, no bias) with a
    ReLU between them and a sigmoid, then ``InstanceNorm2d(C, affine=False, track_running_stats=False)``
    (the functional :func:`torch.nn.functional.instance_norm`) and ``x * mask + IN(x) * (1 - mask)``.
    """
    pooled = F.adaptive_avg_pool2d(x, 1)
    mask = torch.sigmoid(F.conv2d(F.relu(F.conv2d(pooled, module.fc1.weight)), module.fc2.weight))
    return x * mask + F.instance_norm(x, eps=module.eps) * (1 - mask)


def mfa_official(module: vl.MFA, x_high: Tensor, x_low: Tensor) -> Tensor:
    """The official MFA block (``CNL`` then ``PNL``) in the official order of products, with the library's weights.

    ``CNL``: energy = θ(x_h) φ(x_l)ᵀ (a C'×C' matrix), divided by C', times g(x_l). ``PNL``: the folded
    ``view(B, C', -1)`` maps, energy = Q K (the (N_h/r)×(N_l/r) matrix), divided by N_l/r, times V. Both
    always in this order, whatever the shapes; the library picks the cheaper association per product.
    """
    channel, spatial = module.channel, module.spatial
    b, low = x_high.shape[0], channel.low
    q = channel.theta(x_high).reshape(b, low, -1)
    k = channel.phi(x_low).reshape(b, low, -1)
    v = channel.g(x_low).reshape(b, low, -1)
    energy = torch.matmul(q, k.transpose(1, 2))
    y = torch.matmul(energy / energy.shape[-1], v).reshape(b, low, *x_low.shape[2:])
    z = channel.W(y) + x_high
    theta, phi, g = spatial.theta(z), spatial.phi(x_low), spatial.g(x_low)
    return spatial.W(attention_materialised(theta, phi, g, spatial.low)) + z


def _measured(call: Callable[[], Tensor], pass_: str, wrt: list[Tensor], grad_out: Tensor | None) -> Callable[[], Any]:
    """``call()`` under ``no_grad`` for ``fwd``; ``autograd.grad(call(), wrt, grad_out)`` for ``fwd+bwd``."""
    if pass_ == FWD:

        def forward() -> Any:
            with torch.no_grad():
                return call()

        return forward
    return lambda: torch.autograd.grad(call(), wrt, grad_out)


def _loop_cases(shapes: Shapes) -> Iterator[Case]:
    n, d, k = shapes.images, shapes.embedding_dim, shapes.num_branches

    def loss_build(kind: str) -> Callable[[torch.device], Callable[[], Any]]:
        def build(device: torch.device) -> Callable[[], Any]:
            data = _Inputs(device)
            labels, _ = sysu_labels(shapes, device)
            if kind == "CPMLoss":
                original = data.features(n, d, requires_grad=True)
                generated = data.features(k, n, d, requires_grad=True)
                return _measured(lambda: cpm_loop(original, generated, labels), FWD_BWD, [original, generated], None)
            if kind == "OrthogonalLoss":
                generated = data.features(k, n, d, requires_grad=True)
                return _measured(lambda: orthogonal_loop(generated), FWD_BWD, [generated], None)
            x = data.features(shapes.rows, d, requires_grad=True)
            rows_labels = labels.repeat(1 + k)
            loop = triplet_loop if kind == "HardTripletLoss" else wrt_loop
            return _measured(lambda: loop(x, rows_labels), FWD_BWD, [x], None)

        return build

    loops = [
        ("CPMLoss", "CPM per-identity loop (official form)", f"original {n}×{d}, generated {k}×{n}×{d}", n),
        ("HardTripletLoss", "batch-hard triplet per-anchor loop", f"{shapes.rows}×{d}", shapes.rows),
        ("WRTLoss", "WRT per-anchor loop", f"{shapes.rows}×{d}", shapes.rows),
        ("OrthogonalLoss", "orthogonal per-sample loop", f"generated {k}×{n}×{d}", n),
    ]
    for component, name, shape, batch in loops:
        yield Case(
            id=f"baseline/{component}-loop/{FWD_BWD}/fp32",
            name=name,
            group="baseline",
            component=component,
            shape=shape,
            dtype="fp32",
            pass_=FWD_BWD,
            batch=batch,
            build=loss_build(component),
            extra={"library_case": f"{component}/{FWD_BWD}/fp32"},
        )


def _materialised_block_cases(shapes: Shapes) -> Iterator[Case]:
    stage = shapes.mfa[0]
    for pass_ in PASSES:

        def build(device: torch.device, pass_: str = pass_) -> Callable[[], Any]:
            data = _Inputs(device)
            module = vl.MFA(stage.high[1], stage.low[1], stride=stage.stride).to(device).train()
            _activate_mfa(module)
            grad = pass_ == FWD_BWD
            x_high, x_low = data.randn(*stage.high, requires_grad=grad), data.randn(*stage.low, requires_grad=grad)
            wrt = [x_high, x_low, *module.parameters()]
            grad_out = data.randn(*stage.high) if grad else None
            return _measured(lambda: mfa_materialised(module, x_high, x_low), pass_, wrt, grad_out)

        yield Case(
            id=f"baseline/{stage.name}-official-materialised/{pass_}/fp32",
            name=f"{stage.name} official, materialised attention",
            group="baseline",
            component="MFA",
            shape=f"x_high {dims(stage.high)}, x_low {dims(stage.low)}, stride {stage.stride}",
            dtype="fp32",
            pass_=pass_,
            batch=stage.high[0],
            build=build,
            memory_only=True,
            extra={"library_case": f"MFA/{stage.name}-official/{pass_}/fp32"},
        )


def _attention_step_cases(shapes: Shapes) -> Iterator[Case]:
    """The spatial attention step alone: the only computation in which the two evaluation orders differ."""
    stage = shapes.mfa[0]
    low = stage.low[1]
    inner, b = low // 2, stage.high[0]
    folded_q, folded_k = stage.high[2] * stage.high[3] // 2, stage.low[2] * stage.low[3] // 2
    step_shape = (
        f"θ {dims((b, inner, *stage.high[2:]))}, φ/g {dims((b, inner, *stage.low[2:]))} "
        f"(folded Q {b}×{folded_q}×{low}, K {b}×{low}×{folded_k})"
    )
    for order, fn in (("associative", attention_associative), ("materialised", attention_materialised)):
        for pass_ in PASSES:

            def build(device: torch.device, fn: Callable[..., Tensor] = fn, pass_: str = pass_) -> Callable[[], Any]:
                data = _Inputs(device)
                grad = pass_ == FWD_BWD
                theta = data.randn(b, inner, *stage.high[2:], requires_grad=grad)
                phi = data.randn(b, inner, *stage.low[2:], requires_grad=grad)
                g = data.randn(b, inner, *stage.low[2:], requires_grad=grad)
                grad_out = data.randn(*theta.shape) if grad else None
                return _measured(lambda: fn(theta, phi, g, low), pass_, [theta, phi, g], grad_out)

            yield Case(
                id=f"baseline/{stage.name}-attention-{order}/{pass_}/fp32",
                name=f"{stage.name} official attention step, {order}",
                group="baseline",
                component="MFA",
                shape=step_shape,
                dtype="fp32",
                pass_=pass_,
                batch=b,
                build=build,
                memory_only=True,
            )


def _official_block_cases(shapes: Shapes) -> Iterator[Case]:
    """The official MAM and the official-order MFA3, fp32 forward+backward, next to the library's rows."""
    stage = shapes.mfa[-1]

    def mam_build(device: torch.device) -> Callable[[], Any]:
        data = _Inputs(device)
        module = vl.MAM(shapes.mam[1]).to(device)
        x = data.randn(*shapes.mam, requires_grad=True)
        grad_out = data.randn(*shapes.mam)
        return _measured(lambda: mam_official(module, x), FWD_BWD, [x, *module.parameters()], grad_out)

    def mfa_build(device: torch.device) -> Callable[[], Any]:
        data = _Inputs(device)
        module = vl.MFA(stage.high[1], stage.low[1], stride=stage.stride).to(device).train()
        _activate_mfa(module)
        x_high, x_low = data.randn(*stage.high, requires_grad=True), data.randn(*stage.low, requires_grad=True)
        grad_out = data.randn(*stage.high)
        wrt = [x_high, x_low, *module.parameters()]
        return _measured(lambda: mfa_official(module, x_high, x_low), FWD_BWD, wrt, grad_out)

    yield Case(
        id=f"baseline/MAM-official/{FWD_BWD}/fp32",
        name="MAM, official (InstanceNorm2d + x·m + IN·(1−m))",
        group="baseline",
        component="MAM",
        shape=dims(shapes.mam),
        dtype="fp32",
        pass_=FWD_BWD,
        batch=shapes.mam[0],
        build=mam_build,
        extra={"library_case": f"MAM/{FWD_BWD}/fp32"},
    )
    yield Case(
        id=f"baseline/{stage.name}-official-order/{FWD_BWD}/fp32",
        name=f"{stage.name} official, official order of products",
        group="baseline",
        component="MFA",
        shape=f"x_high {dims(stage.high)}, x_low {dims(stage.low)}, stride {stage.stride}",
        dtype="fp32",
        pass_=FWD_BWD,
        batch=stage.high[0],
        build=mfa_build,
        extra={"library_case": f"MFA/{stage.name}-official/{FWD_BWD}/fp32"},
    )


def _baseline_cases(shapes: Shapes) -> Iterator[Case]:
    yield from _loop_cases(shapes)
    yield from _official_block_cases(shapes)
    yield from _materialised_block_cases(shapes)
    yield from _attention_step_cases(shapes)


def all_cases(shapes: Shapes, dtypes: Sequence[str]) -> list[Case]:
    """Every case of the suite, in running order.

    A ``fwd`` case runs before its ``fwd+bwd``, and every baseline runs right after the library case it is
    compared with, so that both see the same machine state (the results table groups them again).
    """
    cases = [
        *_layer_cases(shapes, dtypes),
        *_mam_cases(shapes, dtypes),
        *_loss_cases(shapes, dtypes),
        *_backbone_cases(shapes, dtypes),
        *_modality_cases(shapes, dtypes),
    ]
    pending: list[Case] = []
    for baseline in _baseline_cases(shapes):
        anchor = baseline.extra.get("library_case")
        ids = [c.id for c in cases]
        if anchor in ids:
            cases.insert(ids.index(anchor) + 1, baseline)
        else:
            pending.append(baseline)
    return cases + pending


#: Public names of ``vireid_layers`` that this suite benchmarks (a module and the functional it calls count
#: together); ``run.py`` reports the public names that no suite (this one, ``methods_bench.py``) covers.
COVERED = frozenset(
    {
        "DEE",
        "MFA",
        "MAM",
        "CPMLoss",
        "cpm_loss",
        "OrthogonalLoss",
        "orthogonal_loss",
        "HardTripletLoss",
        "hard_triplet_loss",
        "WRTLoss",
        "wrt_loss",
        "TwoStreamBackbone",
        "build_two_stream_backbone",
        "split_by_modality",
        "merge_by_modality",
    }
)


# --------------------------------------------------------------------------------------------------------------
# Agreement checks: the baselines compute the same numbers as the library
# --------------------------------------------------------------------------------------------------------------


def _compare(loop: Callable[[], Tensor], library: Callable[[], Tensor], wrt: list[Tensor]) -> dict[str, Any]:
    """Values and input gradients of a loop baseline and of the library on the same inputs."""
    a, b = loop(), library()
    ga, gb = torch.autograd.grad(a, wrt), torch.autograd.grad(b, wrt)
    va, vb = a.item(), b.item()
    return {
        "loop_value": va,
        "library_value": vb,
        "max_abs_grad_diff": max((p - q).abs().max().item() for p, q in zip(ga, gb, strict=True)),
        "agree": abs(va - vb) <= 1e-4 * max(abs(vb), 1e-6) + 1e-5
        and all(torch.allclose(p, q, rtol=1e-3, atol=1e-6) for p, q in zip(ga, gb, strict=True)),
    }


def _compare_mfa(shapes: Shapes, data: _Inputs, device: torch.device) -> dict[str, Any]:
    """The materialised MFA1 against the library's official form, on a slice of the batch."""
    stage = shapes.mfa[0]
    module = vl.MFA(stage.high[1], stage.low[1], stride=stage.stride).to(device).train()
    _activate_mfa(module)
    half = max(1, stage.high[0] // 8)  # a slice of the batch keeps the check cheap
    x_high, x_low = data.randn(half, *stage.high[1:]), data.randn(half, *stage.low[1:])
    with torch.no_grad():
        library, materialised = module(x_high, x_low), mfa_materialised(module, x_high, x_low)
    diff = (library - materialised).abs().max().item()
    return {
        "max_abs_diff": diff,
        "agree": bool(torch.allclose(library, materialised, rtol=1e-4, atol=1e-4)),
        "batch_checked": half,
    }


def check_baselines(shapes: Shapes, device: torch.device) -> dict[str, dict[str, Any]]:
    """Loss value and input gradients of every loop baseline against the library, on the benchmark inputs."""
    data = _Inputs(device, seed=1)
    n, d, k = shapes.images, shapes.embedding_dim, shapes.num_branches
    labels, modalities = sysu_labels(shapes, device)
    rows_labels = labels.repeat(1 + k)
    original = data.features(n, d, requires_grad=True)
    generated = data.features(k, n, d, requires_grad=True)
    x = data.features(shapes.rows, d, requires_grad=True)
    pairs: dict[str, tuple[Callable[[], Tensor], Callable[[], Tensor], list[Tensor]]] = {
        "CPMLoss": (
            lambda: cpm_loop(original, generated, labels),
            lambda: vl.cpm_loss(original, generated, labels, modalities),
            [original, generated],
        ),
        "HardTripletLoss": (lambda: triplet_loop(x, rows_labels), lambda: vl.hard_triplet_loss(x, rows_labels), [x]),
        "WRTLoss": (lambda: wrt_loop(x, rows_labels), lambda: vl.wrt_loss(x, rows_labels), [x]),
        "WRTLoss[official]": (
            lambda: wrt_official_loop(x, rows_labels),
            lambda: vl.wrt_loss(x, rows_labels, form="official"),
            [x],
        ),
        "OrthogonalLoss": (lambda: orthogonal_loop(generated), lambda: vl.orthogonal_loss(generated), [generated]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (loop, library, wrt) in pairs.items():
        try:
            out[name] = _compare(loop, library, wrt)
        except Exception as exc:  # a broken library call is reported, and its cases then fail on their own
            out[name] = {"agree": False, "error": f"{type(exc).__name__}: {exc}"[:500]}

    try:
        out["MFA"] = _compare_mfa(shapes, data, device)
    except Exception as exc:  # as above
        out["MFA"] = {"agree": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    for name, compare in (("MAM-official", _compare_mam_official), ("MFA3-official-order", _compare_mfa_official)):
        try:
            out[name] = compare(shapes, data, device)
        except Exception as exc:  # as above
            out[name] = {"agree": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def _compare_outputs(library: Tensor, official: Tensor, rows: int) -> dict[str, Any]:
    """fp32 outputs of two evaluation orders of one block; the tolerance is derived from fp32 and the depth."""
    diff = (library - official).abs().max().item()
    scale = official.abs().max().item()
    tolerance = 1e-4 * max(scale, 1.0)  # ~1000 ulps of the largest value: rounding of K<=1e4-term sums
    return {"max_abs_diff": diff, "agree": diff <= tolerance, "batch_checked": rows}


def _compare_mam_official(shapes: Shapes, data: _Inputs, device: torch.device) -> dict[str, Any]:
    module = vl.MAM(shapes.mam[1]).to(device)
    rows = max(1, shapes.mam[0] // 8)
    x = data.randn(rows, *shapes.mam[1:])
    with torch.no_grad():
        return _compare_outputs(module(x), mam_official(module, x), rows)


def _compare_mfa_official(shapes: Shapes, data: _Inputs, device: torch.device) -> dict[str, Any]:
    stage = shapes.mfa[-1]
    module = vl.MFA(stage.high[1], stage.low[1], stride=stage.stride).to(device).eval()
    _activate_mfa(module)
    rows = max(1, stage.high[0] // 8)
    x_high, x_low = data.randn(rows, *stage.high[1:]), data.randn(rows, *stage.low[1:])
    with torch.no_grad():
        return _compare_outputs(module(x_high, x_low), mfa_official(module, x_high, x_low), rows)
