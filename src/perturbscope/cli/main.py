"""Entry point of the ``perturbscope`` command.

Each subcommand lives in its own module under ``perturbscope.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). Add a module's name to
``COMMAND_MODULES`` to make it appear.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from perturbscope import __version__
from perturbscope.cli.options import HelpFormatter

COMMAND_MODULES: tuple[str, ...] = (
    "perturbscope.cli.train_cmd",
    "perturbscope.cli.audit_cmd",
    "perturbscope.cli.demo_cmd",
    "perturbscope.cli.universal_cmd",
    "perturbscope.cli.categorize_cmd",
    "perturbscope.cli.rare_cmd",
    "perturbscope.cli.reproduce_cmd",
    "perturbscope.cli.harmless_cmd",
    "perturbscope.cli.noise_cmd",
    "perturbscope.cli.report_cmd",
    "perturbscope.cli.theory_cmd",
    "perturbscope.cli.bounds_cmd",
)


class UsageError(Exception):
    """Raised by a command for bad user input; printed without a traceback, exit code 2."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one line (``PROG: error: MESSAGE``), exit code 2,
    and whose help prints defaults plainly (:class:`perturbscope.cli.options.HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``perturbscope`` parser with every command. Imports no torch, pandas, scipy or matplotlib:
    each command module defers those to its run function."""
    parser = Parser(
        prog="perturbscope",
        description=(
            "Measure the geometry of a classifier's perturbations: adversarial, random, "
            "universal and harmless. Norms are in pixel units (inputs in [0, 1])."
        ),
    )
    parser.add_argument("--version", action="version", version=f"perturbscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2, message printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except (UsageError, FileNotFoundError, ValueError) as exc:
        print(f"perturbscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"perturbscope {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # Run the package's copy of this module, so that commands raise the same UsageError class.
    from perturbscope.cli.main import main as _main

    sys.exit(_main())
