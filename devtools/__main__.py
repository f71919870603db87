"""`python -m devtools <command>`: the project's commands, run inside `.venv` by `dev.py`.

up [--demo]          start the whole stack on embedded defaults (Ctrl-C stops)
scenario             drive the running stack through the story (needs --demo)
test [pytest args]   lint, type-check and run the test suite
emulator [args]      run the local Stripe emulator (python -m emulator serve)
bench [names]        measure DESIGN.md's budgets against their baselines (needs wrk)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devtools import scenario as story
from devtools.stack import ROOT, Stack, run_forever

PYTHON = Path(sys.executable)


def _env() -> dict[str, str]:
    """This environment with the venv's bin first (the temporal binaries live there)."""
    return {**os.environ, "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env=_env())
    if code:
        sys.exit(code)


def up(args: list[str]) -> None:
    run_forever(Stack(PYTHON, ROOT / ".data", demo="--demo" in args))


def scenario(args: list[str]) -> None:
    stack = Stack(PYTHON, ROOT / ".data")
    stack.env = {**os.environ}
    story.run(stack.api_url, stack.token, suffix=f"-{int(time.time())}")


def test(args: list[str]) -> None:
    _run([str(PYTHON), "-m", "ruff", "check", "."])
    _run([str(PYTHON), "-m", "ruff", "format", "--check", "."])
    _run([str(PYTHON), "-m", "mypy"])
    _run([str(PYTHON), "-m", "pytest", *args])


def emulator(args: list[str]) -> None:
    os.chdir(ROOT)
    os.execv(PYTHON, [str(PYTHON), "-m", "emulator", "serve", *args])


def bench(args: list[str]) -> None:
    _run([str(PYTHON), "-m", "bench", *args])


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "up": up,
    "scenario": scenario,
    "test": test,
    "emulator": emulator,
    "bench": bench,
}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
