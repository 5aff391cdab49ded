r"""Load checkpoints of the official MPANet code :cite:`wu2021mpanet` into :class:`~vireid_layers.models.MPANet`.

The official ``Baseline`` (DoubtedSteam/MPANet) is a single ResNet-50 ``backbone`` with the MAMs
``backbone.MAM3`` / ``backbone.MAM4`` registered inside it, the PAM convolution ``spatial_attention``, the
modality classifiers ``visible_classifier`` / ``infrared_classifier`` and their EMA copies
``visible_classifier_`` / ``infrared_classifier_``, the BN neck ``bn_neck`` and ``classifier``: 334 state-dict
entries, none dead. Its training engine saves the bare ``model.state_dict()`` (``model_best.pth`` and the
periodic ``{prefix}_model_{epoch}.pth``), without metrics.

The renaming itself lives in one place, :mod:`vireid_layers.models.mpanet`: :class:`~vireid_layers.models.MPANet`
applies it in a load-state-dict hook (so ``model.load_state_dict(official)`` works too), and this module
applies the same function and adds the safe file reading, the unwrapping and the ``module.`` stripping of the
other loaders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..models.mpanet import MPANet, _official_key_names
from ._official import OfficialConversion, OfficialLoadResult, load_converted, unwrap_state_dict

__all__ = ["convert_official_mpanet_state_dict", "load_official_mpanet"]


def convert_official_mpanet_state_dict(state_dict: Mapping[str, Any]) -> OfficialConversion:
    """Rename the keys of an official MPANet checkpoint to those of :class:`~vireid_layers.models.MPANet`.

    =====================================================  ===========================================
    official key                                           MPANet key
    =====================================================  ===========================================
    ``backbone.{conv1,bn1}.*``                             ``backbone.visible_stem.{conv1,bn1}.*`` and
                                                           ``backbone.infrared_stem.{conv1,bn1}.*``
    ``backbone.layer{i}.*``                                ``backbone.stages.{i-1}.*``
    ``backbone.MAM{i}.channel_attention.{0,2}.weight``     ``mam.{i}.channel_attention.{0,2}.weight``
    ``spatial_attention.{weight,bias}``                    ``pam.spatial_attention.{weight,bias}``
    ``{visible,infrared}_classifier{,_}.weight``           ``modality_classifiers.*`` (same names)
    ``bn_neck.*``                                          ``neck.*``
    ``classifier.weight``                                  ``classifier.weight``
    =====================================================  ===========================================

    The official network has one stem; its weights go to both stems of the two-stream backbone (the tensor
    is shared, and with ``shared_stem=True`` only the visible one runs). The MAM, PAM and modality-classifier
    sub-keys keep their official names: the load-state-dict hooks of :class:`~vireid_layers.MAM`
    (``channel_attention.{0,2}`` -> ``fc1`` / ``fc2``), :class:`~vireid_layers.PAM`
    (``spatial_attention`` -> ``generator``) and :class:`~vireid_layers.ModalityClassifiers` convert them
    while loading, so the result loads with ``model.load_state_dict`` but its keys differ from
    ``model.state_dict()`` there. Nothing is dropped: every official entry is used in training
    (``ignored_keys`` is empty). A ``module.`` prefix (``DataParallel``) is stripped. Other keys (for instance
    keys already in the MPANet layout) are passed through unchanged, so a strict load reports anything foreign.

    Args:
        state_dict: the official bare state dict (``model_best.pth``, ``{prefix}_model_{epoch}.pth``), or a
            checkpoint dict holding it under ``"net"``, ``"state_dict"`` or ``"model"``.

    Returns:
        :class:`~vireid_layers.compat.OfficialConversion` with the converted ``state_dict`` and the (empty)
        ``ignored_keys``.

    Raises:
        TypeError: if the state dict is not a mapping of strings to tensors.

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import convert_official_mpanet_state_dict
        >>> official = {
        ...     "module.backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
        ...     "module.backbone.layer4.2.bn3.bias": torch.zeros(2048),
        ...     "module.backbone.MAM3.channel_attention.0.weight": torch.zeros(64, 1024, 1, 1),
        ...     "module.infrared_classifier_.weight": torch.zeros(395, 14336),
        ...     "module.bn_neck.running_var": torch.ones(14336),
        ... }
        >>> converted = convert_official_mpanet_state_dict(official)
        >>> for key in converted.state_dict:
        ...     print(key)
        backbone.visible_stem.conv1.weight
        backbone.infrared_stem.conv1.weight
        backbone.stages.3.2.bn3.bias
        mam.3.channel_attention.0.weight
        modality_classifiers.infrared_classifier_.weight
        neck.running_var
        >>> converted.ignored_keys
        []
    """
    converted: dict[str, Tensor] = {}
    for key, value in unwrap_state_dict(state_dict).items():
        for new in _official_key_names(key):
            converted[new] = value
    return OfficialConversion(converted, [])


def load_official_mpanet(
    model: MPANet, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True
) -> OfficialLoadResult:
    """Load an official MPANet checkpoint (file or state dict) into a :class:`~vireid_layers.models.MPANet`.

    The model must be the official architecture: ``MPANet(num_classes)`` with the default ResNet-50 backbone
    (last stride 1), ``num_parts=6``, ``modality_attention=2`` and ``mam_reduction=16`` (the SYSU and RegDB
    configurations); ``num_classes`` must match the classifiers (395 for SYSU-MM01, 206 for RegDB). Then
    :meth:`MPANet.embed <vireid_layers.models.MPANet.embed>` gives the official test feature, the 14,336-d
    BN-neck output (L2-normalised for SYSU-MM01, ``normalize=False`` for the official RegDB evaluation).

    A file is read with ``torch.load(map_location="cpu", weights_only=True)`` (the official files are bare
    state dicts, which this reads as they are); ``.safetensors`` files are read with :mod:`safetensors`.

    Args:
        model: the MPANet to load into (modified in place).
        path_or_state_dict: a checkpoint path, or an official state dict (see
            :func:`convert_official_mpanet_state_dict`).
        strict: passed to :meth:`~torch.nn.Module.load_state_dict`; with ``True`` every model key must be
            present and no foreign key may remain.

    Returns:
        :class:`~vireid_layers.compat.OfficialLoadResult` with the missing and unexpected keys; its
        ``ignored_keys`` is empty (the official network has no dead entry).

    Raises:
        TypeError: if ``model`` is not an MPANet or the checkpoint holds no state dict.
        ValueError: if the file cannot be read safely.
        FileNotFoundError: if the path does not exist.
        RuntimeError: from ``load_state_dict`` when keys or shapes do not match (``strict=True``).

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import load_official_mpanet
        >>> from vireid_layers.models import MPANet
        >>> model = MPANet(4, backbone="resnet18")
        >>> official = {"spatial_attention.bias": torch.arange(6.0), "backbone.bn1.bias": torch.ones(64)}
        >>> result = load_official_mpanet(model, official, strict=False)
        >>> model.pam.generator.bias.tolist(), result.ignored_keys
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [])
        >>> model.backbone.infrared_stem.bn1.bias.sum().item()
        64.0
    """
    if not isinstance(model, MPANet):
        raise TypeError(f"`model` must be a vireid_layers.models.MPANet, got {type(model).__name__}")
    return load_converted(model, path_or_state_dict, convert_official_mpanet_state_dict, strict=strict)
