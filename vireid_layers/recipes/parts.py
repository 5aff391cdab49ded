"""The pieces the recipes share: parameter groups, the forward and gather of batches, transforms by name.

:func:`head_param_groups` (the BN neck and classifier at the full rate), :func:`image_forward` and
:func:`gather_outputs_and_labels` (an ``ImageSample`` batch into the model and across DDP ranks) and
:func:`build_pipeline` (a training transform by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..data import build_train_transform
from ..engine import all_gather_cat

__all__ = ["build_pipeline", "gather_outputs_and_labels", "head_param_groups", "image_forward"]


def head_param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 5e-4,
    backbone_scale: float = 0.1,
    head: Callable[[str], bool] | None = None,
) -> list[dict]:
    """The official parameter groups of DEEN, AGW and DDAG: the head at ``lr``, the rest at ``backbone_scale * lr``.

    The head is the BN neck and the classifier (names starting with ``neck.`` or ``classifier.``, as in
    :class:`~vireid_layers.models.DEEN` and :class:`~vireid_layers.models.AGW`); everything else, AGW's
    non-local blocks and DEEN's MFA and DEE included, is in the backbone group, as in the official code.
    Parameters with ``requires_grad=False`` (the frozen BN-neck bias) are left out. Each group carries
    ``base_lr``, the rate the trainer's per-epoch schedule multiplies.

    Args:
        model: the network.
        lr: base learning rate of the head (official 0.1).
        weight_decay: on every group (official 5e-4).
        backbone_scale: factor of the other parameters' rate (official 0.1).
        head: ``name -> bool`` telling which parameters belong to the head; default: names starting with
            ``neck.`` or ``classifier.``.

    Returns:
        Two groups for ``torch.optim.SGD``: ``[backbone, head]``.

    Raises:
        ValueError: no parameter belongs to the head.

    Examples:
        >>> net = nn.ModuleDict({"body": nn.Linear(2, 2), "classifier": nn.Linear(2, 3)})
        >>> [(len(g["params"]), g["lr"]) for g in head_param_groups(net, 0.1)]
        [(2, 0.010000000000000002), (2, 0.1)]
    """
    if head is None:

        def head(name: str) -> bool:
            return name.startswith(("neck.", "classifier."))

    backbone, top = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (top if head(name) else backbone).append(param)
    if not top:
        raise ValueError("no head parameters found (expected names starting with 'neck.' or 'classifier.')")
    return [
        {"params": backbone, "lr": lr * backbone_scale, "base_lr": lr * backbone_scale, "weight_decay": weight_decay},
        {"params": top, "lr": lr, "base_lr": lr, "weight_decay": weight_decay},
    ]


def image_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch.image, batch.modality)``: the training forward of the package's models on an ``ImageSample``."""
    return model(batch.image, batch.modality)


def gather_outputs_and_labels(output: Any, batch: Any) -> tuple[Any, Any]:
    """Merge a model output and its ``ImageSample`` batch across DDP ranks for the losses.

    The output gathers itself (``output.gather()``: :meth:`DEENOutput.gather <vireid_layers.models.DEENOutput.gather>`
    keeps DEEN's block layout); of the batch only the identities, cameras and modalities are gathered: the losses
    do not read the images, which are not sent (``image`` becomes an empty slice).
    """
    small = batch._replace(
        image=batch.image[:0],
        identity=all_gather_cat(batch.identity),
        camera=all_gather_cat(batch.camera),
        modality=all_gather_cat(batch.modality),
    )
    return output.gather(), small


def build_pipeline(name: str, height: int, width: int) -> Callable[[Any], Tensor]:
    """A registered training transform by name (:data:`~vireid_layers.data.TRAIN_PIPELINES`) at this size."""
    return build_train_transform(name, height=height, width=width)
