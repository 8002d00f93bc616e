"""What every `telebridge` sub-command shares: the one-line usage error, exit codes, the parser that
reports a bad argument in one line, and loading the settings a command runs with."""

from __future__ import annotations

import argparse
from typing import NoReturn

from telebridge.settings import Settings, load_settings

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(Exception):
    """A bad argument or setting found after parsing; the message is the whole story."""


def settings_of(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings for a command: `--config FILE` if given, the environment, then overrides."""
    return load_settings(getattr(args, "config", None), **overrides)
