r"""Load checkpoints of the official DDAG code :cite:`ye2020ddag` into :class:`~vireid_layers.models.DDAG`.

The official ``embed_net(512, n_class, part=3, wpa=True)`` of ``train_ddag.py`` holds the three ResNet-50s of
DEEN and AGW (only the two stems and the trunk's stages run), ``bottleneck`` (the BN neck), ``classifier`` and the
dead ``classifier1`` / ``classifier2``, the IWPA module ``wpa`` (``gate``, ``fc1.0``, ``fc2``, ``fc3``, the dead
``W`` block, ``bottleneck``) and the graph-attention heads ``attention_{0..3}`` and ``out_att``: 991 state-dict
entries. What this loader shares with :mod:`vireid_layers.compat.agw` is in ``vireid_layers.compat._official``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ..models.ddag import DDAG
from ._official import (
    OfficialConversion,
    OfficialLoadResult,
    convert_keys,
    load_converted,
    rename_two_stream_key,
    unwrap_state_dict,
)

__all__ = ["convert_official_ddag_state_dict", "load_official_ddag"]

# Never called by the official forward: two extra classifiers and IWPA's W block (official_checkpoints.md §4.4).
_DEAD = ("classifier1.", "classifier2.", "wpa.W.")
_GRAPH = re.compile(r"(?:attention_\d+|out_att)\..+")
_STAGES = 4


def convert_official_ddag_state_dict(state_dict: Mapping[str, Any]) -> OfficialConversion:
    """Rename the keys of an official DDAG checkpoint to those of :class:`~vireid_layers.models.DDAG`.

    =====================================================  ===========================================
    official key                                           DDAG key
    =====================================================  ===========================================
    ``visible_module.visible.{conv1,bn1}.*``               ``backbone.visible_stem.{conv1,bn1}.*``
    ``thermal_module.thermal.{conv1,bn1}.*``               ``backbone.infrared_stem.{conv1,bn1}.*``
    ``base_resnet.base.layer{i}.*``                        ``backbone.stages.{i-1}.*``
    ``bottleneck.*``                                       ``neck.*``
    ``classifier.weight``                                  ``classifier.weight``
    ``wpa.{gate,fc1.0,fc2,fc3,bottleneck}.*``              ``iwpa.*`` (same sub-keys)
    ``attention_{i}.{W,a}``                                ``cgsa.attention_{i}.{W,a}``
    ``out_att.{W,a}``                                      ``cgsa.out_att.{W,a}``
    =====================================================  ===========================================

    The IWPA and graph sub-keys keep their official names: the load-state-dict hooks of
    :class:`~vireid_layers.IWPA` (``fc1.0`` -> ``fc1``) and :class:`~vireid_layers.CGSA` (the four heads'
    ``W`` / ``a`` stacked into ``attentions.W`` / ``attentions.a``) convert them while loading, so the result
    loads with ``model.load_state_dict`` but its keys differ from ``model.state_dict()`` there.

    Dropped and reported in ``ignored_keys``, as never run by the official network: ``layer1``…``layer4`` (and
    ``fc``) of the visible and thermal ResNets, ``conv1``, ``bn1`` (and ``fc``) of the base ResNet,
    ``classifier1``, ``classifier2`` and IWPA's ``wpa.W.*``: 639 of the 991 entries. A ``module.`` prefix
    (``DataParallel``) is stripped. Keys in none of these groups (for instance keys already in the DDAG layout)
    are passed through unchanged, so a strict load reports anything foreign.

    Args:
        state_dict: the official state dict, or a checkpoint dict holding it under ``"net"`` (official
            ``train_ddag.py``), ``"state_dict"`` or ``"model"``.

    Returns:
        :class:`~vireid_layers.compat.OfficialConversion` with the converted ``state_dict`` and the
        ``ignored_keys``.

    Raises:
        TypeError: if the state dict is not a mapping of strings to tensors.

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import convert_official_ddag_state_dict
        >>> official = {
        ...     "module.visible_module.visible.bn1.bias": torch.zeros(64),
        ...     "module.base_resnet.base.conv1.weight": torch.zeros(64, 3, 7, 7),
        ...     "module.classifier1.weight": torch.zeros(395, 2048),
        ...     "module.wpa.fc1.0.weight": torch.zeros(2048, 2048, 1, 1),
        ...     "module.wpa.W.0.bias": torch.zeros(2048),
        ...     "module.attention_3.a": torch.zeros(1024, 1),
        ... }
        >>> converted = convert_official_ddag_state_dict({"net": official, "epoch": 40})
        >>> for key in converted.state_dict:
        ...     print(key)
        backbone.visible_stem.bn1.bias
        iwpa.fc1.0.weight
        cgsa.attention_3.a
        >>> converted.ignored_keys
        ['base_resnet.base.conv1.weight', 'classifier1.weight', 'wpa.W.0.bias']
    """
    return convert_keys(unwrap_state_dict(state_dict), _rename)


def load_official_ddag(
    model: DDAG, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True
) -> OfficialLoadResult:
    """Load an official DDAG checkpoint (file or state dict) into a :class:`~vireid_layers.models.DDAG`.

    The model must be the official architecture: ``DDAG(num_classes)`` with the default ResNet-50 backbone (last
    stride 1), ``parts=3``, ``graph_hidden=512`` and ``graph_heads=4`` (the ``train_ddag.py`` defaults, which
    fix the shapes); ``num_classes`` must match the classifier (395 for SYSU-MM01, 206 for RegDB). Both IWPA
    forms load the same weights, but only ``iwpa_form="official"`` (the default) reproduces the official
    outputs. Then :meth:`DDAG.embed <vireid_layers.models.DDAG.embed>` gives the official test features
    (``"att"``, the one the official script selects checkpoints on, and ``"fc"``).

    A file is read with ``torch.load(map_location="cpu", weights_only=True)``, with the NumPy values of the
    official ``*_best.t`` files allowed (``cmc`` array, ``mAP`` scalar, also as pickled under NumPy 1.x);
    ``.safetensors`` files are read with :mod:`safetensors`.

    Args:
        model: the DDAG to load into (modified in place).
        path_or_state_dict: a checkpoint path, or an official state dict / checkpoint dict (see
            :func:`convert_official_ddag_state_dict`).
        strict: passed to :meth:`~torch.nn.Module.load_state_dict`; with ``True`` every model key must be
            present and no foreign key may remain.

    Returns:
        :class:`~vireid_layers.compat.OfficialLoadResult` with the missing, unexpected and ignored (dropped
        dead official) keys.

    Raises:
        TypeError: if ``model`` is not a DDAG or the checkpoint holds no state dict.
        ValueError: if the file cannot be read safely.
        FileNotFoundError: if the path does not exist.
        RuntimeError: from ``load_state_dict`` when keys or shapes do not match (``strict=True``).

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import load_official_ddag
        >>> from vireid_layers.models import DDAG
        >>> model = DDAG(4, backbone="resnet18", graph_hidden=8)
        >>> official = {"wpa.gate": torch.tensor([1.0, 2.0, 3.0]), "classifier2.weight": torch.zeros(4, 512)}
        >>> result = load_official_ddag(model, official, strict=False)
        >>> model.iwpa.gate.tolist(), result.ignored_keys
        ([1.0, 2.0, 3.0], ['classifier2.weight'])
    """
    if not isinstance(model, DDAG):
        raise TypeError(f"`model` must be a vireid_layers.models.DDAG, got {type(model).__name__}")
    return load_converted(model, path_or_state_dict, convert_official_ddag_state_dict, strict=strict)


def _rename(key: str) -> str | None:
    """The DDAG key of official ``key``; None when DDAG does not use it; ``key`` itself when foreign."""
    if key.startswith(_DEAD):
        return None
    if key.startswith("wpa."):
        return "iwpa." + key.removeprefix("wpa.")
    if _GRAPH.fullmatch(key):
        return "cgsa." + key
    return rename_two_stream_key(key, _STAGES)
