"""The API reference (``docs/api.rst``) documents every public name, each with its whole summary line.

Every name in the ``__all__`` of a public package must be listed in an ``autosummary`` block of the API page
(under a ``currentmodule`` from which it can be imported), and the one-line summary autosummary shows in its
table must be the docstring's whole first line: autosummary cuts a summary at the first ``". "``, so a line
such as ``"... weight (Eq. 7)."`` would appear as ``"... weight (Eq."``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

API_RST = Path(__file__).resolve().parents[1] / "docs" / "api.rst"

#: The packages whose ``__all__`` is public API.
PUBLIC_PACKAGES = (
    "vireid_layers",
    "vireid_layers.distances",
    "vireid_layers.data",
    "vireid_layers.evaluation",
    "vireid_layers.models",
    "vireid_layers.compat",
    "vireid_layers.engine",
    "vireid_layers.recipes",
    "vireid_layers.visualize",
    "vireid_layers.export",
    "vireid_layers.hub",
)


def _documented() -> set[tuple[str, str]]:
    """``(module, name)`` of every autosummary entry and ``py:data``-style description of the API page."""
    module = ""
    entries: set[tuple[str, str]] = set()
    in_autosummary = False
    for line in API_RST.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if m := re.match(r"\.\. currentmodule:: (\S+)", stripped):
            module = m.group(1)
            in_autosummary = False
        elif m := re.match(r"\.\. py:(?:data|class|function|attribute):: (\S+)", stripped):
            in_autosummary = False
            name = m.group(1)
            if name.startswith("vireid_layers."):
                package, _, name = name.rpartition(".")
                entries.add((package, name))
            else:
                entries.add((module, name))
        elif stripped.startswith(".. autosummary::"):
            in_autosummary = True
        elif in_autosummary:
            if not stripped or stripped.startswith(":"):
                continue
            if not line.startswith(" "):
                in_autosummary = False
                continue
            entries.add((module, stripped))
    return entries


def _public_names() -> list[tuple[str, str]]:
    names = []
    for package in PUBLIC_PACKAGES:
        try:
            mod = importlib.import_module(package)
        except ModuleNotFoundError:
            continue
        names += [(package, name) for name in getattr(mod, "__all__", ())]
    return names


def _resolve(module: str, name: str) -> object:
    obj: object = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_public_name_has_an_api_entry() -> None:
    documented = _documented()
    objects = {}
    for module, name in documented:
        try:
            objects[id(_resolve(module, name))] = (module, name)
        except (AttributeError, ModuleNotFoundError) as error:
            pytest.fail(f"docs/api.rst lists {module}.{name}, which does not exist: {error}")
    missing = [
        f"{package}.{name}"
        for package, name in _public_names()
        if (package, name) not in documented and id(getattr(importlib.import_module(package), name)) not in objects
    ]
    assert not missing, f"public names without an entry in docs/api.rst: {missing}"


def _summary_problem(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc:
        return "no docstring"
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    # autosummary's extract_summary ends the summary at the first period followed by a space (outside
    # parentheses is not considered): such a line is shown cut.
    cut = re.search(r"\.\s", first)
    if cut is not None and cut.end() < len(first):
        return f"summary is cut by autosummary after {first[: cut.end()].strip()!r}"
    if "\n" in doc.split("\n\n", 1)[0]:
        return "summary spans several lines"
    return None


def _described_by_docstring() -> list[tuple[str, str]]:
    """The entries whose summary comes from a docstring (functions, classes), not constants described in place."""
    return sorted(
        (m, n)
        for m, n in _documented()
        if (inspect.isclass(obj := _resolve(m, n)) or inspect.isroutine(obj)) and getattr(obj, "__doc__", None)
    )


@pytest.mark.parametrize("module,name", _described_by_docstring(), ids=lambda v: str(v))
def test_summary_line_is_whole(module: str, name: str) -> None:
    problem = _summary_problem(_resolve(module, name))
    assert problem is None, f"{module}.{name}: {problem}"
