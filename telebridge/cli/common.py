"""What every `telebridge` sub-command shares: the one-line usage error and failure, exit codes, the
parser that reports a bad argument in one line, adding a command with `--config`, loading the
settings a command runs with, and the logging the operations commands run with."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from telebridge.logs import setup_logging
from telebridge.settings import Settings, load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, str, Handler], argparse.ArgumentParser]


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """A bad argument or setting found after parsing; the message is the whole story."""


def failed(message: str) -> int:
    """Report a failure that is not the user's mistake (a carrier's API failing) in one line."""
    print(f"telebridge: {message}", file=sys.stderr)
    return EXIT_FAILED


def settings_of(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings for a command: `--config FILE` if given, the environment, then overrides."""
    return load_settings(getattr(args, "config", None), **overrides)


def quiet_logs() -> None:
    """Only warnings and errors: the operations commands' output is their own lines."""
    setup_logging("warning")


def command(sub: Any, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
    """Add the command `name` (with `--config`) to the subparsers `sub`, run by `handler`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    parser.add_argument("--config", help="YAML settings file (also TELEBRIDGE_CONFIG)")
    return parser


def nested(sub: Any, name: str, help: str) -> AddCommand:
    """A command with actions (`campaign run`), each action with --config like a command."""
    group = sub.add_parser(name, help=help, description=help)
    actions = group.add_subparsers(
        dest=f"{name}_action", metavar="ACTION", parser_class=type(group)
    )
    actions.required = True

    def add_action(action: str, text: str, handler: Handler) -> argparse.ArgumentParser:
        return command(actions, action, text, handler)

    return add_action
