"""What every model of the package does the same way on the two-stream backbone (private helpers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_shape
from ..backbones.two_stream import TwoStreamBackbone, build_two_stream_backbone
from ..modality import Modality

__all__ = ["bn_neck_head", "embed_with_flip", "reset_bn_neck_head", "resolve_backbone"]


def resolve_backbone(
    backbone: object, pretrained: object, backbone_kwargs: Mapping[str, Any] | None
) -> TwoStreamBackbone:
    """The ``backbone`` argument of a model: a built :class:`TwoStreamBackbone` as it is, or a timm name built."""
    if isinstance(backbone, TwoStreamBackbone):
        if pretrained is not False or backbone_kwargs:
            raise ValueError(
                "`pretrained` and `backbone_kwargs` apply only when `backbone` is a timm model name; "
                "got an already built TwoStreamBackbone"
            )
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(
            f"`backbone` must be a timm model name or a TwoStreamBackbone, got {type(backbone).__name__} {backbone!r}"
        )
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, Mapping):
        raise TypeError(f"`backbone_kwargs` must be a mapping, got {type(backbone_kwargs).__name__}")
    return build_two_stream_backbone(backbone, pretrained=pretrained, **dict(backbone_kwargs or {}))


def embed_with_flip(
    embed: Callable[[Tensor, Tensor | int | Modality], Tensor],
    images: Tensor,
    modalities: Tensor | int | Modality,
    flip: bool,
) -> Tensor:
    """``embed(images, modalities)``, plus (``flip``) the embedding of the horizontally flipped images.

    Both halves go through one forward pass; the sum is not re-normalised (DEEN's ``test.py``).

    Raises:
        TypeError: ``flip`` is not a bool.
    """
    if not isinstance(flip, bool):
        raise TypeError(f"`flip` must be a bool, got {type(flip).__name__} {flip!r}")
    if not flip:
        return embed(images, modalities)
    images = check_shape(images, "images", "(N, C, H, W)", 4)
    n = images.shape[0]
    if isinstance(modalities, Tensor):
        if modalities.shape != (n,):
            raise ValueError(
                f"`modalities` must have shape ({n},) to match `images`, got shape {tuple(modalities.shape)}"
            )
        modalities = torch.cat([modalities, modalities])
    both = embed(torch.cat([images, images.flip(-1)]), modalities)
    return both[:n] + both[n:]


def bn_neck_head(dim: int, num_classes: int) -> tuple[nn.BatchNorm1d, nn.Linear]:
    """The official BN neck (``BatchNorm1d``, shift frozen at 0) and classifier (``Linear``, no bias).

    The models initialise them with :func:`reset_bn_neck_head` in their ``reset_parameters``.
    """
    neck = nn.BatchNorm1d(dim)
    neck.bias.requires_grad_(False)  # the official BN neck has no learned shift
    return neck, nn.Linear(dim, num_classes, bias=False)


def reset_bn_neck_head(neck: nn.BatchNorm1d, classifier: nn.Linear) -> None:
    r"""Initialise the BN neck and classifier officially.

    Neck weight :math:`\mathcal N(1, 0.01)`, bias 0, fresh running statistics; classifier weight
    :math:`\mathcal N(0, 0.001)`.
    """
    neck.reset_running_stats()
    with torch.no_grad():
        nn.init.normal_(neck.weight, 1.0, 0.01)
        nn.init.zeros_(neck.bias)
        nn.init.normal_(classifier.weight, 0.0, 0.001)
