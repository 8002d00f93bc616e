"""The `telebridge` command as users run it: a subprocess with a controlled environment.

Each run drops every WAVES_*/PLIVO_*/VONAGE_*/TELEBRIDGE_* variable of the developer's shell and
works in a temporary folder (no stray `.env`), so only what a test sets counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from telebridge.cli.main import build_parser
from tests.flows.fakes import unused_port

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "config" / "flows"
PREFIXES = ("WAVES_", "PLIVO_", "VONAGE_", "TELEBRIDGE_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIXES)}
    env.update(extra)
    return env


def telebridge(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telebridge", *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 with exactly one line on stderr and no traceback; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command path of the parser ("serve", "flows check", ...), parents included."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                found.append(" ".join(path))
                found.extend(subcommands(sub, path))
    return found


# --- help -------------------------------------------------------------------------------

COMMANDS = subcommands(build_parser())


@pytest.mark.parametrize("command", ["", *COMMANDS], ids=lambda c: c or "telebridge")
def test_every_subcommand_has_help(command: str, tmp_path: Path) -> None:
    result = telebridge(*command.split(), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: telebridge")
    assert result.stderr == ""


@pytest.mark.parametrize(
    "command",
    ["serve", "simulate", "flows check", "calls", "call", "campaign run", "configure plivo",
     "configure vonage"],
)  # fmt: skip
def test_the_contracts_subcommands_exist(command: str) -> None:
    assert command in COMMANDS


def test_the_console_script_is_the_same_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "telebridge"
    assert script.is_file(), "pip install . installs the telebridge console script"
    result = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout == telebridge("--help", cwd=tmp_path).stdout


def test_version(tmp_path: Path) -> None:
    result = telebridge("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert re.fullmatch(r"telebridge \d+\.\d+\.\d+\S*\n", result.stdout)


# --- bad arguments and settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["nope"], "nope"),
        ([], "COMMAND"),
        (["simulate"], "--carrier"),
        (["simulate", "--carrier", "twilio"], "--carrier"),
        (["serve", "--port", "eighty"], "--port"),
        (["flows", "check"], "FILE"),
        (["calls", "--json", "--csv"], "--csv"),
        (["call", "--carrier", "plivo", "--from", "+14155550100"], "--to"),
        (
            [
                "call",
                "--carrier",
                "plivo",
                "--to",
                "+14155550123",
                "--from",
                "+14155550100",
                "--var",
                "novalue",
            ],
            "--var",
        ),
        (["campaign", "run", "--carrier", "plivo", "--from", "+14155550100"], "LIST.csv"),
        (["configure", "plivo"], "--app-name"),
        (["configure", "vonage"], "--application-id"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    line = one_line_error(telebridge(*args, cwd=tmp_path))
    assert named in line


def test_bad_digits_are_named(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_FLOWS_DIR=str(FLOWS), TELEBRIDGE_DB=str(tmp_path / "calls.db"))
    line = one_line_error(
        telebridge("simulate", "--carrier", "plivo", "--digits", "1x", cwd=tmp_path, env=env)
    )
    assert "--digits" in line and "x" in line


@pytest.mark.parametrize("command", [["calls"], ["serve"], ["simulate", "--carrier", "plivo"]])
def test_a_bad_setting_is_named_in_one_line(command: list[str], tmp_path: Path) -> None:
    env = clean_env(
        WAVES_SPEED="9",
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
    )
    line = one_line_error(telebridge(*command, cwd=tmp_path, env=env, timeout=20))
    assert "WAVES_SPEED" in line


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    line = one_line_error(
        telebridge("calls", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    )
    assert "TELEBRIDGE_CONFIG" in line and "nope.yaml" in line


def test_an_unusable_call_log_is_named(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_DB=str(tmp_path))  # a folder, not a database file
    line = one_line_error(telebridge("calls", cwd=tmp_path, env=env))
    assert "TELEBRIDGE_DB" in line


def test_a_bad_since_is_named(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_DB=str(tmp_path / "calls.db"))
    line = one_line_error(telebridge("calls", "--since", "last tuesday", cwd=tmp_path, env=env))
    assert "--since" in line


# --- flows check --------------------------------------------------------------------------


def test_flows_check_passes_the_shipped_flows(tmp_path: Path) -> None:
    files = sorted(str(p) for p in FLOWS.glob("*.yaml"))
    assert any(f.endswith("demo.yaml") for f in files)
    result = telebridge("flows", "check", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} flow file(s) OK" in result.stdout


BROKEN = """\
start: menu
steps:
  menu:
    say: "Hi."
    nxt: bye
  bye:
    say: "Bye."
    next: gone
"""


def test_flows_check_names_file_line_and_step_of_each_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text('start: a\nsteps:\n  a:\n    say: "Hi."\n    hangup: true\n')
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text('start: a\nsteps:\n  a:\n    say: "unclosed\n')
    result = telebridge("flows", "check", str(good), str(broken), str(bad_yaml), cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [ln for ln in result.stdout.splitlines() if not ln.startswith("warning:")]
    assert any(
        re.fullmatch(rf"{re.escape(str(broken))}:5: step 'menu': .*'nxt'.*", ln) for ln in errors
    ), errors
    assert any(
        re.fullmatch(rf"{re.escape(str(broken))}:8: step 'bye': .*'gone'.*", ln) for ln in errors
    ), errors
    assert any(re.match(rf"{re.escape(str(bad_yaml))}:\d+: .*YAML", ln) for ln in errors), errors
    assert not any(str(good) in ln for ln in result.stdout.splitlines())


SPARE = """\
start: a
steps:
  a:
    say: "Hi {{name}}."
    hangup: true
  spare:
    say: "Only a webhook names me."
    hangup: true
"""


def test_flows_check_warnings_alone_pass(tmp_path: Path) -> None:
    flow = tmp_path / "spare.yaml"
    flow.write_text(SPARE)
    result = telebridge("flows", "check", str(flow), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    warnings = [ln for ln in result.stdout.splitlines() if ln.startswith("warning:")]
    assert any(f"{flow}:6: step 'spare'" in ln for ln in warnings), warnings
    assert any(f"{flow}:4: step 'a'" in ln and "'name'" in ln for ln in warnings), warnings


def test_flows_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = telebridge("flows", "check", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.yaml" in result.stdout and "Traceback" not in result.stderr


# --- serve refuses to start -----------------------------------------------------------------


def test_serve_needs_the_public_url(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_FLOWS_DIR=str(FLOWS), TELEBRIDGE_PORT="1")
    line = one_line_error(telebridge("serve", cwd=tmp_path, env=env, timeout=20))
    assert "TELEBRIDGE_PUBLIC_URL" in line


def test_serve_refuses_a_broken_flow_in_one_line(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(FLOWS / "demo.yaml", flows / "demo.yaml")
    (flows / "broken.yaml").write_text(BROKEN.replace("next: gone", "hangup: true"))
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(flows),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
        TELEBRIDGE_PORT="1",  # never bound: the server must not get that far
    )
    line = one_line_error(telebridge("serve", cwd=tmp_path, env=env, timeout=20))
    assert f"{flows / 'broken.yaml'}:5: step 'menu'" in line and "'nxt'" in line


def test_serve_starts_despite_flow_warnings(tmp_path: Path) -> None:
    """Warnings alone do not stop the server: it gets as far as binding its port."""
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(FLOWS / "demo.yaml", flows / "demo.yaml")
    (flows / "spare.yaml").write_text(SPARE)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(flows),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
        TELEBRIDGE_HOST="127.0.0.1",
        TELEBRIDGE_PORT=str(busy.getsockname()[1]),  # taken: uvicorn gives up at once
    )
    with busy:
        result = telebridge("serve", cwd=tmp_path, env=env, timeout=30)
    assert "spare" in result.stderr  # the warning was logged
    assert "flow has errors" not in result.stderr and "refusing" not in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
    )
    with busy:
        result = telebridge(
            "serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path, env=env, timeout=30
        )
    line = one_line_error(result)
    assert line.endswith(
        f"TELEBRIDGE_PORT: cannot listen on 127.0.0.1:{port}: address already in use"
    )


def test_serve_with_an_unusable_call_log_is_one_line(tmp_path: Path) -> None:
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_DB=str(tmp_path),  # a folder, not a database file
        TELEBRIDGE_HOST="127.0.0.1",
        TELEBRIDGE_PORT=str(unused_port()),
    )
    line = one_line_error(telebridge("serve", cwd=tmp_path, env=env, timeout=30))
    assert "TELEBRIDGE_DB" in line and "is a directory" in line


def test_serve_with_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{unused_port()}/0"  # nothing listens there
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
        TELEBRIDGE_HOST="127.0.0.1",
        TELEBRIDGE_PORT=str(unused_port()),
        TELEBRIDGE_REDIS_URL=url,
        PYTHONPATH=str(REPO),  # this checkout's telebridge, whatever the environment installed
    )
    line = one_line_error(telebridge("serve", cwd=tmp_path, env=env, timeout=30))
    assert "TELEBRIDGE_REDIS_URL: cannot join the cluster: Redis at redis://:***@127.0.0.1" in line
    assert "hunter2" not in line


WITHOUT_REDIS = "import sys; sys.modules['redis'] = None; from telebridge.cli.main import main; "


def test_without_redis_py_the_bridge_runs_and_a_redis_url_says_what_to_install(
    tmp_path: Path,
) -> None:
    # The base install has no redis-py (the `cluster` extra): `import redis` fails as there.
    env = clean_env(PYTHONPATH=str(REPO), TELEBRIDGE_FLOWS_DIR=str(REPO / "config" / "flows"))
    simulated = subprocess.run(
        [sys.executable, "-c", WITHOUT_REDIS + "sys.exit(main(['simulate', '--carrier', 'plivo',"
         " '--out', 'call.wav']))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-2000:]
    env |= {
        "TELEBRIDGE_PUBLIC_URL": "https://bridge.example.com",
        "TELEBRIDGE_DB": str(tmp_path / "calls.db"),
        "TELEBRIDGE_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    served = subprocess.run(
        [sys.executable, "-c", WITHOUT_REDIS + "sys.exit(main(['serve']))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = one_line_error(served)
    assert "TELEBRIDGE_REDIS_URL" in line and "pip install 'telebridge[cluster]'" in line


# --- calls ----------------------------------------------------------------------------------


def test_calls_on_an_empty_log(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_DB=str(tmp_path / "calls.db"))
    as_json = telebridge("calls", "--json", cwd=tmp_path, env=env)
    assert (as_json.returncode, as_json.stdout, as_json.stderr) == (0, "", "")
    table = telebridge("calls", cwd=tmp_path, env=env)
    assert table.returncode == 0 and table.stdout == "no calls recorded\n"


def test_calls_json_lists_each_call_with_the_contracts_fields(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    with CallLog(db) as log:
        recorder = log.start_call(
            carrier="plivo",
            call_id="CALL-1",
            direction="inbound",
            from_number="14155550100",
            to_number="14155550199",
            flow="demo",
        )
        recorder.step_entered("menu")
        recorder.digits_collected("menu", "1")
        recorder.step_entered("hours")
        recorder.finish("hangup")
    result = telebridge("calls", "--json", cwd=tmp_path, env=clean_env(TELEBRIDGE_DB=str(db)))
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    call = json.loads(line)
    assert {k: call[k] for k in ("carrier", "call_id", "from", "to", "flow")} == {
        "carrier": "plivo",
        "call_id": "CALL-1",
        "from": "14155550100",
        "to": "14155550199",
        "flow": "demo",
    }
    assert (call["steps"], call["digits"], call["outcome"]) == (["menu", "hours"], "1", "hangup")
    assert call["started_at"] and call["ended_at"]


AGENT_FLOW = """\
start: a
steps:
  a:
    agent: {url: "ws://127.0.0.1:8765/call"}
    next: b
  b: {say: "Bye.", hangup: true}
"""


def test_flows_check_and_serve_need_the_agent_secret_for_agent_steps(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "agent.yaml").write_text(AGENT_FLOW)
    result = telebridge("flows", "check", str(flows / "agent.yaml"), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert "step 'a'" in line and "TELEBRIDGE_AGENT_SECRET" in line
    env = clean_env(TELEBRIDGE_AGENT_SECRET="s3cret-for-the-agent-handshake")
    ok = telebridge("flows", "check", str(flows / "agent.yaml"), cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stdout
    env = clean_env(TELEBRIDGE_FLOWS_DIR=str(flows), TELEBRIDGE_FLOW="agent",
                    TELEBRIDGE_DB=str(tmp_path / "calls.db"),
                    TELEBRIDGE_PUBLIC_URL="https://bridge.example.com")  # fmt: skip
    line = one_line_error(telebridge("serve", "--port", "1", cwd=tmp_path, env=env))
    assert "TELEBRIDGE_AGENT_SECRET" in line
