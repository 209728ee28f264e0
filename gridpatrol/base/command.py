"""How a ``gridpatrol`` command ends: exit status, logging, a closed stdout.

Shared by ``gridpatrol`` (gridpatrol/cli.py) and ``python -m agent``, so the
agent's own entry point needs neither the whole command line nor anything of
central's.

Exit status 0 on success, 2 for bad usage or bad input (one line naming the
file, key or value at fault), 1 for other failures, 130 after Ctrl-C. Every
``ValueError`` raised by one of our packages means bad input (``ConfigError``,
``PlanError``, ``DecodeError``, ...). A reader that closes our stdout early
(``gridpatrol events --json | head``) is not a failure: exit 0, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

OUR_PACKAGES = ("agent", "central", "wire", "firmware_bridge", "gridpatrol")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_LOGGER = logging.getLogger(__name__)


class UsageParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit status 2, as argparse's own)."""

    def error(self, message: str) -> None:  # type: ignore[override]  # never returns, like the base
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="how much to log on stderr (default INFO)")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def is_bad_input(exc: BaseException) -> bool:
    module = type(exc).__module__.split(".")[0]
    return isinstance(exc, ValueError) and module in OUR_PACKAGES


def _silence_stdout() -> None:
    # The reader is gone: point stdout at /dev/null so the interpreter's own
    # final flush does not raise (and print a traceback) a second time.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing to redirect
        pass


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run one subcommand; the one place that turns exceptions into exit status."""
    try:
        status = int(func(args) or 0)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        if is_bad_input(exc):
            print(f"gridpatrol: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        _LOGGER.debug("failed", exc_info=True)
        print(f"gridpatrol: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
