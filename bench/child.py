"""A Python child process of the benchmarks, spoken to in JSON lines over stdin and stdout.

Its stderr goes to a log file whose tail is shown when it fails. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, BenchError

STOP_TIMEOUT = 10.0


class Child:
    """A Python child process running `module`; its stderr goes to a log file."""

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,  # added to this process's environment
    ) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.env = env or {}
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=str(REPO_ROOT),
                env=env,
                limit=2**26,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def read_line(self, limit: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(limit):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise BenchError(f"{self.name} said nothing for {limit:g} s") from None
        if not line:
            raise BenchError(f"{self.name} exited early:\n{self.log_tail()}")
        return line.decode().strip()

    async def read_json(self, limit: float) -> dict[str, Any]:
        line = await self.read_line(limit)
        try:
            data = json.loads(line)
        except ValueError:
            raise BenchError(f"{self.name} printed {line[:200]!r}, not JSON") from None
        if not isinstance(data, dict):
            raise BenchError(f"{self.name} printed {line[:200]!r}, not a JSON object")
        return data

    async def send(self, data: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(data) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        """Close its stdin (it stops itself), then terminate, then kill: each step bounded."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        for action in (None, proc.terminate, proc.kill):
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await proc.wait()
                return
            except TimeoutError:
                continue
