"""Sphinx configuration of the vireid-layers documentation.

Build from the repository root with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is generated or imported from the package when this file is imported: the version is read from
``vireid_layers/_version.py`` as text, and autosummary writes ``docs/api/generated/`` (git-ignored) only when
the build starts.
"""

from __future__ import annotations

import ast
import enum
import importlib.util
import shutil
import sys
import warnings
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent

# Let autodoc import the package from a source checkout that is not pip-installed.
sys.path.insert(0, str(REPO_ROOT))


def _read_version() -> str:
    """Return ``__version__`` from ``vireid_layers/_version.py`` without importing the package (or torch)."""
    tree = ast.parse((REPO_ROOT / "vireid_layers" / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                value = ast.literal_eval(node.value)
                if isinstance(value, str):
                    return value
    raise RuntimeError("no string `__version__` found in vireid_layers/_version.py")


# -- Project information -----------------------------------------------------------------------------------

project = "vireid-layers"
author = "vireid-layers developers"
copyright = "vireid-layers developers"
release = _read_version()
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    # After napoleon, so that it sees the fields napoleon produced from the Google-style sections.
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
    "sphinx_copybutton",
]
# sphinx.ext.intersphinx is deliberately left out: the documentation is built on machines without network
# access, where fetching the Python/PyTorch/NumPy/timm inventories fails with a warning, and -W turns that into
# an error. Types such as ``torch.Tensor`` therefore render as plain text instead of links.

templates_path = ["_templates"]
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"
nitpicky = False
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- autodoc / autosummary ---------------------------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autoclass_content = "class"
# sphinx_autodoc_typehints writes the parameter and return types into the description, next to the
# documented arguments, and strips them from the signatures. Sphinx's own type-hint rendering is turned off
# so that the types are not written a second time.
autodoc_typehints = "none"
autodoc_preserve_defaults = True

# -- napoleon (Google style only) --------------------------------------------------------------------------

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_admonition_for_examples = False
napoleon_use_rtype = False
# ``Attributes:`` sections become ``:ivar:`` fields rather than ``.. attribute::`` directives, so that
# documented fields (of a NamedTuple, say) are not described twice.
napoleon_use_ivar = True
# The PyTorch ``Shape:`` section of module docstrings, rendered like ``Examples:``.
napoleon_custom_sections = ["Shape"]

# -- sphinx_autodoc_typehints ------------------------------------------------------------------------------

typehints_fully_qualified = False
# Give undocumented parameters (those of forward(), say) their type too.
always_document_param_types = True
typehints_document_rtype = True
# No "Return type: None" for methods such as reset_parameters().
typehints_document_rtype_none = False
typehints_use_rtype = False
typehints_defaults = "comma"
simplify_optional_unions = True
always_use_bars_union = True

# sphinx-autodoc-typehints 3.6 calls a Sphinx API that Sphinx 9 deprecates; the Python warning it prints on
# every docstring is noise for this project (it is not a Sphinx warning and does not affect the output).
warnings.filterwarnings(
    "ignore",
    message=r".*_RstSnippetParser\.set_application.* is deprecated",
    module=r"sphinx_autodoc_typehints.*",
)

# -- sphinxcontrib.bibtex ----------------------------------------------------------------------------------

bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# -- math --------------------------------------------------------------------------------------------------

math_number_all = False
math_eqref_format = "({number})"


def _local_mathjax() -> Path | None:
    """MathJax 3's ``es5`` folder as the ``django-static-mathjax`` package (the ``docs`` extra) ships it, or ``None``.

    The package is only located here (``find_spec`` imports nothing); the files are copied into the built pages
    when the build finishes (:func:`_copy_mathjax`), so the equations render without a network.
    """
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        return None
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-svg.js").is_file() else None


MATHJAX_ES5 = _local_mathjax()
# MathJax's SVG output carries its glyphs inside tex-svg.js: one file, no web fonts to fetch. The menu and the
# accessibility components it may load on demand are copied beside it. Without the package the default CDN
# copy is used (and the pages need a network to show the equations).
MATHJAX_FILES = ("tex-svg.js", "ui", "a11y", "input", "output/svg.js", "output/svg")
if MATHJAX_ES5 is not None:
    mathjax_path = "mathjax/tex-svg.js"  # relative to _static/ of the built pages

# -- sphinx_copybutton -------------------------------------------------------------------------------------

# Copy code without the ``>>>``/``...`` doctest prompts and the ``$`` shell prompt.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False

# -- HTML output -------------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"vireid-layers {release}"
html_short_title = "vireid-layers"
html_static_path: list[str] = []
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": True,
}


# -- hooks -------------------------------------------------------------------------------------------------


def _autodoc_skip_member(app, what, name, obj, skip, options):
    """Adjust which class members the API pages show.

    * ``NamedTuple`` fields: hide the ``Alias for field number N`` accessors; the fields are documented in the
      class docstring's ``Attributes:`` section.
    * ``Enum`` members (``Modality.VISIBLE``...): show them although they have no docstring of their own.
    """
    doc = getattr(obj, "__doc__", None) or ""
    if isinstance(doc, str) and doc.startswith("Alias for field number"):
        return True
    if isinstance(obj, enum.Enum) and not name.startswith("_"):
        return False
    return skip


def _copy_mathjax(app, exception):
    """Copy the local MathJax into ``_static/mathjax`` of an HTML build (see :func:`_local_mathjax`)."""
    if exception is not None or MATHJAX_ES5 is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    for name in MATHJAX_FILES:
        source = MATHJAX_ES5 / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        elif source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def setup(app):
    app.connect("autodoc-skip-member", _autodoc_skip_member)
    app.connect("build-finished", _copy_mathjax)
