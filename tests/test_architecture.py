"""The dependency direction of the package (docs/architecture.rst), read from every module's imports with ``ast``.

Lower packages never import higher ones: ``layers`` and ``losses`` know no model, engine, data or recipe;
``models`` know no engine, data, evaluation or recipe; the engine imports nothing of the package but itself and
the small helpers, and names no method; only ``recipes`` (and the examples) put everything together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vireid_layers"

#: The small helper modules at the bottom of the package.
HELPERS = {"_deprecation", "_distributed", "_validation", "_version", "distances", "modality"}
#: What each part may import of the package (besides itself and the helpers).
ALLOWED: dict[str, set[str]] = {
    "<root>": {"layers", "losses", "backbones"},
    "layers": set(),
    "losses": {"layers"},
    "backbones": set(),
    "models": {"layers", "losses", "backbones"},
    "compat": {"models", "layers", "losses", "backbones"},
    "data": set(),
    "evaluation": {"data"},
    "engine": set(),
    "recipes": {"models", "layers", "losses", "backbones", "data", "evaluation", "engine"},
    # Above the models: saving and loading them, exporting them, drawing what they retrieve.
    "hub": {"models", "backbones", "data", "engine"},
    "export": {"hub", "models", "layers", "backbones"},
    "visualize": {"models", "backbones", "data", "evaluation"},
}
#: Convenience forwards that may call a higher part *inside a function* (never at import time), so that
#: ``model.save_pretrained(...)`` and ``ImagePreprocessor.from_pretrained(...)`` exist as the users of other
#: libraries expect: ``(part, higher part it forwards to)``.
LAZY_FORWARDS: set[tuple[str, str]] = {("models", "hub"), ("data", "hub")}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        name = rel.stem
        return "<root>" if name == "__init__" else name
    return rel.parts[0]


def _imported_names(node: ast.AST, package: list[str]) -> list[str]:
    """The absolute module names an import statement brings in (``[]`` for any other node)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if not node.level:
        return [node.module or ""]
    base = package[: len(package) - (node.level - 1)]
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, alias.name]) for alias in node.names]


def imported_parts(path: Path, source: str | None = None, *, module_level_only: bool = False) -> set[str]:
    """The parts of the package (first component after ``vireid_layers``) that ``path`` imports, anywhere in it.

    With ``module_level_only`` the imports inside functions (lazy imports) are left out.
    """
    module = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module[:-1]  # the package a relative import starts from (a package's __init__ included)
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    functions = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    lazy = {id(n) for f in functions for n in ast.walk(f)} if module_level_only else set()
    out = set()
    for node in ast.walk(tree):
        for name in _imported_names(node, package) if id(node) not in lazy else []:
            parts = name.split(".")
            if parts[0] == "vireid_layers":
                out.add(parts[1] if len(parts) > 1 else "<root>")
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_parts_never_import_higher_ones(path: Path) -> None:
    part = _part(path)
    own = {part} | HELPERS
    allowed = own | ALLOWED.get(part, set()) if part not in HELPERS else HELPERS
    forbidden = imported_parts(path) - allowed
    forwards = {higher for lower, higher in LAZY_FORWARDS if lower == part}
    assert not forbidden & forwards & imported_parts(path, module_level_only=True), "a forward imported eagerly"
    forbidden -= forwards
    assert not forbidden, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(forbidden)}"


def test_every_part_has_a_rule() -> None:
    parts = {_part(p) for p in MODULES}
    assert parts <= set(ALLOWED) | HELPERS, sorted(parts - set(ALLOWED) - HELPERS)


def test_the_engine_names_no_method() -> None:
    """The engine's code and documentation mention no method and no re-identification notion."""
    words = re.compile(r"\b(deen|agw|ddag|mpanet|mso|cmc|rank1|re-?identification|modality|identity)\b", re.I)
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        hits = [m.group(0) for m in words.finditer(path.read_text(encoding="utf-8"))]
        assert not hits, f"{path.name} mentions {sorted(set(hits))}"


def test_the_checker_sees_relative_and_lazy_imports() -> None:
    source = "from ..engine import Trainer\ndef f():\n    from vireid_layers.recipes import train\nfrom . import dee\n"
    assert imported_parts(PACKAGE / "layers" / "x.py", source) == {"engine", "recipes", "layers"}
    assert imported_parts(PACKAGE / "layers" / "__init__.py", "from .. import modality") == {"modality"}
    assert imported_parts(PACKAGE / "layers" / "x.py", source, module_level_only=True) == {"engine", "layers"}
