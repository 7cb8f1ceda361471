"""Command-line plumbing both commands share: a parser whose usage errors are one line,
and argument types that refuse what would misbehave later (NaN, negative intervals,
ports past 65535, unknown log levels) with a reason."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from machinedb import logs

EXIT_USAGE = 2
PORT_MAX = 65535


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: ``<prog>: <reason> (see --help)``."""

    def error(self, message: str) -> NoReturn:
        reason = message.splitlines()[0] if message else "bad usage"
        self.exit(EXIT_USAGE, f"{self.prog}: {reason} (see --help)\n")


def finite(text: str, what: str) -> float:
    """``text`` as a float; NaN and infinity are refused like any other bad number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
    return value


def share(text: str) -> float:
    value = finite(text, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = finite(text, "a number of seconds, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = finite(text, "a number of seconds above 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def integer(text: str, *, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, not {value}")
    return value


def non_negative_int(text: str) -> int:
    return integer(text, low=0, high=None, what="a whole number, 0 or more")


def positive_int(text: str) -> int:
    return integer(text, low=1, high=None, what="a whole number, 1 or more")


def port(text: str) -> int:
    return integer(text, low=1, high=PORT_MAX, what=f"a port number from 1 to {PORT_MAX}")


def log_level(text: str) -> str:
    try:
        return logs.parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        type=log_level,
        default="INFO",
        metavar="LEVEL",
        help=f"{', '.join(logs.LEVELS)} (default %(default)s)",
    )
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
