"""What every model needs to be saved and rebuilt without code: its recorded constructor arguments (private)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

__all__ = ["PretrainedMixin"]

_Model = TypeVar("_Model", bound="PretrainedMixin")


class PretrainedMixin:
    """Records the arguments a model was constructed with, and saves / loads it as a shareable directory.

    Put it first in the bases of a model (``class DEEN(PretrainedMixin, nn.Module)``); nothing else is needed:
    :meth:`__new__` binds the call's arguments to the signature of the class's ``__init__`` (defaults filled
    in) before ``__init__`` runs, so the outermost constructor of a subclass is the one recorded, and a
    model's own ``__init__`` needs no bookkeeping. :func:`vireid_layers.hub.save_pretrained` turns the
    recorded arguments into ``config.json``; a copy or unpickled model keeps them (they live in the instance
    dictionary).

    The methods are thin forwards to :mod:`vireid_layers.hub` (imported when called, so that ``models`` does
    not depend on it).

    Attributes:
        weight_arguments: the constructor arguments that only say where initial weights come from (a pretrained
            backbone, a frozen auxiliary network), each with the value ``config.json`` records instead: the saved
            ``model.safetensors`` holds those weights, so the rebuilt model must not fetch them again.
    """

    weight_arguments: ClassVar[Mapping[str, Any]] = {"pretrained": False}

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        except TypeError:  # a wrong call (``__init__`` raises the error itself), or copy/pickle calling cls.__new__
            return self
        bound.apply_defaults()
        recorded: dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:  # without ``self``
            kind = bound.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                recorded[f"*{name}"] = tuple(value)
            else:
                recorded[name] = (
                    dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, list) else value
                )
        object.__setattr__(self, "_init_arguments", recorded)  # before nn.Module.__init__: plain attribute
        return self

    @property
    def init_arguments(self) -> dict[str, Any]:
        """The constructor's arguments, defaults included (a copy).

        Raises:
            RuntimeError: the instance was not created through its constructor.
        """
        try:
            return dict(self.__dict__["_init_arguments"])
        except KeyError:
            raise RuntimeError(
                f"{type(self).__name__} has no recorded constructor arguments: it was not created by calling the class"
            ) from None

    def save_pretrained(self, directory: str | os.PathLike[str], **card: Any) -> Path:
        """:func:`vireid_layers.hub.save_pretrained` of this model; ``card`` holds its keyword arguments."""
        from ..hub import save_pretrained

        return save_pretrained(self, directory, **card)  # type: ignore[arg-type]

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """:func:`vireid_layers.hub.push_to_hub` of this model (needs the ``hub`` extra)."""
        from ..hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls: type[_Model], source: str | os.PathLike[str], **kwargs: Any) -> _Model:
        """:func:`vireid_layers.hub.from_pretrained`, checking that ``config.json`` names this class (or a subclass).

        Raises:
            TypeError: ``config.json`` rebuilds another model.
        """
        from ..hub import from_pretrained

        model = from_pretrained(source, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(
                f"{str(source)!r} holds a {type(model).__name__} (config.json 'model'), not a {cls.__name__}; "
                "load it with vireid_layers.hub.from_pretrained"
            )
        return model
