r"""Read an official checkpoint safely and tell which official network (DEEN, AGW, DDAG, MPANet) wrote it.

The key groups that identify each network are those of ``reference/official_checkpoints.md`` (see
:doc:`/deen`, :doc:`/agw`, :doc:`/ddag`, :doc:`/mpanet`): DEEN, AGW and DDAG share the three ResNet-50s
``base_resnet.base`` / ``visible_module.visible`` / ``thermal_module.thermal`` and differ by their own modules,
MPANet has a single ``backbone`` with ``bn_neck`` and ``spatial_attention``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ._official import read_checkpoint, unwrap_state_dict

__all__ = ["OfficialModel", "detect_official_model", "read_official_checkpoint"]

#: The official networks whose checkpoints :mod:`vireid_layers.compat` loads.
OfficialModel = Literal["deen", "agw", "ddag", "mpanet"]

_THREE_RESNETS = ("base_resnet.base.", "visible_module.visible.", "thermal_module.thermal.")
# The modules of each three-ResNet network (an AGW --method base file has none: the three ResNets and the head).
_OWN_MODULES = {
    "deen": ("DEE.", "MFA1."),
    "agw": ("NL_",),
    "ddag": ("wpa.", "attention_0.", "out_att.", "classifier1."),
}
_MPANET = ("bn_neck.", "spatial_attention.", "backbone.MAM", "visible_classifier_.")
_NAMES = {"deen": "DEEN", "agw": "AGW", "ddag": "DDAG", "mpanet": "MPANet"}


def read_official_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Read an official checkpoint file safely: ``torch.load(weights_only=True)`` with its NumPy values allowed.

    The official DEEN, DDAG and AGW scripts save ``{"net": state_dict, "cmc": ndarray, "mAP": float64,
    ["mINP": float64,] "epoch": int}``, which the plain ``torch.load(weights_only=True)`` of torch 2.6 and later
    refuses. This allows exactly NumPy's array and scalar reconstructors and dtypes (also under the
    ``numpy.core.multiarray`` names of a file pickled under NumPy 1.x), nothing else. MPANet's bare state
    dicts read as they are; ``.safetensors`` files are read with :mod:`safetensors`. Tensors are mapped to the
    CPU.

    Args:
        path: the checkpoint file.

    Returns:
        The object as saved: the wrapper dict with its metrics, or the bare state dict.

    Raises:
        TypeError: if ``path`` is not a path.
        FileNotFoundError: if the file does not exist.
        ValueError: if the file holds other objects than tensors, containers and NumPy values (load such a
            file yourself with ``weights_only=False``, and only if you trust it).

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> import torch
        >>> from vireid_layers.compat import read_official_checkpoint
        >>> saved = {"net": {"bottleneck.bias": torch.zeros(2)}, "mAP": np.float64(0.5), "epoch": 40}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     torch.save(saved, f"{folder}/sysu_best.t")
        ...     checkpoint = read_official_checkpoint(f"{folder}/sysu_best.t")
        >>> sorted(checkpoint), float(checkpoint["mAP"]), checkpoint["epoch"]
        (['epoch', 'mAP', 'net'], 0.5, 40)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a path, got {type(path).__name__} {path!r}")
    return read_checkpoint(Path(path))


def detect_official_model(path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]) -> OfficialModel:
    """Which official network saved a checkpoint: ``"deen"``, ``"agw"``, ``"ddag"`` or ``"mpanet"``, from its keys.

    * ``base_resnet.base.*`` / ``visible_module.visible.*`` / ``thermal_module.thermal.*`` (the three
      ResNet-50s) with ``DEE.*`` / ``MFA1.*``: DEEN; with ``wpa.*``, ``attention_0.*``, ``out_att.*`` or
      ``classifier1.*``: DDAG; with ``NL_*`` or none of these (``--method base``): AGW.
    * ``bn_neck.*``, ``spatial_attention.*``, ``backbone.MAM*`` or ``visible_classifier_.*``: MPANet.

    The state dict may be wrapped (``"net"``, ``"state_dict"``, ``"model"``) and carry a ``module.`` prefix.
    A state dict in the library's own layout is none of these.

    Args:
        path_or_state_dict: a checkpoint file (read with :func:`read_official_checkpoint`), or the state dict /
            checkpoint dict.

    Returns:
        The network's name, as the recipes and :doc:`/evaluation`'s ``examples/evaluate.py --model`` name it.

    Raises:
        ValueError: if no official network matches the keys, or several do (the message names a key of each),
            or the file cannot be read safely.
        TypeError: if the checkpoint holds no state dict.
        FileNotFoundError: if the path does not exist.

    Examples:
        >>> import torch
        >>> from vireid_layers.compat import detect_official_model
        >>> base = {"base_resnet.base.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}
        >>> detect_official_model({"net": {**base, "wpa.gate": torch.ones(3)}})
        'ddag'
        >>> detect_official_model({**base, "bottleneck.weight": torch.ones(2048)})  # AGW --method base
        'agw'
        >>> detect_official_model({"module.bn_neck.weight": torch.ones(14336)})
        'mpanet'
    """
    if isinstance(path_or_state_dict, Mapping):
        checkpoint: Mapping[str, Any] = path_or_state_dict
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        checkpoint = read_official_checkpoint(path_or_state_dict)
    else:
        raise TypeError(
            "`path_or_state_dict` must be a path or a state dict, got "
            f"{type(path_or_state_dict).__name__} {path_or_state_dict!r}"
        )
    keys = list(unwrap_state_dict(checkpoint))
    evidence: dict[str, str] = {}
    if three := next((k for k in keys if k.startswith(_THREE_RESNETS)), None):
        for name, prefixes in _OWN_MODULES.items():
            if key := next((k for k in keys if k.startswith(prefixes)), None):
                evidence[name] = key
        if not evidence:
            evidence["agw"] = three
    if key := next((k for k in keys if k.startswith(_MPANET)), None):
        evidence["mpanet"] = key
    if len(evidence) == 1:
        return next(iter(evidence))  # type: ignore[return-value]
    if not evidence:
        raise ValueError(
            "not an official DEEN, AGW, DDAG or MPANet checkpoint: none of its keys is "
            f"{' / '.join(p + '*' for p in _THREE_RESNETS)} or {' / '.join(p + '*' for p in _MPANET)} "
            f"(first keys: {keys[:3]})"
        )
    found = ", ".join(f"{_NAMES[name]} ({key!r})" for name, key in evidence.items())
    raise ValueError(f"ambiguous official checkpoint: it has keys of {found}; name the network explicitly")
