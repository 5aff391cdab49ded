"""What every model of the package does the same way on the two-stream backbone (private helpers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._validation import check_shape
from ..backbones.two_stream import TwoStreamBackbone, build_two_stream_backbone
from ..modality import Modality

__all__ = ["embed_with_flip", "resolve_backbone"]


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
    """
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
