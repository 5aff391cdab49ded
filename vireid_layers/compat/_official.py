r"""What the loaders of official checkpoints share (private): safe reading, unwrapping, the two-stream key map.

The official DEEN, DDAG and AGW networks hold three complete torchvision-style ResNet-50s:
``thermal_module.thermal`` and ``visible_module.visible``, of which only the stem (``conv1``, ``bn1``) runs, and
``base_resnet.base``, of which only ``layer1``…``layer4`` run; then a BN neck ``bottleneck`` and a classifier
``classifier``. timm's and torchvision's ResNets share the key layout (``conv1``, ``bn1``, ``layer1.0.conv1``, …,
``layer1.0.downsample.0``/``.1``) and the stride placement (on the :math:`3\times3` convolution), so the stage keys
map one to one onto :class:`~vireid_layers.TwoStreamBackbone`'s ``stages.{i-1}``.

Their training scripts save ``{"net": state_dict, "cmc": ndarray, "mAP": float64, ["mINP": float64,] "epoch":
int}``; the NumPy values need an allowlist under ``torch.load(weights_only=True)``, and a file written under
NumPy 1.x names NumPy's reconstructors ``numpy.core.multiarray.*`` where NumPy 2 has ``numpy._core.multiarray.*``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "OfficialConversion",
    "OfficialLoadResult",
    "convert_keys",
    "load_converted",
    "numpy_safe_globals",
    "read_checkpoint",
    "rename_two_stream_key",
    "unwrap_state_dict",
]

# Entries under which training scripts store the state dict (the official scripts use "net").
WRAPPERS = ("net", "state_dict", "model")
_STEMS = {"visible_module.visible.": "backbone.visible_stem.", "thermal_module.thermal.": "backbone.infrared_stem."}
_STEM_PARTS = ("conv1.", "bn1.")
BASE = "base_resnet.base."
_LAYER = re.compile(r"layer(\d+)\.(.+)")
_HEAD = {"bottleneck.": "neck.", "classifier.": "classifier."}
# NumPy's array and scalar reconstructors as a NumPy 1.x pickle names them.
_NUMPY1_NAMES = {"_reconstruct": "numpy.core.multiarray._reconstruct", "scalar": "numpy.core.multiarray.scalar"}


class OfficialConversion(NamedTuple):
    """The result of converting an official state dict (``convert_official_*_state_dict``).

    Attributes:
        state_dict: the state dict in the key layout of the library's model, ready for ``model.load_state_dict``.
        ignored_keys: the official keys the model never uses, dropped (in the official naming): the dead
            modules of the official network.
    """

    state_dict: dict[str, Tensor]
    ignored_keys: list[str]


class OfficialLoadResult(NamedTuple):
    """The result of loading an official checkpoint (``load_official_*``).

    Attributes:
        missing_keys: keys of the model absent from the converted checkpoint (empty with ``strict=True``).
        unexpected_keys: converted keys the model does not have (empty with ``strict=True``).
        ignored_keys: official keys dropped as unused by the model (the dead parts of the official network, for
            instance the idle parts of its three ResNet-50s).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    ignored_keys: list[str]


def rename_two_stream_key(key: str, stages: int) -> str | None:
    """The library key of an official two-stream / head ``key``; None when dead; ``key`` itself when foreign.

    ``visible_module.visible.{conv1,bn1}.*`` and ``thermal_module.thermal.{conv1,bn1}.*`` become the two stems,
    ``base_resnet.base.layer{i}.*`` the stage ``i - 1`` (dead when ``i > stages``), ``bottleneck.*`` the
    ``neck`` and ``classifier.*`` stays; the rest of the three ResNet-50s (stems' stages, trunk's stem, ``fc``) is
    dead.
    """
    for prefix, ours in _STEMS.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            return ours + rest if rest.startswith(_STEM_PARTS) else None
    if key.startswith(BASE):
        match = _LAYER.fullmatch(key[len(BASE) :])
        if match is None:  # conv1, bn1, fc of the base ResNet: never run
            return None
        stage = int(match[1])
        return f"backbone.stages.{stage - 1}.{match[2]}" if stage <= stages else None
    for prefix, ours in _HEAD.items():
        if key.startswith(prefix):
            return ours + key[len(prefix) :]
    return key


def convert_keys(state: Mapping[str, Tensor], rename: Callable[[str], str | None]) -> OfficialConversion:
    """Apply ``rename`` to every key; None drops the entry into ``ignored_keys``."""
    converted: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        new = rename(key)
        if new is None:
            ignored.append(key)
        else:
            converted[new] = value
    return OfficialConversion(converted, ignored)


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict of a checkpoint: ``obj`` itself or its ``"net"`` / ``"state_dict"`` / ``"model"`` entry.

    A ``module.`` prefix (``DataParallel``) is stripped. Raises TypeError for anything but ``str -> Tensor``.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"the checkpoint must be a state dict (a mapping), got {type(obj).__name__}")
    for entry in WRAPPERS:
        if isinstance(obj.get(entry), Mapping):
            obj = obj[entry]
            break
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise TypeError(
            "the checkpoint must be a state dict (str -> Tensor) or a dict with a "
            f"{' / '.join(repr(w) for w in WRAPPERS)} entry; found non-tensor entries {bad[:5]}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def numpy_safe_globals() -> list[Any]:
    """NumPy's array / scalar reconstructors and dtypes, which ``weights_only`` loading refuses by default.

    The allowlist of the official checkpoints: ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``,
    ``numpy.dtype``, ``numpy._core.multiarray.scalar`` and the dtype classes (``numpy.dtypes.Float32DType``,
    ``Float64DType``, …), plus the reconstructors under the names a NumPy 1.x pickle uses
    (``numpy.core.multiarray.*``), as ``(object, name)`` aliases.
    """
    try:
        import numpy as np
    except ImportError:
        return []
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    dtypes = {type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8", "u1", "b1")}
    aliases = [(reconstruct, _NUMPY1_NAMES["_reconstruct"]), (scalar, _NUMPY1_NAMES["scalar"])]
    return [reconstruct, scalar, np.ndarray, np.dtype, *sorted(dtypes, key=str), *aliases]


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """Read a checkpoint file safely: ``torch.load(weights_only=True)`` with NumPy values allowed, or safetensors."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read with torch.load(weights_only=True) ({err}); if you trust "
            "the file, load it yourself with weights_only=False and pass the state dict"
        ) from err
    return obj


def load_converted(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    convert: Callable[[Mapping[str, Any]], OfficialConversion],
    *,
    strict: bool,
) -> OfficialLoadResult:
    """Read ``path_or_state_dict`` (a file or a mapping), ``convert`` it and load the result into ``model``."""
    if isinstance(path_or_state_dict, Mapping):
        state: Mapping[str, Any] = path_or_state_dict
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        state = read_checkpoint(Path(path_or_state_dict))
    else:
        raise TypeError(
            "`path_or_state_dict` must be a path or a state dict, got "
            f"{type(path_or_state_dict).__name__} {path_or_state_dict!r}"
        )
    converted = convert(state)
    result = model.load_state_dict(converted.state_dict, strict=strict)
    return OfficialLoadResult(list(result.missing_keys), list(result.unexpected_keys), converted.ignored_keys)
