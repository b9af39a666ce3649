"""Entry point of the ``perturbscope`` command.

Each subcommand lives in its own module under ``perturbscope.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). Add a module's name to
``COMMAND_MODULES`` to make it appear.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
from pathlib import Path

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


def _raised_by_us(exc: BaseException) -> bool:
    """True when ``exc`` is one of perturbscope's checks: an exception class defined in perturbscope,
    or a ``raise`` statement in perturbscope's own code. A ValueError or TypeError that Python,
    torch, numpy or pandas raised (a genuine bug, or a case no check covers yet) is not."""
    if type(exc).__module__.split(".")[0] == "perturbscope":
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    package = Path(__file__).resolve().parents[1]
    try:
        inside = Path(last.filename).resolve().is_relative_to(package)
    except (OSError, ValueError):  # pragma: no cover
        inside = False
    return inside and (last.line or "").lstrip().startswith("raise")


def _oserror_message(exc: OSError) -> str:
    where = " -> ".join(os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    text = f"{what}: {where}" if where else what
    if exc.errno == errno.ENOSPC:
        return f"{text}; free some space or write elsewhere (nothing half-written was kept)"
    if exc.errno == errno.EROFS:
        return f"{text}; give a path on a writable file system (nothing was written there)"
    if isinstance(exc, PermissionError):
        return f"{text}; check the permissions or give another path"
    if isinstance(exc, IsADirectoryError):
        return f"{text}; give a file name, not a folder"
    if isinstance(exc, NotADirectoryError):
        return f"{text}; a part of the path is a file, not a folder"
    if isinstance(exc, FileExistsError):
        return f"{text}; remove it or give another path"
    return text if exc.strerror else str(exc)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (type(exc).__name__ == "OutOfMemoryError"
                                              or "out of memory" in text or "can't allocate memory" in text)


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user mistake or a resource problem, or ``None`` for a bug.

    User mistakes: :class:`UsageError`; ValueError / TypeError raised by perturbscope's checks
    (:func:`_raised_by_us`); missing files, permissions, read-only and full disks (every
    ``OSError`` with an errno); connection failures and time-outs; running out of memory. Anything
    else is a bug and keeps its traceback.
    """
    if isinstance(exc, UsageError):
        return str(exc)
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"{exc}" if str(exc) else f"{type(exc).__name__}: the connection failed"
    if isinstance(exc, OSError) and (exc.errno is not None or _raised_by_us(exc)):
        return _oserror_message(exc)
    if _is_out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (f"out of memory ({first[:200]}); lower --forward-batch (inputs per forward pass), "
                f"--limit or --draws, or run on a machine with more memory")
    if isinstance(exc, ValueError | TypeError) and _raised_by_us(exc):
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2, message printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"perturbscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise  # a bug: keep the traceback
        one_line = " ".join(message.split())
        print(f"perturbscope {args.command}: error: {one_line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    # Run the package's copy of this module, so that commands raise the same UsageError class.
    from perturbscope.cli.main import main as _main

    sys.exit(_main())
