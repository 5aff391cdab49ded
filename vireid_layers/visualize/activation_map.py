r"""Activation maps of the two-stream backbone, overlaid on the images, for each modality.

Two kinds of map of one layer's output :math:`A \in \mathbb R^{C \times h \times w}` (by default the last
residual block of the backbone's last stage, the map every model pools into its embedding):

* ``"activation"``: the channel energy :math:`M = \sum_k A_k^2`, the activation map re-identification code
  bases draw (no target needed);
* ``"gradcam"``: Grad-CAM :cite:`selvaraju2017gradcam` of a retrieval score: the cosine similarity
  :math:`s = \cos(e(x), t)` of the image's embedding to a target embedding (e.g. the same person seen in the
  other modality), :math:`\alpha_k = \frac{1}{hw} \sum_{u,v} \partial s / \partial A_{k,u,v}` and
  :math:`M = \operatorname{ReLU}(\sum_k \alpha_k A_k)`: the regions that make the image match the target.

Both are upsampled bilinearly to the image size and scaled to :math:`[0, 1]` per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.two_stream import TwoStreamBackbone
from ._drawing import MODALITY_NAMES, as_display_image, check_modality_vector, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ActivationMethod", "activation_maps", "default_activation_layer", "plot_activation_maps"]

ActivationMethod = Literal["activation", "gradcam"]
"""``"activation"``: channel energy of the layer output; ``"gradcam"``: Grad-CAM of a cosine similarity."""

EmbedFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def default_activation_layer(model: nn.Module) -> nn.Module:
    """The layer whose output the maps show by default: the last block of the backbone's last stage.

    ``model`` is a :class:`~vireid_layers.TwoStreamBackbone` or has one as ``model.backbone`` (DEEN, AGW). For
    a ResNet the last stage is an ``nn.Sequential`` of residual blocks and its last block is returned (it runs
    whether a model calls the stage or its blocks one by one, as AGW does around non-local blocks); otherwise
    the stage itself.

    Raises:
        TypeError: no two-stream backbone is found (pass ``layer`` explicitly).

    Examples:
        >>> from vireid_layers import build_two_stream_backbone
        >>> from vireid_layers.visualize import default_activation_layer
        >>> backbone = build_two_stream_backbone("resnet18")
        >>> default_activation_layer(backbone) is backbone.stages[-1][-1]
        True
    """
    backbone = model if isinstance(model, TwoStreamBackbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, TwoStreamBackbone):
        raise TypeError(
            f"`model` ({type(model).__name__}) is not a TwoStreamBackbone and has no `backbone` attribute holding "
            "one: pass the feature-map module as `layer`"
        )
    stage = backbone.stages[-1]
    return stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage


def _model_embed(model: nn.Module, images: Tensor, modalities: Tensor) -> Tensor:
    embed = getattr(model, "embed", None)
    return embed(images, modalities) if callable(embed) else model(images, modalities)


def _as_rows(out: object, n: int) -> Tensor:
    """A model output as :math:`(N, D)`: feature maps are average-pooled, extra dimensions flattened."""
    if not isinstance(out, Tensor):
        raise TypeError(f"`embed` must return a Tensor, got {type(out).__name__}; pass `embed` to select one")
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    if out.ndim < 2 or out.shape[0] != n:
        raise ValueError(f"`embed` must return ({n}, ...) features, got shape {tuple(out.shape)}")
    return out.flatten(1)


def activation_maps(
    model: nn.Module,
    images: Tensor,
    modalities: Tensor,
    *,
    method: ActivationMethod = "activation",
    targets: Tensor | None = None,
    layer: nn.Module | None = None,
    embed: EmbedFn | None = None,
) -> Tensor:
    r"""Activation (or Grad-CAM) maps of ``layer`` for a batch, at the images' resolution, in :math:`[0, 1]`.

    The model runs in eval mode (every submodule's ``training`` flag is restored afterwards), each image
    through the stem of its modality; the batch is processed at once, and since nothing couples the samples
    in eval mode, the gradient of :math:`\sum_i s_i` gives each image its own :math:`\partial s_i / \partial
    A_i`. A layer that sees :math:`mN` rows (DEEN's official embedding runs the last stage on the
    :math:`1 + K` DEE blocks, ordered ``[block 0 of every image; block 1; ...]``) contributes the maps of all
    :math:`m` blocks of an image, summed (for Grad-CAM, before the ReLU).

    .. math::

        M^{\text{act}} = \sum_k A_k^2, \qquad
        M^{\text{grad}} = \operatorname{ReLU}\Big(\sum_k \alpha_k A_k\Big), \quad
        \alpha_k = \frac{1}{hw} \sum_{u, v} \frac{\partial \cos(e(x), t)}{\partial A_{k, u, v}},

    then :math:`M \leftarrow (M - \min M) / (\max M - \min M)` per image after bilinear upsampling (a map
    constant up to rounding becomes 0; a NaN stays NaN).

    Args:
        model: the network, e.g. :class:`~vireid_layers.models.DEEN`, :class:`~vireid_layers.models.AGW` or a
            :class:`~vireid_layers.TwoStreamBackbone`.
        images: :math:`(N, 3, H, W)` network inputs (normalised as for the model).
        modalities: :math:`(N,)` 0 (visible) / 1 (infrared).
        method: ``"activation"`` or ``"gradcam"``.
        targets: :math:`(N, D)` target embeddings of Grad-CAM (required there, ignored otherwise).
        layer: the module whose output is mapped; default :func:`default_activation_layer`.
        embed: ``(model, images, modalities) -> (N, ...)`` embeddings (default ``model.embed`` if the model
            has one, else ``model(...)``; a 4-D output is average-pooled, others flattened).

    Returns:
        :math:`(N, H, W)` maps on the images' device, in float32 (float64 for a float64 model).

    Raises:
        TypeError, ValueError: bad arguments, no ``targets`` for Grad-CAM, or a layer that did not run (or ran
            with a batch that is not a multiple of :math:`N`).

    Examples:
        >>> from vireid_layers import build_two_stream_backbone
        >>> from vireid_layers.visualize import activation_maps
        >>> backbone = build_two_stream_backbone("resnet18")
        >>> images, modalities = torch.randn(2, 3, 64, 32), torch.tensor([0, 1])
        >>> maps = activation_maps(backbone, images, modalities)
        >>> maps.shape, bool(maps.min() >= 0), bool(maps.max() <= 1)
        (torch.Size([2, 64, 32]), True, True)
        >>> cam = activation_maps(backbone, images, modalities, method="gradcam", targets=torch.randn(2, 512))
        >>> cam.shape
        torch.Size([2, 64, 32])
    """
    mods, layer = _check_arguments(model, images, modalities, method, targets, layer)
    n = images.shape[0]
    embed = _model_embed if embed is None else embed

    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            captured.append(output)

    states = [(m, m.training) for m in model.modules()]
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.set_grad_enabled(method == "gradcam"):
            x = images.detach().requires_grad_(method == "gradcam")  # a graph even when the weights are frozen
            out = _as_rows(embed(model, x, mods), n)
            activation = _captured(captured, n)  # (m, N, C, h, w) view of the hooked output
            dtype = torch.promote_types(activation.dtype, torch.float32)  # fp32 under autocast, float64 stays
            if method == "gradcam":
                score = F.cosine_similarity(out.to(dtype), targets.to(out.device, dtype), dim=1)  # type: ignore[union-attr]
                (grad,) = torch.autograd.grad(score.sum(), captured[0])
                weights = grad.unflatten(0, activation.shape[:2]).to(dtype).mean(dim=(-2, -1), keepdim=True)
                cam = F.relu((weights * activation.detach().to(dtype)).sum(dim=(0, 2)))
            else:
                cam = activation.detach().to(dtype).pow(2).sum(dim=(0, 2))
    finally:
        handle.remove()
        for module, training in states:
            module.training = training
    cam = F.interpolate(cam.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    low, high = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    span = high - low
    # A map constant up to rounding (the interpolation's) is flat: 0, not amplified noise. NaN stays NaN.
    flat = span <= 16 * torch.finfo(cam.dtype).eps * torch.maximum(low.abs(), high.abs())
    return torch.where(flat, torch.zeros_like(cam), (cam - low) / torch.where(flat, torch.ones_like(span), span))


def _check_arguments(
    model: object, images: object, modalities: object, method: object, targets: object, layer: object
) -> tuple[Tensor, nn.Module]:
    """Validate the arguments of :func:`activation_maps`; returns the modalities on the images' device and the layer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, Tensor) else type(images)
        raise ValueError(f"`images` must be a floating-point (N, C, H, W) tensor, got {got}")
    n = images.shape[0]
    mods = check_modality_vector(modalities, n).to(images.device)
    if method not in ("activation", "gradcam"):
        raise ValueError(f"`method` must be 'activation' or 'gradcam', got {method!r}")
    bad_targets = not isinstance(targets, Tensor) or targets.ndim != 2 or targets.shape[0] != n
    if method == "gradcam" and bad_targets:
        got = tuple(targets.shape) if isinstance(targets, Tensor) else targets
        raise ValueError(f"`targets` must be an ({n}, D) tensor of target embeddings for Grad-CAM, got {got}")
    layer = default_activation_layer(model) if layer is None else layer  # type: ignore[arg-type]
    if not isinstance(layer, nn.Module):
        raise TypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}")
    return mods, layer


def _captured(captured: list[Tensor], n: int) -> Tensor:
    """The hooked output as :math:`(m, N, C, h, w)`, checking that the layer ran once on a multiple of N rows."""
    if len(captured) != 1:
        raise ValueError(
            f"`layer` ran {len(captured)} times in one forward pass (expected once): pass the module whose output "
            "is the feature map to show"
        )
    a = captured[0]
    if a.ndim != 4 or a.shape[0] % n:
        raise ValueError(
            f"`layer` must output an (m * {n}, C, h, w) feature map for {n} images, got shape {tuple(a.shape)}"
        )
    return a.unflatten(0, (a.shape[0] // n, n))


def _check_plot_arguments(
    images: Sequence[object] | Tensor, maps: object, modalities: object, labels: object, alpha: object
) -> Tensor:
    """Validate the arguments of :func:`plot_activation_maps`; returns the modalities."""
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"`maps` must be an (N, H, W) tensor, got {getattr(maps, 'shape', type(maps).__name__)}")
    n = maps.shape[0]
    if len(images) != n:
        raise ValueError(f"`images` must hold one image per map ({n}), got {len(images)}")
    mods = check_modality_vector(modalities, n)
    if labels is not None and len(labels) != n:  # type: ignore[arg-type]
        raise ValueError(f"`labels` must hold one caption per image ({n}), got {len(labels)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha!r}")
    return mods


def plot_activation_maps(
    images: Sequence[object] | Tensor,
    maps: Tensor,
    modalities: Tensor,
    *,
    labels: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    image_width: float = 0.9,
) -> Figure:
    """Overlay activation maps on their images: one row per modality (visible, then infrared).

    Each axes shows the image and, on top, its map with colour map ``cmap`` and opacity ``alpha`` (two
    :class:`~matplotlib.image.AxesImage` artists); the rows are labelled with the modality and the columns
    with ``labels``. Images of the same person in both modalities in the same column compare the two
    streams directly.

    Args:
        images: :math:`N` displayable images (paths, PIL images, arrays, or a :math:`(N, 3, H, W)` tensor in
            :math:`[0, 1]`; not the normalised network inputs).
        maps: :math:`(N, H', W')` maps in :math:`[0, 1]`, e.g. from :func:`activation_maps`; resized to each
            image by the drawing (``extent``).
        modalities: :math:`(N,)` 0 (visible) / 1 (infrared).
        labels: one caption per image (e.g. ``"id 12"``).
        alpha: opacity of the maps, in :math:`[0, 1]`.
        cmap: matplotlib colour map of the maps.
        title: figure title.
        image_width: width of one image cell in inches.

    Returns:
        The figure.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from vireid_layers.visualize import plot_activation_maps
        >>> fig = plot_activation_maps(torch.rand(4, 3, 16, 8), torch.rand(4, 16, 8), torch.tensor([0, 1, 0, 1]))
        >>> [len(ax.images) for ax in fig.axes]
        [2, 2, 2, 2]
    """
    mods = _check_plot_arguments(images, maps, modalities, labels, alpha)
    heat = maps.detach().float().cpu()
    present = [m for m in (0, 1) if bool((mods == m).any())]
    columns = max(int((mods == m).sum()) for m in present) if present else 1
    fig = new_figure(image_width * columns + 0.4, (2.1 * image_width + 0.3) * max(len(present), 1))
    axes = fig.subplots(max(len(present), 1), columns, squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.2})
    for ax in axes.flat:
        ax.set_axis_off()
    for r, modality in enumerate(present):
        for c, i in enumerate(torch.nonzero(mods == modality).flatten().tolist()):
            ax = axes[r, c]
            ax.set_axis_on()
            picture = as_display_image(images[i], "images")  # type: ignore[arg-type]
            height, width = picture.shape[:2]
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            ax.imshow(picture, extent=extent)
            ax.imshow(heat[i].numpy(), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
            if labels is not None:
                ax.set_title(labels[i], fontsize=7)
            if c == 0:
                ax.set_ylabel(MODALITY_NAMES[modality], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=0.86 if title else 0.93)
    return fig
