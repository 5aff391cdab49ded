"""Models by name for ``config.json``: the registry, a model's configuration, and the model rebuilt from it."""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .. import models as _models
from ..backbones.two_stream import TwoStreamBackbone
from ..models._pretrained import PretrainedMixin

__all__ = [
    "CONFIG_FORMAT",
    "build_from_config",
    "compare_state_dicts",
    "model_class",
    "model_config",
    "register_model",
    "registered_models",
]

#: ``format`` entry of every ``config.json``; ``format_version`` says which layout it follows.
CONFIG_FORMAT = "vireid-layers/pretrained"
CONFIG_VERSION = 1

_REGISTERED: dict[str, type[nn.Module]] = {}


def _builtin() -> dict[str, type[nn.Module]]:
    """Every model class of :mod:`vireid_layers.models` (its ``__all__``) that records its arguments."""
    out = {}
    for name in _models.__all__:
        obj = getattr(_models, name)
        if isinstance(obj, type) and issubclass(obj, PretrainedMixin) and issubclass(obj, nn.Module):
            out[name] = obj
    return out


def registered_models() -> dict[str, type[nn.Module]]:
    """The names ``config.json`` may give: the models of :mod:`vireid_layers.models` and :func:`register_model`'s.

    Examples:
        >>> from vireid_layers.hub import registered_models
        >>> sorted(registered_models())
        ['AGW', 'DDAG', 'DEEN', 'MPANet', 'MSO']
    """
    return {**_builtin(), **_REGISTERED}


def register_model(name: str, cls: type[nn.Module]) -> None:
    """Make a model of one's own loadable by :func:`~vireid_layers.hub.from_pretrained` under ``name``.

    The class must derive from ``PretrainedMixin`` (``vireid_layers.models._pretrained``) and ``nn.Module``,
    so that its constructor arguments are recorded; the models of :mod:`vireid_layers.models` are known
    without registration. Register it before calling ``from_pretrained``.

    Args:
        name: the ``"model"`` entry of its ``config.json``.
        cls: the model class.

    Raises:
        ValueError: ``name`` is taken.
        TypeError: ``cls`` does not record its constructor arguments.

    Examples:
        >>> from vireid_layers.hub import register_model
        >>> from vireid_layers.models import DEEN
        >>> register_model("DEEN", DEEN)
        Traceback (most recent call last):
        ...
        ValueError: model name 'DEEN' is already registered (by vireid_layers.models.deen.DEEN)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty str, got {name!r}")
    known = registered_models()
    if name in known:
        raise ValueError(
            f"model name {name!r} is already registered (by {known[name].__module__}.{known[name].__qualname__})"
        )
    if not (isinstance(cls, type) and issubclass(cls, PretrainedMixin) and issubclass(cls, nn.Module)):
        raise TypeError(
            f"`cls` must be an nn.Module subclass deriving from vireid_layers.models._pretrained.PretrainedMixin, "
            f"got {cls!r}"
        )
    _REGISTERED[name] = cls


def model_class(name: object) -> type[nn.Module]:
    """The class registered under ``name``.

    Raises:
        ValueError: no model of that name; the message lists the registered ones.
    """
    known = registered_models()
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"config.json: 'model' must be one of {sorted(known)}, got {name!r}")
    return known[name]


def _name_of(model: nn.Module) -> str:
    for name, cls in registered_models().items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"{type(model).__qualname__} is not a registered model: export it from vireid_layers.models or call "
        "vireid_layers.hub.register_model first"
    )


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data, or a ValueError naming the constructor argument."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"constructor argument {where} = {value!r} is not finite: config.json cannot hold it")
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(
        f"constructor argument {where} is a {type(value).__name__}, which config.json cannot hold; build the model "
        "from plain values (names, numbers, lists) to save it"
    )


def _backbone_arguments(arguments: dict[str, Any]) -> None:
    """A built :class:`TwoStreamBackbone` argument becomes its timm name (and stride / channels), in place."""
    backbone = arguments.get("backbone")
    if not isinstance(backbone, TwoStreamBackbone):
        return
    if not backbone.model_name:
        raise ValueError(
            "constructor argument 'backbone' is a TwoStreamBackbone built from parts (no timm model name); "
            "config.json cannot rebuild it: build the model with a timm name (backbone='resnet50')"
        )
    arguments["backbone"] = backbone.model_name
    kwargs = dict(arguments.get("backbone_kwargs") or {})
    kwargs.update(last_stride=backbone.last_stride, in_chans=backbone.in_chans)
    arguments["backbone_kwargs"] = kwargs


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``"model"`` and ``"init"`` entries of ``config.json``: the class name and its constructor arguments.

    ``pretrained`` becomes ``False`` (the weights come from ``model.safetensors``), and so does every argument
    of the class's ``weight_arguments`` (e.g. MSO's ``vgg_weights`` becomes ``None``); a backbone passed as a
    built :class:`~vireid_layers.TwoStreamBackbone` becomes its timm name with its ``last_stride`` and
    ``in_chans``. The configuration is checked by rebuilding the model on the ``meta`` device (no memory, no
    download) and comparing every state-dict key and shape.

    Args:
        model: a model of :mod:`vireid_layers.models` or a registered one.

    Returns:
        ``{"model": name, "init": {argument: value}}``, JSON-serialisable.

    Raises:
        ValueError: the model is not registered, an argument cannot be written as JSON, or the rebuilt model
            differs (the message names the first differing key).

    Examples:
        >>> from vireid_layers.hub import model_config
        >>> from vireid_layers.models import AGW
        >>> config = model_config(AGW(4, backbone="resnet18", method="base"))
        >>> config["model"], config["init"]["method"], config["init"]["num_classes"]
        ('AGW', 'base', 4)
    """
    name = _name_of(model)
    arguments = model.init_arguments  # type: ignore[operator]
    _backbone_arguments(arguments)
    for key, value in getattr(model, "weight_arguments", {"pretrained": False}).items():
        if key in arguments:  # the weights are in model.safetensors: the rebuilt model must not fetch them
            arguments[key] = value
    init = {key: _jsonable(value, repr(key)) for key, value in arguments.items()}
    for key in init:
        if key.startswith("*"):
            raise ValueError(f"constructor argument {key!r} is positional-only variadic: config.json cannot hold it")
    with torch.device("meta"):
        rebuilt = build_from_config({"model": name, "init": init})
    compare_state_dicts(rebuilt.state_dict(), model.state_dict(), "the model rebuilt from its config", "the model")
    return {"model": name, "init": init}


def compare_state_dicts(
    expected: Mapping[str, Any], found: Mapping[str, Any], expected_name: str, found_name: str
) -> None:
    """Raise a ValueError naming the first key that is missing, unexpected or of another shape."""
    for key, value in expected.items():
        if key not in found:
            raise ValueError(f"{found_name} lacks the key {key!r} of {expected_name}")
        if tuple(found[key].shape) != tuple(value.shape):
            raise ValueError(
                f"key {key!r} has shape {tuple(found[key].shape)} in {found_name}, but {expected_name} expects "
                f"{tuple(value.shape)}"
            )
        if found[key].is_floating_point() != value.is_floating_point():
            raise ValueError(
                f"key {key!r} is {found[key].dtype} in {found_name}, but {expected_name} expects {value.dtype}"
            )
    for key in found:
        if key not in expected:
            raise ValueError(f"{found_name} has the key {key!r}, which {expected_name} does not have")


def build_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model (random weights) from the ``"model"`` and ``"init"`` entries of a ``config.json``.

    Args:
        config: the parsed ``config.json`` (other entries are ignored here).

    Returns:
        The model, in training mode, with freshly initialised weights.

    Raises:
        ValueError: ``"model"`` or ``"init"`` is missing or wrong, or ``"init"`` holds a key the class does not
            take, lacks one it needs, or has a value its constructor refuses; the message names the key.

    Examples:
        >>> from vireid_layers.hub import build_from_config
        >>> build_from_config({"model": "AGW", "init": {"num_classes": 4, "backbone": "resnet18"}}).num_classes
        4
        >>> build_from_config({"model": "AGW", "init": {"num_classes": 4, "colour": "red"}})
        Traceback (most recent call last):
        ...
        ValueError: config.json: 'init' has the key 'colour', which AGW does not take (its arguments: ...)
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"`config` must be a mapping (the parsed config.json), got {type(config).__name__}")
    if "model" not in config:
        raise ValueError("config.json lacks the key 'model' (the model's class name)")
    cls = model_class(config["model"])
    init = config.get("init")
    if not isinstance(init, Mapping):
        raise ValueError(f"config.json: the key 'init' must hold the constructor arguments, got {init!r}")
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key in init:
        if key not in parameters and not takes_any:
            raise ValueError(
                f"config.json: 'init' has the key {key!r}, which {cls.__name__} does not take (its arguments: {named})"
            )
    for key in named:
        if key not in init and parameters[key].default is inspect.Parameter.empty:
            raise ValueError(f"config.json: 'init' lacks the key {key!r}, which {cls.__name__} needs")
    try:
        return cls(**init)
    except (TypeError, ValueError) as error:
        raise ValueError(f"config.json: 'init' does not build a {cls.__name__}: {error}") from error
