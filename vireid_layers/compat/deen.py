r"""Load checkpoints of the official DEEN code :cite:`zhang2023deen` into :class:`~vireid_layers.models.DEEN`.

The official network holds three complete torchvision-style ResNet-50s: ``visible_module.visible`` and
``thermal_module.thermal`` of which only the stem (``conv1``, ``bn1``) runs, and ``base_resnet.base`` of which
only ``layer1``…``layer4`` run. Its other modules are ``MFA1``…``MFA3`` (``CNL`` and ``PNL``), ``DEE``
(``FC11``…``FC13``, ``FC1``, ``FC21``…``FC23``, ``FC2``), ``bottleneck`` (the BN neck) and ``classifier``.
What this loader shares with :mod:`vireid_layers.compat.agw` (reading, unwrapping, the two-stream key map) is in
``vireid_layers.compat._official``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .._validation import check_choice
from ..models.deen import DEEN, DEENVariant
from ._official import (
    BASE,
    OfficialConversion,
    OfficialLoadResult,
    convert_keys,
    load_converted,
    rename_two_stream_key,
    unwrap_state_dict,
)

__all__ = [
    "OfficialDEENConversion",
    "OfficialDEENLoadResult",
    "convert_official_deen_state_dict",
    "load_official_deen",
]

_VARIANTS = ("sysu", "regdb")
_MFA = re.compile(r"MFA(\d+)\.(.+)")
# Stages kept / MFA blocks used by each variant of the official (ResNet-50) network.
_KEPT_STAGES = {"sysu": 4, "regdb": 3}
_USED_MFA = {"sysu": 3, "regdb": 2}

#: The result of :func:`convert_official_deen_state_dict` (an alias of
#: :class:`~vireid_layers.compat.OfficialConversion`).
OfficialDEENConversion = OfficialConversion
#: The result of :func:`load_official_deen` (an alias of :class:`~vireid_layers.compat.OfficialLoadResult`).
OfficialDEENLoadResult = OfficialLoadResult


def convert_official_deen_state_dict(
    state_dict: Mapping[str, Any], *, variant: DEENVariant = "sysu"
) -> OfficialDEENConversion:
    """Rename the keys of an official DEEN checkpoint to those of :class:`~vireid_layers.models.DEEN`.

    =====================================================  ===========================================
    official key                                           DEEN key
    =====================================================  ===========================================
    ``visible_module.visible.{conv1,bn1}.*``               ``backbone.visible_stem.{conv1,bn1}.*``
    ``thermal_module.thermal.{conv1,bn1}.*``               ``backbone.infrared_stem.{conv1,bn1}.*``
    ``base_resnet.base.layer{i}.*``                        ``backbone.stages.{i-1}.*``
    ``MFA{i}.*`` (``CNL``, ``PNL``)                        ``mfa.{i-1}.*``
    ``DEE.*`` (``FC11``…``FC2``)                           ``dee.*``
    ``bottleneck.*``                                       ``neck.*``
    ``classifier.weight``                                  ``classifier.weight``
    =====================================================  ===========================================

    The MFA (``CNL``/``PNL``) and DEE (``FC11``…``FC2``) sub-keys keep their official names: the
    load-state-dict hooks of :class:`~vireid_layers.MFA` and :class:`~vireid_layers.DEE` convert them while
    loading (DEE fuses its per-branch convolutions), so the result loads with ``model.load_state_dict`` but
    its keys differ from ``model.state_dict()`` there.

    Dropped and reported in ``ignored_keys``: ``layer1``…``layer4``, ``fc`` and everything but ``conv1``/``bn1``
    of the visible and thermal ResNets; ``conv1``, ``bn1`` and ``fc`` of the base ResNet; and for
    ``variant="regdb"`` also ``layer4`` and ``MFA3`` (unused by the official RegDB network). A ``module.``
    prefix (``DataParallel``) is stripped. Keys in none of these groups (for instance keys already in the DEEN
    layout) are passed through unchanged, so a strict load reports anything foreign.

    Args:
        state_dict: the official state dict, or a checkpoint dict holding it under ``"net"`` (official
            ``train.py``), ``"state_dict"`` or ``"model"``.
        variant: ``"sysu"`` (SYSU-MM01 / LLCM network) or ``"regdb"``; checked against the DEE channels of
            the checkpoint when the base ResNet's stage keys allow it.

    Returns:
        :class:`OfficialDEENConversion` with the converted ``state_dict`` and the ``ignored_keys``.

    Raises:
        TypeError: if the state dict is not a mapping of strings to tensors.
        ValueError: if ``variant`` is unknown or does not match the checkpoint.

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import convert_official_deen_state_dict
        >>> official = {
        ...     "module.visible_module.visible.conv1.weight": torch.zeros(64, 3, 7, 7),
        ...     "module.visible_module.visible.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
        ...     "module.base_resnet.base.layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1),
        ...     "module.MFA1.CNL.g.weight": torch.zeros(64, 64, 1, 1),
        ...     "module.bottleneck.weight": torch.ones(2048),
        ... }
        >>> converted = convert_official_deen_state_dict({"net": official, "epoch": 80})
        >>> list(converted.state_dict)
        ['backbone.visible_stem.conv1.weight', 'backbone.stages.3.0.conv1.weight', 'mfa.0.CNL.g.weight', 'neck.weight']
        >>> converted.ignored_keys
        ['visible_module.visible.layer1.0.conv1.weight']
    """
    variant = check_choice(variant, "variant", _VARIANTS)
    state = unwrap_state_dict(state_dict)
    _check_variant(state, variant)
    return convert_keys(state, lambda key: _rename(key, variant))


def load_official_deen(
    model: DEEN, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True
) -> OfficialDEENLoadResult:
    """Load an official DEEN checkpoint (file or state dict) into a :class:`~vireid_layers.models.DEEN`.

    The model must be the official architecture: a ResNet-50 backbone (``backbone="resnet50"``, last
    stride 1), two DEE branches, and the variant of the checkpoint (``model.variant``; the number of classes
    must match the classifier). Both MFA forms load the same weights, but only ``mfa_form="official"``
    reproduces the official outputs.

    A file is read with ``torch.load(map_location="cpu", weights_only=True)``, with NumPy arrays and scalars
    allowed (the official ``train.py`` saves its metrics as NumPy values next to ``"net"``), also under the
    names a NumPy 1.x pickle gives them; ``.safetensors`` files are read with :mod:`safetensors`.

    Args:
        model: the DEEN to load into (modified in place).
        path_or_state_dict: a checkpoint path, or an official state dict / checkpoint dict (see
            :func:`convert_official_deen_state_dict`).
        strict: passed to :meth:`~torch.nn.Module.load_state_dict`; with ``True`` every model key must be
            present and no foreign key may remain.

    Returns:
        :class:`OfficialDEENLoadResult` with the missing, unexpected and ignored (dropped official) keys.

    Raises:
        TypeError: if ``model`` is not a DEEN or the checkpoint holds no state dict.
        ValueError: if the model cannot hold the official weights (not two DEE branches, variant mismatch),
            or the file cannot be read safely.
        FileNotFoundError: if the path does not exist.
        RuntimeError: from ``load_state_dict`` when keys or shapes do not match (``strict=True``).
    """
    if not isinstance(model, DEEN):
        raise TypeError(f"`model` must be a vireid_layers.models.DEEN, got {type(model).__name__}")
    if model.num_branches != 2:
        raise ValueError(f"the official DEE has 2 branches; `model` has num_branches={model.num_branches}")
    return load_converted(
        model,
        path_or_state_dict,
        lambda state: convert_official_deen_state_dict(state, variant=model.variant),  # type: ignore[arg-type]
        strict=strict,
    )


def _rename(key: str, variant: str) -> str | None:
    """The DEEN key of official ``key``; None when DEEN does not use it; ``key`` itself when foreign."""
    match = _MFA.fullmatch(key)
    if match is not None:
        block = int(match[1])
        return f"mfa.{block - 1}.{match[2]}" if block <= _USED_MFA[variant] else None
    if key.startswith("DEE."):
        return "dee." + key.removeprefix("DEE.")
    return rename_two_stream_key(key, _KEPT_STAGES[variant])


def _stage_channels(state: Mapping[str, Tensor], stage: int) -> int | None:
    weight = state.get(f"{BASE}layer{stage}.0.downsample.1.weight")
    return None if weight is None else int(weight.shape[0])


def _check_variant(state: Mapping[str, Tensor], variant: str) -> None:
    """Compare DEE's input channels with the stage outputs: stage 3's for SYSU, stage 2's for RegDB."""
    dee = state.get("DEE.FC11.weight")
    stage2, stage3 = _stage_channels(state, 2), _stage_channels(state, 3)
    if dee is None or dee.ndim != 4 or stage2 is None or stage3 is None or stage2 == stage3:
        return
    channels = int(dee.shape[1])
    found = {stage3: "sysu", stage2: "regdb"}.get(channels)
    if found is not None and found != variant:
        raise ValueError(
            f"the checkpoint is the {found!r} variant (DEE has {channels} input channels, the output of "
            f"layer{3 if found == 'sysu' else 2}), got variant={variant!r}"
        )
