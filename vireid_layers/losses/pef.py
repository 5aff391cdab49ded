"""PEF: the perceptual edge features loss of MSO :cite:`gao2021mso`."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice, check_floating, check_modalities, check_shape
from ..layers.sobel import SobelCombine, sobel_edges
from ._reduction import Reduction, check_reduction, reduce

__all__ = ["PEFBlockOutput", "PEFEntry", "PEFLoss"]

PEFEntry = Literal["conv1_2", "block2", "image"]
PEFBlockOutput = Literal["pool", "relu"]
_ENTRIES = ("conv1_2", "block2", "image")
_BLOCK_OUTPUTS = ("pool", "relu")
_COMBINES = ("sum", "abs", "magnitude", "none")

# torchvision's vgg16().features: channels of the 13 convolutions, "M" = 2x2 max pooling (index layout 0..30).
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_POOLS = (4, 9, 16, 23, 30)  # features index of the max pooling that ends block 1..5
# entry -> (first features index used, the blocks whose outputs are compared)
_ENTRY_LAYOUT: dict[str, tuple[int, tuple[int, ...]]] = {
    "conv1_2": (2, (1, 2, 3, 4)),
    "block2": (5, (2, 3, 4, 5)),
    "image": (0, (1, 2, 3, 4)),
}


def _vgg16_layers(dd: dict[str, Any]) -> list[nn.Module]:
    """The 31 layers of torchvision's ``vgg16().features``, in order (same indices, same shapes)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(in_channels, item, 3, padding=1, **dd), nn.ReLU(inplace=True)]
            in_channels = item
    return layers


def _load_state_dict(weights: str | os.PathLike[str] | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """A torchvision VGG-16 state dict from ``"imagenet"``, a ``.pth``/``.safetensors`` path or a mapping."""
    if isinstance(weights, Mapping):
        return weights
    if weights == "imagenet":
        import torchvision.models

        # torchvision's own download, checksum and cache (needs network access the first time).
        model = torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)
        return model.state_dict()
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            "`weights` must be None, 'imagenet', a state dict or the path of an existing .pth/.safetensors file "
            f"holding a torchvision VGG-16 state dict, got {weights!r}"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"`weights` file {str(path)!r} must hold a state dict, got {type(state).__name__}")
    return state


class PEFLoss(nn.Module):
    r"""Perceptual edge features loss: the stem features against the image's Sobel edges through a frozen VGG-16.

    With :math:`f^m` the stem (ResNet ``layer0``) output of modality :math:`m`, :math:`e^m` the Sobel edge map
    of the input images (:class:`~vireid_layers.layers.sobel.SobelEdges`) and :math:`\phi_t` the output of
    block :math:`t` of an ImageNet-pretrained, frozen VGG-16 :cite:`simonyan2015vgg`, the paper (Eq. 2–3)
    minimises

    .. math::

        \mathcal{L}_{pef} = \sum_{m \in \{\text{rgb}, \text{ir}\}} \sum_{t=1}^{4}
            \frac{1}{C_t H_t W_t} \big\|\phi_t(f^m) - \phi_t(e^m)\big\|_F^2

    averaged over the images of each modality. The edge map is a constant target (no gradient); only
    :math:`f`, hence the stem, receives gradients. There is no official code, and the paper leaves open how
    the 64-channel :math:`f` (:math:`H/4 \times W/4`) enters a 3-channel VGG and how the 1-channel,
    full-resolution :math:`e` is matched to it. ``entry`` selects one of three readings:

    * ``"conv1_2"`` (default): feed :math:`f` to the first VGG layer that takes 64 channels, ``conv1_2``
      (``features[2]``; only ``conv1_1`` is skipped); :math:`e` is average-pooled to :math:`f`'s resolution
      and repeated to 64 channels; :math:`\phi_1, \dots, \phi_4` are the outputs of blocks 1–4. It is the
      default because it is the only reading that keeps both statements of the paper literally: the loss is
      computed "by the block1 to block4 of the VGG-16", and it is measured on the shallow *features*
      :math:`f` themselves (the paper's Fig. 4 argues about individual stem channels becoming active, which a
      channel-collapsed input could not constrain).
    * ``"block2"``: the third-party MSO code's choice: enter at ``conv2_1`` (``features[5]``, also 64
      channels) and compare the outputs of blocks 2–5; :math:`e` is matched as above (the third-party code
      uses a stride-4 edge convolution of a grayscale image instead, and does not freeze the VGG).
    * ``"image"``: collapse :math:`f` to one channel (channel mean), replicate :math:`f` and :math:`e` to three
      channels at :math:`f`'s resolution and run the standard blocks 1–4 (EDCNN's gray-to-RGB replication).

    A block's output is taken after its max pooling (``block_output="pool"``, the third-party code's taps),
    or after its last ReLU (``"relu"``: ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3``, the taps of the
    perceptual loss of Johnson et al. that the paper cites). The Sobel operator is applied to the images as
    given, i.e. to the normalised network input (the paper: "for each image, input it"; infrared images are
    3-channel replicated), with the paper's signed sum of the four directions by default (``combine``; see
    :func:`~vireid_layers.layers.sobel.sobel_edges` for why ``"abs"`` or ``"magnitude"`` may be preferable).

    Every MSE is computed in (at least) float32, also under autocast, with mean reduction per block, and the
    four blocks are summed. With ``modalities`` the per-image losses are averaged within each modality and the
    two averages are added, as Eq. 2 adds the two modalities (a modality absent from the batch adds 0); this
    equals calling the loss once per modality and adding the results. Without ``modalities`` the per-image
    losses are averaged over the batch (for a batch with as many images of each modality, half the
    ``modalities`` value).

    Only the VGG layers that the chosen entry uses are built (``features[2:24]`` for the default), with
    torchvision's parameter names (``features.2.weight``, ...), so torchvision state dicts load directly. They
    are frozen (``requires_grad=False``) and stay in eval mode whatever :meth:`train` is called with. They are
    part of the module's state dict; the loss has no other state.

    Args:
        entry: ``"conv1_2"`` (default), ``"block2"`` or ``"image"``; see above.
        weights: the VGG-16 weights: ``None`` (random init, e.g. for tests), ``"imagenet"`` (torchvision's
            ``VGG16_Weights.IMAGENET1K_V1``, downloaded and cached by torchvision), a path to a torchvision
            VGG-16 state dict (``.safetensors``, or a ``.pth`` read with ``torch.load(weights_only=True)``),
            or such a state dict. Only the ``features.*`` entries used are read.
        block_output: ``"pool"`` (default) or ``"relu"``: where each block's output is taken.
        combine: how the four Sobel responses are combined (``"sum"``, the paper's, default; ``"abs"``,
            ``"magnitude"``); ``"none"`` is not allowed here.
        reduction: ``"mean"`` (default: the averaging above, per modality with ``modalities``, else over the
            batch), ``"sum"`` (the per-image losses summed) or ``"none"`` (the :math:`N` per-image losses).
        device: device of the VGG weights.
        dtype: dtype of the VGG weights.

    Shape:
        - ``features``: :math:`(N, 64, h, w)`, the stem output (any number of channels for ``"image"``), with
          :math:`h, w \ge 16` (:math:`\ge 8` for ``block_output="relu"``) so that the last block keeps a
          position; MSO's 288×144 input gives :math:`72 \times 36`.
        - ``images``: :math:`(N, C, H, W)`, the images the stem received (:math:`H \ge h`, :math:`W \ge w`).
        - ``modalities``: :math:`(N,)` or ``None``.
        - Output: scalar (float32), or :math:`(N,)` with ``reduction="none"``.

    Examples:
        >>> pef = PEFLoss(weights=None)  # "imagenet" for the real thing
        >>> images = torch.randn(2, 3, 64, 64)
        >>> features = torch.rand(2, 64, 16, 16, requires_grad=True)  # the stem output (H/4 x W/4)
        >>> loss = pef(features, images, torch.tensor([0, 1]))
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)
    """

    def __init__(
        self,
        *,
        entry: PEFEntry = "conv1_2",
        weights: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
        block_output: PEFBlockOutput = "pool",
        combine: SobelCombine = "sum",
        reduction: Reduction = "mean",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.entry: str = check_choice(entry, "entry", _ENTRIES)
        self.reduction: str = check_reduction(reduction)
        self.block_output: str = check_choice(block_output, "block_output", _BLOCK_OUTPUTS)
        self.combine: str = check_choice(combine, "combine", _COMBINES[:3])
        if weights is not None and not isinstance(weights, (str, os.PathLike, Mapping)):
            raise TypeError(
                f"`weights` must be None, 'imagenet', a path or a state dict, got {type(weights).__name__} {weights!r}"
            )
        start, blocks = _ENTRY_LAYOUT[self.entry]
        shift = 0 if self.block_output == "pool" else 1
        taps = [_POOLS[b - 1] - shift for b in blocks]
        self.in_channels = 3 if self.entry == "image" else 64
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        layers = _vgg16_layers(dd)
        self.features = nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, taps[-1] + 1)))
        self._taps = tuple(t - start for t in taps)  # positions in self.features
        # The last compared block output must keep at least one position after its max poolings.
        self._min_size = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in self.features)
        self.reset_parameters()
        if weights is not None:
            self._load_vgg(_load_state_dict(weights), weights)
        self.features.requires_grad_(False)
        self.features.eval()

    def reset_parameters(self) -> None:
        """Torchvision's VGG initialisation (Kaiming-normal fan-out weights, zero biases)."""
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def _load_vgg(self, state_dict: Mapping[str, Tensor], source: object) -> None:
        own = self.features.state_dict()
        missing = [f"features.{key}" for key in own if f"features.{key}" not in state_dict]
        if missing:
            raise ValueError(
                f"`weights` ({type(source).__name__ if isinstance(source, Mapping) else repr(source)}) is not a "
                f"torchvision VGG-16 state dict: missing {missing[:4]}{' ...' if len(missing) > 4 else ''}"
            )
        self.features.load_state_dict({key: state_dict[f"features.{key}"] for key in own}, strict=True)

    def train(self, mode: bool = True) -> PEFLoss:
        """Set the training flag of the module; the frozen VGG always stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def _blocks(self, x: Tensor) -> list[Tensor]:
        r"""The VGG block outputs :math:`\phi_t` of ``x``, in order."""
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                outputs.append(x)
        return outputs

    def _feature_input(self, features: Tensor) -> Tensor:
        """The stem output as the VGG entry layer takes it: as is, or channel mean replicated to RGB."""
        if self.entry == "image":
            return features.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        return features

    def _edge_input(self, edges: Tensor) -> Tensor:
        """The one-channel edge map replicated to the entry layer's channels (64, or 3 for ``"image"``)."""
        return edges.expand(-1, self.in_channels, -1, -1)

    def forward(self, features: Tensor, images: Tensor, modalities: Tensor | None = None) -> Tensor:
        """Compute the loss of the stem ``features`` of ``images``; see the class docstring."""
        expected = "(N, C, h, w)" if self.entry == "image" else "(N, 64, h, w)"
        why = "" if self.entry == "image" else f"the stem output, for entry={self.entry!r}"
        features = check_floating(check_shape(features, "features", expected, why=why), "features")
        context = f"to match `features` of shape {tuple(features.shape)}"
        images = check_floating(check_shape(images, "images", "(N, C, H, W)"), "images")
        check_shape(images, "images", f"({features.shape[0]}, C, H, W)", why=context)
        if images.shape[2] < features.shape[2] or images.shape[3] < features.shape[3]:
            raise ValueError(
                f"`images` ({tuple(images.shape)}) must be at least as large as `features` "
                f"({tuple(features.shape)}) in height and width"
            )
        if min(features.shape[2:]) < self._min_size:
            raise ValueError(
                f"`features` must be at least {self._min_size}x{self._min_size} for entry={self.entry!r} and "
                f"block_output={self.block_output!r} (the VGG blocks halve it {self._min_size.bit_length() - 1} "
                f"times), got shape {tuple(features.shape)}"
            )
        n = features.shape[0]
        if modalities is not None:
            modalities = check_modalities(modalities, n)

        with torch.no_grad():  # the edge map is a constant target
            edges = sobel_edges(images.detach(), combine=self.combine)  # type: ignore[arg-type]
            edges = F.adaptive_avg_pool2d(edges, features.shape[-2:]).to(features.dtype)
            targets = self._blocks(self._edge_input(edges))
        outputs = self._blocks(self._feature_input(features))

        compute = torch.promote_types(features.dtype, torch.float32)
        per_image = features.new_zeros(n, dtype=compute)
        with torch.autocast(device_type=features.device.type, enabled=False):
            for output, target in zip(outputs, targets, strict=True):
                difference = output.to(compute) - target.to(compute)
                per_image = per_image + difference.pow(2).flatten(1).mean(1)
        if modalities is None or self.reduction != "mean":
            return reduce(per_image, self.reduction)
        infrared = modalities.bool()
        total = per_image.new_zeros(())
        for mask in (~infrared, infrared):  # the two modalities of Eq. 2
            total = total + torch.where(mask, per_image, torch.zeros_like(per_image)).sum() / mask.sum().clamp_min(1)
        return total

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``repr``."""
        text = f"entry={self.entry!r}, block_output={self.block_output!r}, combine={self.combine!r}"
        return text + (f", reduction={self.reduction!r}" if self.reduction != "mean" else "")
