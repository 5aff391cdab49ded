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
HELPERS = {"_distributed", "_validation", "_version", "distances", "modality"}
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
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        name = rel.stem
        return "<root>" if name == "__init__" else name
    return rel.parts[0]


def imported_parts(path: Path, source: str | None = None) -> set[str]:
    """The parts of the package (first component after ``vireid_layers``) that ``path`` imports, anywhere in it."""
    module = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module[:-1]  # the package a relative import starts from (a package's __init__ included)
    out = set()
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:
                    names = [".".join([*base, alias.name]) for alias in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
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
