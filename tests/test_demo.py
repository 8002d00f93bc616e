"""`make demo` on a fresh copy of the repository: a new virtualenv, the package, one simulated call.

This is the quickstart's first command, run as a new user would: only the files git would ship,
no virtualenv yet. It installs from the package index (pip's cache and settings pass through).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import wave
from array import array
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Settings of the developer's shell, and an enclosing make's flags, must not leak in.
DROPPED = ("WAVES_", "PLIVO_", "VONAGE_", "TELEBRIDGE_", "MAKE", "MFLAGS", "VIRTUAL_ENV")


def shipped_files() -> list[str]:
    """Files a commit of the working tree would hold: tracked ones, and new ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    names = {name.decode() for name in listed.stdout.split(b"\0") if name}
    return sorted(name for name in names if (REPO / name).is_file())  # skip deleted files


def voiced_seconds(pcm: bytes, rate: int, threshold: float = 300.0) -> float:
    """Seconds of 20 ms windows whose RMS level is above `threshold` (speech, not silence)."""
    samples = array("h", pcm)
    window = rate // 50
    voiced = 0
    for start in range(0, len(samples) - window + 1, window):
        chunk = samples[start : start + window]
        if math.sqrt(sum(s * s for s in chunk) / window) > threshold:
            voiced += 1
    return voiced * 0.02


@pytest.mark.timeout(300)
def test_make_demo_on_a_fresh_copy(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is not installed: the quickstart needs it")
    copy = tmp_path / "telebridge"
    for name in shipped_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    assert not (copy / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(DROPPED)}
    env.pop("PYTHONPATH", None)

    result = subprocess.run(
        # VENV explicitly: a parent make (CI's 3.13 run) exports its own VENV to us.
        ["make", "demo", f"PYTHON={sys.executable}", "VENV=.venv"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # The timeline is printed, and the caller's audio is written.
    assert "prompt" in result.stdout and "call.wav" in result.stdout
    with wave.open(str(copy / "call.wav"), "rb") as wav:
        pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
    assert voiced_seconds(pcm, rate) > 2.0
    assert (copy / ".venv" / "bin" / "telebridge").is_file()
    # It ends by naming the console, whose pages the installed package carries.
    assert "http://127.0.0.1:8080/console" in result.stdout.splitlines()[-1]
    static = "lib/python*/site-packages/telebridge/console/static/*.html"
    pages = list((copy / ".venv").glob(static))
    assert {p.name for p in pages} >= {"console.html", "phone.html", "login.html"}
