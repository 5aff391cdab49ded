"""``vireid-train`` (``python -m vireid_layers.recipes``): train and evaluate a registered recipe.

Without ``--dataset`` it runs the recipe's quick synthetic CPU run: it writes the built-in synthetic dataset
(once, into ``~/.cache/vireid_layers``), trains a small network for a few minutes and evaluates it with the
SYSU-MM01 protocol. With ``--dataset sysu|regdb|llcm --root PATH`` it runs the official recipe. Every value of
the recipe's configuration is an option; ``--help`` lists them with their defaults. Under
``torchrun --nproc-per-node N`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import ImageReadError
from .base import Recipe, list_recipes, recipe_class
from .config import ConfigurationError, RecipeConfig
from .runner import train

__all__ = ["build_parser", "console_main", "main", "parse_args"]

EPILOG = """examples:
  vireid-train                                     # DEEN, synthetic data, CPU, a few minutes
  vireid-train --method agw                        # the AGW baseline, same data
  vireid-train --method ddag                       # DDAG (also: mpanet, mso), same data
  vireid-train --dataset sysu --root /data/SYSU-MM01 --amp bf16 --channels-last
  vireid-train --dataset regdb --root /data/RegDB --trial 3
  vireid-train --method mpanet --dataset regdb --root /data/RegDB   # MPANet's RegDB values (256x128, 12x10)
  vireid-train --method mso --dataset sysu --root /data/SYSU-MM01 --vgg-weights /models/vgg16.pth
  torchrun --nproc-per-node 2 -m vireid_layers.recipes --dataset llcm --root /data/LLCM --sync-bn
  vireid-train --run-dir runs/deen-synthetic-seed0 --resume runs/deen-synthetic-seed0/last.pt

--threads: on a shared or busy machine, threads of small CPU ops wait on each other (on a loaded 2-core machine a
2-thread epoch of the quick run took up to 66 s against 8 s with one thread): lower it to 1. The numbers depend on
the thread count and the processor (float sums run in another order); the same --threads, machine and seed, with
--deterministic, give a bit-identical run."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "(none)"
    return "none" if value is None else str(value)


DESCRIPTION = (
    "Train and evaluate a registered recipe (default: DEEN). Without --dataset: the quick synthetic CPU run "
    "(the synthetic dataset is written to ~/.cache/vireid_layers once, a small network trains for a few minutes "
    "and is evaluated with the SYSU-MM01 protocol). With --dataset sysu|regdb|llcm --root PATH: the official "
    "recipe. Every option below is a field of the recipe's configuration."
)


def build_parser(recipe: type[Recipe], *, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of ``recipe``: ``--method``, ``--resume`` and one option per configuration field.

    Each option's help ends with its default: one value, or the quick synthetic run's and the official one when
    they differ (the official one applies with ``--dataset``).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=textwrap.fill(DESCRIPTION, 100),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--method", help=f"the recipe to train, one of {list_recipes()} (default: deen)")
    parser.add_argument("--resume", metavar="LAST_PT", help="continue the run of this last.pt (default: start anew)")
    config_cls = recipe.config_class
    hints = typing.get_type_hints(config_cls)
    quick, official = recipe.quick_config(), recipe.official_config()
    for f in dataclasses.fields(config_cls):
        help_text = f.metadata.get("help", f.name)
        if f.metadata.get("choices") is not None:
            help_text += f"; one of {', '.join(str(c) for c in f.metadata['choices'])}"
        q, o = getattr(quick, f.name), getattr(official, f.name)
        if f.name == "dataset":
            default = f"default: {q}, the quick run"
        elif q == o:
            default = f"default: {_shown(q)}"
        else:
            default = f"default: {_shown(q)}; with --dataset: {_shown(o)}"
        kwargs: dict[str, Any] = {"help": f"{help_text} ({default})"}
        hint = hints[f.name]
        args = typing.get_args(hint)
        if hint is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(_flag(f.name), dest=f.name, type=int, nargs="*", metavar="N", **kwargs)
        else:
            kind = next((a for a in args if a is not type(None)), hint) if args else hint
            parse = _optional(kind) if type(None) in args else kind
            parser.add_argument(_flag(f.name), dest=f.name, type=parse, metavar=f.name.upper(), **kwargs)
    return parser


def parse_args(argv: Sequence[str] | None = None, *, prog: str | None = None) -> tuple[Recipe, str | None]:
    """The recipe of a command line and its ``--resume`` path.

    The defaults come from ``--method``'s recipe: its quick synthetic run without ``--dataset``, its official
    values for the dataset with one; the options given override them.

    Raises:
        ConfigurationError: a bad value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    method = argparse.ArgumentParser(add_help=False)
    method.add_argument("--method", default="deen")
    known, _ = method.parse_known_args(argv)
    try:
        recipe = recipe_class(known.method)
    except ValueError as error:
        raise ConfigurationError(f"invalid configuration: --method: {error}") from error
    values = vars(build_parser(recipe, prog=prog).parse_args(argv))
    values.pop("method", None)
    resume = values.pop("resume", None)
    if resume is not None and not Path(resume).is_file():
        raise ConfigurationError(f"invalid configuration: --resume {resume!r} does not exist")
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    config: RecipeConfig = recipe.default_config(values.get("dataset", "synthetic"), values.get("root"))
    return recipe(config, **values), resume


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (an error re-raised from a loader worker carries a traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def main(argv: Sequence[str] | None = None, *, prog: str | None = "vireid-train") -> int:
    """Parse, validate, train, evaluate; returns the exit status (2: a bad option, 1: an unreadable image)."""
    try:
        recipe, resume = parse_args(argv, prog=prog)
        train(recipe, resume=resume)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImageReadError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def console_main() -> None:
    """The ``vireid-train`` console script: :func:`main` on ``sys.argv``, its status as the exit code."""
    sys.exit(main())
