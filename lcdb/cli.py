"""The ``lcdb`` command line: one subcommand per pipeline stage.

Each subcommand lives in a module of :mod:`lcdb.commands` that defines ``register(subparsers)``;
this module only assembles them, sets up logging and turns errors into exit codes
(0 success, 1 failure, 2 usage error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lcdb import __version__
from lcdb.errors import LcdbError, UsageError

_log = logging.getLogger("lcdb")

# Modules of lcdb.commands, in the order their subcommands are listed by --help.
_COMMAND_MODULES = (
    "store",
    "calib",
    "reduce",
    "ingest",
    "refcat",
    "query",
    "jobs",
    "variables",
    "export",
    "plot",
    "simulate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available subcommand."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="lcdb",
        description="Light-curve database and variability search for wide-field sky surveys.",
    )
    parser.add_argument("--version", action="version", version=f"lcdb {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"lcdb.commands.{name}")
        module.register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries stay quiet unless asked.
    for noisy in ("matplotlib", "PIL", "numba", "astropy"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lcdb`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _setup_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except UsageError as exc:
        _log.error("%s", exc)
        return 2
    except LcdbError as exc:
        _log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        _log.error("interrupted")
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
