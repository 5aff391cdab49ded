"""Keeping an old spelling of the public API working for one release, with a :class:`FutureWarning`.

Two decorators cover the two kinds of change of ``docs/conventions.rst``:

* :func:`renamed_keyword`: a keyword argument got a new name (``modality`` -> ``modalities``); the old name
  still works, warns, and is refused together with the new one;
* :func:`keyword_only`: a hyperparameter became keyword-only (``GeM(3.0)`` -> ``GeM(p=3.0)``); passing it
  positionally still works and warns.

:class:`FutureWarning`, not :class:`DeprecationWarning`: Python shows it by default, so the users of the
library (not only its developers) see it. The wrappers only look at the names and the number of the
arguments, so a call in the new spelling costs one dictionary lookup and traces through ``torch.compile``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._validation import check_choice

__all__ = ["keyword_only", "renamed_keyword"]

F = TypeVar("F", bound=Callable[..., Any])

#: The release that introduces the new spelling (the one after 0.1.0) and the one that drops the old one.
SINCE, REMOVAL = "0.2", "0.3"


def _warn(message: str) -> None:
    # stacklevel 3: the user's call, above the wrapper and this helper.
    warnings.warn(message, FutureWarning, stacklevel=3)


def renamed_keyword(old: str, new: str, *, choices: Sequence[str] | None = None) -> Callable[[F], F]:
    """Accept the keyword ``old`` as ``new`` with a :class:`FutureWarning` (``TypeError`` if both are given).

    Args:
        old: the former name of the keyword.
        new: its name now.
        choices: the values the old keyword accepted, if the new one accepts more: a value passed under the
            old name is checked against them (with the old name in the message), so the old spelling keeps
            exactly its former contract.

    Examples:
        >>> @renamed_keyword("modality", "modalities")
        ... def f(x, modalities=None):
        ...     return modalities
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(1, modality=0), caught[0].category.__name__
        (0, 'FutureWarning')
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                name = fn.__qualname__.removesuffix(".__init__")
                if new in kwargs:
                    raise TypeError(f"{name}() got both `{old}` and its new name `{new}`; pass only `{new}`")
                _warn(
                    f"{name}(): the keyword `{old}` is now spelled `{new}` (vireid-layers {SINCE}); "
                    f"`{old}` will be removed in {REMOVAL}"
                )
                value = kwargs.pop(old)
                if choices is not None:
                    check_choice(value, old, choices)
                kwargs[new] = value
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def keyword_only(*names: str) -> Callable[[F], F]:
    """Accept the keyword-only parameters ``names`` positionally, in that order, with a :class:`FutureWarning`.

    The decorated function declares ``names`` after ``*``; a call that passes more positional arguments than
    the function's positional parameters maps the extra ones onto ``names`` and warns.

    Examples:
        >>> @keyword_only("margin")
        ... def f(x, *, margin=0.3):
        ...     return margin
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(1, 0.5), caught[0].category.__name__
        (0.5, 'FutureWarning')
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters.values()
        positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        keyword = {p.name for p in params if p.kind == p.KEYWORD_ONLY}
        missing = [n for n in names if n not in keyword]
        if missing:
            raise TypeError(f"keyword_only({missing}): {fn.__qualname__} has no such keyword-only parameter")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) > positional:
                extra = args[positional:]
                name = fn.__qualname__.removesuffix(".__init__")
                if len(extra) > len(names):
                    raise TypeError(
                        f"{name}() got {len(extra)} positional arguments too many; {list(names)} are keyword-only"
                    )
                given = names[: len(extra)]
                both = [n for n in given if n in kwargs]
                if both:
                    raise TypeError(f"{name}() got multiple values for {both}")
                _warn(
                    f"{name}(): pass {', '.join(f'`{n}=`' for n in given)} by keyword (keyword-only since "
                    f"vireid-layers {SINCE}); positional use will be removed in {REMOVAL}"
                )
                kwargs.update(zip(given, extra, strict=True))
                args = args[:positional]
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
