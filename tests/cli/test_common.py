"""The plumbing every `telebridge` sub-command shares: one-line errors, `--config` on every
command and action, and the settings read from it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from telebridge.cli import common
from tests.cli.test_main import PREFIXES


def parser_with_commands() -> argparse.ArgumentParser:
    parser = common.Parser(prog="telebridge")
    sub = parser.add_subparsers(dest="command", parser_class=common.Parser)
    sub.required = True
    common.command(sub, "one", "the first command", lambda args: 11)
    add_action = common.nested(sub, "group", "a command with actions")
    add_action("run", "the action", lambda args: 12)
    return parser


def test_a_bad_argument_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser_with_commands().parse_args(["one", "--nope"])
    assert exited.value.code == common.EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert err == "telebridge: error: unrecognized arguments: --nope (see --help)\n"


def test_commands_and_actions_take_config_and_run_their_handler() -> None:
    parser = parser_with_commands()
    one = parser.parse_args(["one", "--config", "a.yaml"])
    assert (one.config, one.handler(one)) == ("a.yaml", 11)
    run = parser.parse_args(["group", "run", "--config", "b.yaml"])
    assert (run.config, run.group_action, run.handler(run)) == ("b.yaml", "run", 12)


def test_a_group_without_its_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser_with_commands().parse_args(["group"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("telebridge group: error: ")


def test_failed_is_one_line_on_stderr_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert common.failed("plivo: listing applications: HTTP 503") == common.EXIT_FAILED == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "telebridge: plivo: listing applications: HTTP 503\n")


def test_settings_come_from_the_config_file_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in [n for n in os.environ if n.upper().startswith(PREFIXES)]:
        monkeypatch.delenv(name)
    config = tmp_path / "telebridge.yaml"
    config.write_text("TELEBRIDGE_FLOW: from-file\nTELEBRIDGE_PORT: 9000\n")
    args = argparse.Namespace(config=str(config))
    settings = common.settings_of(args, telebridge_port=9001)
    assert (settings.telebridge_flow, settings.telebridge_port) == ("from-file", 9001)
