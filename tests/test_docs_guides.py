"""Every code block of the method guides runs, and every command they show parses.

Pages: :data:`PAGES` (the method guides ``docs/{deen,agw,ddag,mpanet,mso}.rst`` and ``docs/quickstart.rst``). The
blocks are read from the files at collection time, so a block added to a guide is tested without touching this file.
One test per block, named ``<page>:L<line>-<language>`` (the line of its ``.. code-block::`` directive).

Conventions (a guide's author needs to know these):

* **Python blocks run in order, in one namespace per page.** A page reads as one script: a later block may use the
  names an earlier one defined (``model``, ``images``), as a reader following the page at a Python prompt would.
  Each page starts from an empty namespace, in its own empty temporary working directory, with ``HOME`` pointed at
  a temporary directory (``~/.cache/vireid_layers`` starts empty), ``OMP_NUM_THREADS=1``, ``HF_HUB_OFFLINE=1`` (a
  block that downloads weights fails at once), one torch thread and ``torch.manual_seed(0)``. A block fails with
  its traceback, whose line numbers are those of the ``.rst`` file.
  Selecting one block (``-k "deen.rst:L450"``) runs the page's earlier blocks first; a block after a failed one
  fails, naming the failed block. Blocks must be fast (the whole suite has 15 minutes on two cores): a block that
  trains uses tiny settings, and the full command is shown in a ``console`` block.
* **A Python block whose first line starts with** ``>>>`` **is a doctest**, run in the page's namespace with
  ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``: its outputs are checked.
* **Console commands are parsed, never run.** In ``console`` blocks each ``$`` line, in ``bash``/``shell`` blocks
  each non-comment line, is split into commands (``&&``, ``;``, a ``for ... do ...; done`` body with its variable
  set to 1). Those of the project are parsed with the program's own ``argparse`` parser:
  ``vireid-train``, ``python -m vireid_layers.recipes``, ``python examples/train.py``, ``examples/train_deen.py``,
  and ``torchrun ... -m vireid_layers.recipes`` / ``torchrun ... examples/train.py`` with
  :func:`vireid_layers.recipes.cli.parse_args`, which also builds and validates the recipe's configuration (method
  and options known, values valid); the paths of ``--root`` and ``--resume`` are replaced by an existing empty
  folder and file, so ``/data/SYSU-MM01`` need not exist. ``python examples/evaluate.py``, ``vireid-verify`` /
  ``python -m vireid_layers.data.verify`` and ``vireid-export`` are parsed by their parsers. Any other
  ``vireid-*`` program, ``python -m vireid_layers...`` module or ``examples/*.py`` script fails the test (add it
  here); other programs (``pip``, ``git``, ``python -m pytest``) are left alone. An output line ``error: ...``
  right after a ``vireid-train`` command is its expected failure: the test checks the message (up to a trailing
  ``...``), from the configuration or from the model's check of the image size.
* **A block that cannot run here** (a real dataset, a GPU, a download) is preceded by an rst comment
  ``.. vireid-skip: <reason>``: it is reported as skipped with its reason, :func:`test_skipped_blocks_are_named`
  lists every skipped block, and a marker without a reason, or not followed by a code block, fails.
* **Files a reader has and CI does not** (an official checkpoint) are declared before the block that reads them
  by ``.. vireid-file: <kind> <path>``: the test writes a file of that kind at that path (relative to the page's
  working directory) before the page's first block. The kinds are those of :data:`FILE_KINDS`: the official
  checkpoints ``official-deen-sysu``, ``official-deen-regdb``, ``official-ddag``, ``official-mpanet``,
  ``official-agw`` and ``official-agw-base``, built from the documented layout of each official file (every key,
  shape and dtype, random values, saved as the official script saves it; ``tests/official_checkpoints.py``).
"""

from __future__ import annotations

import argparse
import doctest
import gc
import importlib.util
import re
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The pages whose blocks run.
PAGES = ("deen.rst", "agw.rst", "ddag.rst", "mpanet.rst", "mso.rst", "quickstart.rst")

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?:code-block|code|sourcecode)::[ \t]*(?P<lang>\S*)[ \t]*$")
_MARKER = re.compile(r"^[ \t]*\.\. vireid-(?P<kind>[\w-]+):(?P<text>.*)$")
_PYTHON = ("python", "python3", "py", "pycon")
_SHELL = ("console", "bash", "shell", "sh", "shell-session")


# ------------------------------------------------------------------------------------------------ parsing rst


@dataclass
class Block:
    """One ``.. code-block::`` of a page: its language, text (dedented), line numbers and markers."""

    page: str
    line: int  # 1-based line of the directive
    lang: str
    text: str
    first_line: int  # 1-based line of the first line of ``text``
    skip: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:L{self.line}-{self.lang}"


@dataclass
class Page:
    name: str
    blocks: list[Block]
    errors: list[str]  # malformed markers


def parse_page(name: str, text: str | None = None) -> Page:
    """The code blocks and markers of ``docs/<name>``."""
    lines = (DOCS / name).read_text(encoding="utf-8").splitlines() if text is None else text.splitlines()
    page = Page(name, [], [])
    pending: list[tuple[int, str, str]] = []  # markers waiting for their block: (line, kind, text)
    i = 0
    while i < len(lines):
        marker, directive = _MARKER.match(lines[i]), _DIRECTIVE.match(lines[i])
        if marker:
            pending.append((i + 1, marker["kind"], marker["text"].strip()))
        elif directive:
            block, i = _read_block(name, lines, i, directive)
            _attach_markers(page, block, pending)
            page.blocks.append(block)
            pending = []
            continue
        elif pending and lines[i].strip():
            page.errors += _orphans(name, pending)
            pending = []
        i += 1
    page.errors += _orphans(name, pending)
    return page


def _orphans(name: str, pending: list[tuple[int, str, str]]) -> list[str]:
    return [f"{name}:{at}: `.. vireid-{kind}:` is not followed by a code block" for at, kind, _ in pending]


def _read_block(name: str, lines: list[str], i: int, directive: re.Match[str]) -> tuple[Block, int]:
    """The block whose directive is on line ``i`` (0-based), and the index of the line after it."""
    indent = len(directive["indent"].expandtabs())
    j = i + 1
    while j < len(lines) and lines[j].strip() and lines[j].lstrip().startswith(":"):  # directive options
        j += 1
    body: list[str] = []
    start = None
    while j < len(lines) and not (lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) <= indent):
        if start is None and lines[j].strip():
            start = j + 1
        if start is not None:
            body.append(lines[j])
        j += 1
    while body and not body[-1].strip():
        body.pop()
    return Block(name, i + 1, directive["lang"].lower() or "text", _dedent(body), start or i + 1), j


def _attach_markers(page: Page, block: Block, pending: list[tuple[int, str, str]]) -> None:
    for at, kind, value in pending:
        if kind == "skip":
            if not value:
                page.errors.append(f"{page.name}:{at}: `.. vireid-skip:` needs a reason")
            block.skip = value or None
        elif kind == "file":
            parts = value.split()
            if len(parts) != 2 or parts[0] not in FILE_KINDS:
                page.errors.append(f"{page.name}:{at}: `.. vireid-file: KIND PATH`, KIND one of {sorted(FILE_KINDS)}")
            else:
                block.files.append((parts[0], parts[1]))
        else:
            page.errors.append(f"{page.name}:{at}: unknown marker `.. vireid-{kind}:`")


def _dedent(lines: list[str]) -> str:
    indents = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
    cut = min(indents, default=0)
    return "\n".join(x[cut:] if x.strip() else "" for x in lines)


def _pages() -> list[Page]:
    return [parse_page(name) for name in PAGES if (DOCS / name).is_file()]


def _runnable(page: Page) -> list[Block]:
    return [b for b in page.blocks if b.lang in _PYTHON or b.lang in _SHELL]


# ------------------------------------------------------------------------------------------------ files


def _official(model: str, **kwargs: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import official_checkpoints as oc  # tests/official_checkpoints.py

        state = oc.build_state_dict(oc.layout(model, **kwargs), seed=0)
        checkpoint = oc.official_checkpoint(model.removesuffix("-base"), state)
        oc.save_checkpoint(checkpoint, path)

    return write


#: The files ``.. vireid-file: KIND PATH`` provides.
FILE_KINDS: dict[str, Callable[[Path], None]] = {
    "official-deen-sysu": _official("deen-sysu"),
    "official-deen-regdb": _official("deen-regdb"),
    "official-ddag": _official("ddag"),
    "official-mpanet": _official("mpanet"),
    "official-agw": _official("agw"),
    "official-agw-base": _official("agw", method="base"),
}


# ------------------------------------------------------------------------------------------------ running


class PageRun:
    """The state of one page's run: its namespace, working directory and how far it got."""

    def __init__(self, page: Page, workdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        self.home = workdir.parent / f"{workdir.name}-home"
        self.home.mkdir(exist_ok=True)
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.done: set[int] = set()
        self.failed: Block | None = None
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        torch.manual_seed(0)
        for block in self.page.blocks:
            for kind, path in block.files:
                target = self.workdir / path
                target.parent.mkdir(parents=True, exist_ok=True)
                FILE_KINDS[kind](target)

    def run_until(self, block: Block) -> None:
        """Run the page's Python blocks before ``block`` that have not run, then ``block``."""
        self.start()
        for earlier in self.page.blocks:
            if earlier.line > block.line:
                break
            if earlier.lang not in _PYTHON or earlier.skip or earlier.line in self.done:
                continue
            if self.failed is not None:
                pytest.fail(f"an earlier block of the page failed: {self.failed.id}", pytrace=False)
            try:
                run_python(earlier, self.namespace)
            except BaseException:
                self.failed = earlier
                raise
            finally:
                self.done.add(earlier.line)
                if earlier is self.last:  # the page is done: free its models before the next page
                    self.namespace.clear()
                    gc.collect()

    @property
    def last(self) -> Block | None:
        runnable = [b for b in self.page.blocks if b.lang in _PYTHON and not b.skip]
        return runnable[-1] if runnable else None


def run_python(block: Block, namespace: dict[str, Any]) -> None:
    """Execute a Python block (or check a doctest block) in ``namespace``."""
    filename = str(DOCS / block.page)
    if block.text.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.text, namespace, block.id, filename, block.first_line - 1)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        report: list[str] = []
        runner.run(test, out=report.append, clear_globs=False)
        if runner.failures:
            pytest.fail(f"doctest of {block.id} failed:\n" + "".join(report), pytrace=False)
        return
    code = compile("\n" * (block.first_line - 1) + block.text, filename, "exec")
    try:
        exec(code, namespace)
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
        where = f" at {block.page}:{frames[-1].lineno}" if frames else ""
        pytest.fail(
            f"{block.id} raised {type(error).__name__}{where}: {error}\n\n"
            + "".join(traceback.format_exception(error)),
            pytrace=False,
        )


# ------------------------------------------------------------------------------------------------ commands


@dataclass
class Command:
    argv: list[str]
    line: int
    expected_error: str | None = None


def shell_commands(block: Block) -> list[Command]:
    """The commands of a ``console`` / ``bash`` block, with the ``error:`` line that follows each, if any."""
    lines = block.text.splitlines()
    console = block.lang in ("console", "shell-session")
    out: list[Command] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        number = block.first_line + i
        stripped = raw.strip()
        i += 1
        if console:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        elif not stripped or stripped.startswith("#"):
            continue
        while stripped.endswith("\\") and i < len(lines):  # continuation lines
            stripped = stripped[:-1] + " " + lines[i].strip().removeprefix("> ")
            i += 1
        following = lines[i].strip() if i < len(lines) else ""
        error = following if console and following.startswith("error:") else None
        for argv in split_commands(stripped):
            out.append(Command(argv, number, error))
    return out


def split_commands(text: str) -> list[list[str]]:
    """``a && b; for t in ...; do c; done`` -> the argument lists of ``a``, ``b`` and ``c`` (``$t`` set to 1)."""
    loop = re.fullmatch(r"\s*for\s+(\w+)\s+in\s+.*?;\s*do\s+(.*?);?\s*done\s*", text)
    if loop:
        text = re.sub(rf"\$\{{?{loop[1]}\}}?", "1", loop[2])
    commands = []
    for part in re.split(r"&&|;|\|\|", text):
        argv = shlex.split(part, comments=True)
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # VAR=value prefixes
            argv = argv[1:]
        if argv:
            commands.append(argv)
    return commands


class _ParsedError(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


@contextmanager
def _stop_after_parsing() -> Iterator[None]:
    """Make ``ArgumentParser.parse_args`` raise :class:`_ParsedError` with its result (the program goes no further)."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise _ParsedError(original(self, *args, **kwargs))

    argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


def _load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_{name}_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: ``python -m MODULE``: the program it is.
_MODULES = {
    "vireid_layers.recipes": "train",
    "vireid_layers.recipes.cli": "train",
    "vireid_layers.data.verify": "verify",
    "vireid_layers.export": "export",
    "vireid_layers.export.cli": "export",
}
#: ``python examples/NAME``: the program and the arguments it adds.
_EXAMPLES = {
    "train.py": ("train", []),
    "train_deen.py": ("train", ["--method", "deen"]),
    "evaluate.py": ("evaluate", []),
}
#: Installed commands.
_PROGRAMS = {"vireid-train": "train", "vireid-verify": "verify", "vireid-export": "export"}


def classify(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(program, arguments)`` for a command of the project; ``None`` for another program; raises for an unknown one.

    ``program`` is ``train``, ``evaluate``, ``verify`` or ``export``.
    """
    head, rest = argv[0], argv[1:]
    if head == "torchrun":  # torchrun [its options] -m MODULE ARGS | SCRIPT.py ARGS
        k = next((k for k, token in enumerate(rest) if token == "-m" or token.endswith(".py")), None)
        if k is None:
            raise AssertionError(f"torchrun without a module or script: {argv}")
        return classify(["python", *rest[k:]])
    if head in _PROGRAMS:
        return _PROGRAMS[head], rest
    if head.startswith("vireid-"):
        raise AssertionError(f"unknown program {head!r}: add it to tests/test_docs_guides.py")
    if head not in ("python", "python3") or not rest:
        return None
    if rest[0] == "-m":
        return _classify_module(argv, rest[1], rest[2:])
    script = Path(rest[0])
    if script.parent.name != "examples":
        return None
    if script.name not in _EXAMPLES:
        raise AssertionError(f"unknown example in {shlex.join(argv)!r}: add it to tests/test_docs_guides.py")
    program, added = _EXAMPLES[script.name]
    return program, [*added, *rest[1:]]


def _classify_module(argv: list[str], module: str, args: list[str]) -> tuple[str, list[str]] | None:
    if not module.startswith("vireid_layers"):
        return None
    if module not in _MODULES:
        raise AssertionError(f"unknown module in {shlex.join(argv)!r}: add it to tests/test_docs_guides.py")
    return _MODULES[module], args


def _replace_paths(args: list[str], workdir: Path) -> list[str]:
    """``--root`` -> an existing empty folder; ``--resume`` and a file path given to ``--vgg-weights`` -> an
    existing empty file (parsing checks that they exist)."""
    out = list(args)
    for k, token in enumerate(out[:-1]):
        if token == "--root":
            folder = workdir / "root"
            folder.mkdir(exist_ok=True)
            out[k + 1] = str(folder)
        elif token == "--resume" or (token == "--vgg-weights" and "/" in out[k + 1]):
            file = workdir / Path(out[k + 1]).name
            file.touch()
            out[k + 1] = str(file)
    return out


def check_command(command: Command, workdir: Path) -> str | None:
    """Parse one command with its program's parser; returns the program, ``None`` for a program not ours."""
    shown = f"line {command.line}: {shlex.join(command.argv)!r}"
    kind = classify(command.argv)
    if kind is None:
        return None
    program, args = kind
    try:
        if program == "train":
            _check_train(shown, args, command.expected_error, workdir)
        elif program == "evaluate":
            _load_example("evaluate").build_parser().parse_args(args)
        elif program == "export":
            from vireid_layers.export.cli import build_parser

            build_parser().parse_args(args)
        elif program == "verify":
            from vireid_layers.data.verify import main

            with _stop_after_parsing(), pytest.raises(_ParsedError):
                main(args)
    except SystemExit as error:  # argparse: unknown option or bad value (its message went to stderr)
        raise AssertionError(f"{shown}: rejected by its argument parser (exit status {error.code})") from error
    return program


def _check_train(shown: str, args: list[str], expected_error: str | None, workdir: Path) -> None:
    """``vireid-train ARGS``: the recipe and its configuration; an expected error from them or the model's check."""
    from vireid_layers.recipes import ConfigurationError
    from vireid_layers.recipes.cli import parse_args

    try:
        recipe, _ = parse_args(_replace_paths(args, workdir), prog="vireid-train")
        if expected_error is not None:  # the check main() runs before any training
            recipe.check_model(recipe.build_model(4, pretrained=False))
    except ConfigurationError as error:
        if expected_error is None:
            raise AssertionError(f"{shown}: {error}") from error
        _check_error(shown, expected_error, str(error))
        return
    if expected_error is not None:
        raise AssertionError(f"{shown}: expected {expected_error!r}, but it is accepted")


def _check_error(shown: str, expected: str, got: str) -> None:
    expected = expected.removeprefix("error:").strip()
    prefix = expected.removesuffix("...").rstrip()
    if not got.startswith(prefix):
        raise AssertionError(f"{shown}: the page shows\n  error: {expected}\nbut the program says\n  error: {got}")


# ------------------------------------------------------------------------------------------------ tests

_PAGE_LIST = _pages()
_BLOCKS = [block for page in _PAGE_LIST for block in _runnable(page)]


@pytest.fixture(scope="session")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PageRun]:
    return {page.name: PageRun(page, tmp_path_factory.mktemp(page.name.replace(".", "-"))) for page in _PAGE_LIST}


@pytest.mark.parametrize("block", _BLOCKS, ids=[b.id for b in _BLOCKS])
def test_block(block: Block, page_runs: dict[str, PageRun], monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    run = page_runs[block.page]
    monkeypatch.chdir(run.workdir)
    monkeypatch.setenv("HOME", str(run.home))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a block that downloads weights fails at once, not after retries
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    threads = torch.get_num_threads()  # restored if a block changes it (the recipes' --threads)
    try:
        if block.lang in _PYTHON:
            run.run_until(block)
        else:
            commands = shell_commands(block)
            for command in commands:
                check_command(command, run.workdir)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("page", _PAGE_LIST, ids=[p.name for p in _PAGE_LIST])
def test_markers_are_well_formed(page: Page) -> None:
    """Every ``.. vireid-skip:`` has a reason and every marker precedes a code block."""
    assert not page.errors, "\n".join(page.errors)


def test_skipped_blocks_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    """The blocks that do not run, each with its reason (printed; ``-s`` shows them)."""
    skipped = [b for b in _BLOCKS if b.skip]
    with capsys.disabled():
        if skipped:
            print(f"\n{len(skipped)} guide block(s) not run:")
            for block in skipped:
                print(f"  {block.id}: {block.skip}")
    assert all(b.skip and b.skip.strip() for b in skipped)


def test_every_page_has_blocks() -> None:
    """The guides exist and the parser finds their blocks (a broken parser must not pass by finding nothing)."""
    names = {page.name for page in _PAGE_LIST}
    assert {"deen.rst", "agw.rst", "quickstart.rst"} <= names
    for name in ("deen.rst", "agw.rst"):
        langs = [b.lang for b in _runnable(next(p for p in _PAGE_LIST if p.name == name))]
        assert "python" in langs and "console" in langs, (name, langs)


# ------------------------------------------------------------------------------------------------ the test itself


def test_parse_page_reads_blocks_markers_and_lines() -> None:
    text = "\n".join(
        [
            "Title",  # 1
            "",
            ".. code-block:: python",  # 3
            "   :caption: x",
            "",
            "   a = 1",  # 6
            "",
            "   b = a",
            "",
            "Text.",  # 10
            "",
            ".. vireid-skip: needs SYSU-MM01",  # 12
            "",
            ".. code-block:: console",  # 14
            "",
            "   $ vireid-train --dataset sysu --root /data/SYSU-MM01",
            "",
            ".. vireid-skip:",  # 18
            ".. code-block:: python",
            "",
            "   pass",
            "",
            ".. vireid-file: official-agw a/b.t",  # 23
            "Text, not a block.",
        ]
    )
    page = parse_page("t.rst", text)
    assert [(b.line, b.lang, b.first_line, b.skip) for b in page.blocks] == [
        (3, "python", 6, None),
        (14, "console", 16, "needs SYSU-MM01"),
        (19, "python", 21, None),
    ]
    assert page.blocks[0].text == "a = 1\n\nb = a"
    assert page.errors == [
        "t.rst:18: `.. vireid-skip:` needs a reason",
        "t.rst:23: `.. vireid-file:` is not followed by a code block",
    ]


def test_split_and_classify_commands() -> None:
    assert split_commands("python -m pip install -e '.[x]' && vireid-train  # a comment") == [
        ["python", "-m", "pip", "install", "-e", ".[x]"],
        ["vireid-train"],
    ]
    loop = "for t in $(seq 1 10); do vireid-train --trial $t --run-dir runs/r$t; done"
    assert split_commands(loop) == [["vireid-train", "--trial", "1", "--run-dir", "runs/r1"]]
    assert classify(["torchrun", "--nproc-per-node", "2", "-m", "vireid_layers.recipes", "--sync-bn"]) == (
        "train",
        ["--sync-bn"],
    )
    assert classify(["python", "examples/train_deen.py", "--epochs", "1"]) == (
        "train",
        ["--method", "deen", "--epochs", "1"],
    )
    assert classify(["pip", "install", "x"]) is None
    with pytest.raises(AssertionError, match="unknown program"):
        classify(["vireid-frobnicate"])


def test_check_command_fails_on_unknown_options_and_wrong_errors(tmp_path: Path) -> None:
    assert check_command(Command(["vireid-train", "--method", "agw", "--dataset", "sysu", "--root", "/x"], 1), tmp_path)
    with pytest.raises(AssertionError, match="rejected by its argument parser"):
        check_command(Command(["vireid-train", "--no-such-option"], 1), tmp_path)
    with pytest.raises(AssertionError, match="unknown recipe"):
        check_command(Command(["vireid-train", "--method", "nope"], 1), tmp_path)
    with pytest.raises(AssertionError, match="rejected by its argument parser"):
        check_command(Command(["python", "examples/evaluate.py", "ckpt.pt", "--no-such-option"], 1), tmp_path)
    with pytest.raises(AssertionError, match="rejected by its argument parser"):
        check_command(Command(["vireid-verify", "--dataset", "nope", "/data/x"], 1), tmp_path)
    expected = "error: invalid configuration: --root is required for --dataset sysu"
    assert check_command(Command(["vireid-train", "--dataset", "sysu"], 1, expected), tmp_path)
    with pytest.raises(AssertionError, match="the page shows"):
        check_command(Command(["vireid-train", "--dataset", "sysu"], 1, "error: something else"), tmp_path)
    with pytest.raises(AssertionError, match="it is accepted"):
        check_command(Command(["vireid-train"], 1, "error: never"), tmp_path)
