r"""Load checkpoints of the official AGW code :cite:`ye2021agw` into :class:`~vireid_layers.models.AGW`.

The official cross-modality baseline (``embed_net(n_class, no_local='on', gm_pool='on')``) holds the three
ResNet-50s of DEEN and DDAG (only the two stems and the trunk's stages run), five non-local blocks ``NL_2.{0,1}``
(512 channels, after layer2 blocks 2 and 3) and ``NL_3.{0,1,2}`` (1024 channels, after layer3 blocks 3, 4 and 5)
with a one-channel bottleneck, ``bottleneck`` (the BN neck) and ``classifier``: 1025 state-dict entries.
What this loader shares with :mod:`vireid_layers.compat.deen` is in ``vireid_layers.compat._official``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ..models.agw import AGW
from ._official import (
    OfficialConversion,
    OfficialLoadResult,
    convert_keys,
    load_converted,
    rename_two_stream_key,
    unwrap_state_dict,
)

__all__ = ["convert_official_agw_state_dict", "load_official_agw"]

_NON_LOCAL = re.compile(r"NL_(\d+)\.(\d+)\.(.+)")
_STAGES = 4


def convert_official_agw_state_dict(state_dict: Mapping[str, Any]) -> OfficialConversion:
    """Rename the keys of an official AGW checkpoint to those of :class:`~vireid_layers.models.AGW`.

    =====================================================  ===========================================
    official key                                           AGW key
    =====================================================  ===========================================
    ``visible_module.visible.{conv1,bn1}.*``               ``backbone.visible_stem.{conv1,bn1}.*``
    ``thermal_module.thermal.{conv1,bn1}.*``               ``backbone.infrared_stem.{conv1,bn1}.*``
    ``base_resnet.base.layer{i}.*``                        ``backbone.stages.{i-1}.*``
    ``NL_{i}.{j}.*``                                       ``non_local.{i-1}.{j}.*``
    ``bottleneck.*``                                       ``neck.*``
    ``classifier.weight``                                  ``classifier.weight``
    =====================================================  ===========================================

    The non-local sub-keys (``g.0``, ``theta``, ``phi``, ``W.0``, ``W.1``) are those of
    :class:`~vireid_layers.NonLocal`. Dropped and reported in ``ignored_keys``, as never run by the official
    network: ``layer1``…``layer4`` (and ``fc``) of the visible and thermal ResNets, ``conv1``, ``bn1`` (and
    ``fc``) of the base ResNet. A ``module.`` prefix (``DataParallel``) is stripped. Keys in none of these
    groups (for instance keys already in the AGW layout) are passed through unchanged, so a strict load
    reports anything foreign.

    Args:
        state_dict: the official state dict, or a checkpoint dict holding it under ``"net"`` (official
            ``train.py``, best and periodic files alike), ``"state_dict"`` or ``"model"``.

    Returns:
        :class:`~vireid_layers.compat.OfficialConversion` with the converted ``state_dict`` and the
        ``ignored_keys``.

    Raises:
        TypeError: if the state dict is not a mapping of strings to tensors.

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import convert_official_agw_state_dict
        >>> official = {
        ...     "thermal_module.thermal.bn1.weight": torch.ones(64),
        ...     "thermal_module.thermal.layer2.0.conv1.weight": torch.zeros(128, 256, 1, 1),
        ...     "base_resnet.base.layer3.5.conv3.weight": torch.zeros(1024, 256, 1, 1),
        ...     "NL_3.2.W.1.running_var": torch.ones(1024),
        ...     "bottleneck.bias": torch.zeros(2048),
        ... }
        >>> converted = convert_official_agw_state_dict({"net": official, "epoch": 60})
        >>> for key in converted.state_dict:
        ...     print(key)
        backbone.infrared_stem.bn1.weight
        backbone.stages.2.5.conv3.weight
        non_local.2.2.W.1.running_var
        neck.bias
        >>> converted.ignored_keys
        ['thermal_module.thermal.layer2.0.conv1.weight']
    """
    return convert_keys(unwrap_state_dict(state_dict), _rename)


def load_official_agw(
    model: AGW, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True
) -> OfficialLoadResult:
    """Load an official AGW checkpoint (file or state dict) into a :class:`~vireid_layers.models.AGW`.

    The model must be the official architecture: ``AGW(num_classes)`` with the default ResNet-50 backbone (last
    stride 1), the official non-local placement and ``non_local_form="official"`` (the one-channel bottleneck the
    checkpoints hold), fixed GeM; or ``method="base"`` for a ``--method base`` checkpoint. ``num_classes`` must
    match the classifier (395 for SYSU-MM01, 206 for RegDB). Then :meth:`AGW.embed
    <vireid_layers.models.AGW.embed>` gives the official test features (``"fc"`` and ``"pool"``).

    A file is read with ``torch.load(map_location="cpu", weights_only=True)``, with the NumPy values of the
    official files allowed (``cmc`` array, ``mAP`` / ``mINP`` scalars, also as pickled under NumPy 1.x);
    ``.safetensors`` files are read with :mod:`safetensors`. Both official files load: ``*_best.t`` and the
    periodic ``*_epoch_{n}.t``.

    Args:
        model: the AGW to load into (modified in place).
        path_or_state_dict: a checkpoint path, or an official state dict / checkpoint dict (see
            :func:`convert_official_agw_state_dict`).
        strict: passed to :meth:`~torch.nn.Module.load_state_dict`; with ``True`` every model key must be
            present and no foreign key may remain.

    Returns:
        :class:`~vireid_layers.compat.OfficialLoadResult` with the missing, unexpected and ignored (dropped
        dead official) keys.

    Raises:
        TypeError: if ``model`` is not an AGW or the checkpoint holds no state dict.
        ValueError: if the model has corrected non-local blocks (the checkpoints hold the official form), or
            the file cannot be read safely.
        FileNotFoundError: if the path does not exist.
        RuntimeError: from ``load_state_dict`` when keys or shapes do not match (``strict=True``).

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import load_official_agw
        >>> from vireid_layers.models import AGW
        >>> model = AGW(4, backbone="resnet18", non_local_blocks=(0, 1, 0, 0))
        >>> official = {"NL_2.0.g.0.bias": torch.ones(1), "visible_module.visible.fc.weight": torch.zeros(4, 512)}
        >>> result = load_official_agw(model, official, strict=False)
        >>> model.non_local[1][0].g[0].bias.item(), result.ignored_keys
        (1.0, ['visible_module.visible.fc.weight'])
    """
    if not isinstance(model, AGW):
        raise TypeError(f"`model` must be a vireid_layers.models.AGW, got {type(model).__name__}")
    if model.non_local_form != "official" and any(len(blocks) for blocks in model.non_local):
        raise ValueError(
            "official AGW checkpoints hold the one-channel non-local blocks of non_local_form='official'; "
            f"`model` has non_local_form={model.non_local_form!r}"
        )
    return load_converted(model, path_or_state_dict, convert_official_agw_state_dict, strict=strict)


def _rename(key: str) -> str | None:
    """The AGW key of official ``key``; None when AGW does not use it; ``key`` itself when foreign."""
    match = _NON_LOCAL.fullmatch(key)
    if match is not None:
        return f"non_local.{int(match[1]) - 1}.{match[2]}.{match[3]}"
    return rename_two_stream_key(key, _STAGES)
