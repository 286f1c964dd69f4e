"""The parser class, exit codes and the options several commands share, each defined once."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, Protocol, TypeAlias, TypeVar

from reconciler.cli.console import Console

Number = TypeVar("Number", int, float)

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
DEFAULT_STATE = "reconciler.duckdb"
DEFAULT_LOCK_TIMEOUT = "10"
STATE_ENV = "RECONCILER_STATE"
LOCK_TIMEOUT_ENV = "RECONCILER_LOCK_TIMEOUT"
LOCAL_REGION_ENV = "RECONCILER_LOCAL_REGION"
DEFAULT_LOCAL_REGION = "default"


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; here 2 means "changes", so usage errors exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """An option a (sub)command does not know is its usage error: argparse would hand it up
        to `reconcile` and print the top-level usage, which does not list the option's command."""
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


# What `add_subparsers()` returns; argparse names the class privately, typeshed types it.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


class Command(Protocol):
    """A command module: it adds its parser and runs with the parsed arguments."""

    NAME: str

    def register(self, commands: Subcommands) -> None: ...

    def run(self, args: argparse.Namespace, console: Console) -> int: ...


def subcommands(parser: argparse.ArgumentParser, dest: str, required: bool = False) -> Subcommands:
    """The ACTION subparsers of a command (`agents token`, `site build`), exiting 1 on misuse."""
    actions: Subcommands = parser.add_subparsers(
        dest=dest, metavar="ACTION", required=required, parser_class=Parser
    )
    return actions


def os_problem(error: OSError) -> str:
    """What an `OSError` says, for a person: `File exists (out/site)` rather than the
    `[Errno 17] …` of its `str`."""
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def _number(text: str, parse: Callable[[str], Number], what: str) -> Number:
    """`text` read by `parse` (int or float), or an argparse error saying what was expected."""
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def seconds(text: str) -> float:
    """An argparse type: a non-negative number of seconds (fractions allowed)."""
    value = _number(text, float, "a number of seconds")
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number, 1 or more (processes, workers)."""
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def region_name(text: str) -> str:
    """An argparse type: a Region's name (--local-region)."""
    from schemas.base import slug_problem

    if problem := slug_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    value = _number(text, int, "a port number")
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535), got {text}")
    return value


def days(text: str) -> timedelta:
    """An age in days: `35d` or `35`."""
    found = re.fullmatch(r"\s*(\d+)\s*d?\s*", text)
    if found is None or int(found.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of days such as 35d, got {text!r}"
        )
    return timedelta(days=int(found.group(1)))


def add_source(parser: argparse.ArgumentParser) -> None:
    """--repo, --ref and --local-region: which config to load (validate, plan, apply)."""
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="config repository directory (default: .)"
    )
    parser.add_argument(
        "--ref",
        help="git ref to read instead of the working tree (read from git objects, no checkout)",
    )
    parser.add_argument(
        "--local-region",
        default=os.environ.get(LOCAL_REGION_ENV, DEFAULT_LOCAL_REGION),
        type=region_name,
        metavar="NAME",
        help="the control plane's own region, where 'local' checks run "
        f"(default: ${LOCAL_REGION_ENV} or {DEFAULT_LOCAL_REGION})",
    )


def add_quiet(parser: argparse.ArgumentParser, help: str = "no progress on stderr") -> None:
    """-q/--quiet."""
    parser.add_argument("-q", "--quiet", action="store_true", help=help)


def add_state(
    parser: argparse.ArgumentParser, help: str = "DuckDB state file", *, settings: bool = False
) -> None:
    """--state FILE.

    Args:
        parser: the command's parser.
        help: what the file is to this command; the default is appended.
        settings: leave the default to the serve settings (environment, then TOML file).
    """
    parser.add_argument(
        "--state",
        type=Path,
        default=None if settings else Path(os.environ.get(STATE_ENV, DEFAULT_STATE)),
        metavar="FILE",
        help=f"{help} (default: ${STATE_ENV} or {DEFAULT_STATE})",
    )


def add_lock_timeout(parser: argparse.ArgumentParser, *, settings: bool = False) -> None:
    """--lock-timeout SECONDS: how long to wait for another process holding the state file."""
    parser.add_argument(
        "--lock-timeout",
        type=seconds,
        # A string default goes through `type`, so a bad environment value is a usage error.
        default=None if settings else os.environ.get(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT),
        metavar="SECONDS",
        help="wait this long for another process holding the state file "
        f"(default: ${LOCK_TIMEOUT_ENV} or {DEFAULT_LOCK_TIMEOUT}; 0 tries once)",
    )


def add_server(parser: argparse.ArgumentParser) -> None:
    """--server URL: the running `reconcile serve` to ask."""
    parser.add_argument(
        "--server",
        metavar="URL",
        help="URL of the `reconcile serve` holding the state file "
        "(default: read from <state>.serve.json next to the state file)",
    )


def add_format(
    parser: argparse.ArgumentParser, choices: Sequence[str], help: str = "output format"
) -> None:
    """--format, `text` by default."""
    parser.add_argument(
        "--format", choices=list(choices), default="text", help=f"{help} (default: text)"
    )
