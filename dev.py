#!/usr/bin/env python3
"""The project's commands. Needs only Python 3.11+: it makes `.venv` and installs into it.

python3 dev.py up [--demo]          start the whole stack on embedded defaults (Ctrl-C stops)
python3 dev.py scenario             drive the running stack through the story (needs --demo)
python3 dev.py test [pytest args]   lint, type-check and run the test suite
python3 dev.py emulator [args]      run the local Stripe emulator (python -m emulator serve)
python3 dev.py bench [names]        measure DESIGN.md's budgets against their baselines (needs wrk)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def ensure_venv() -> None:
    """Create the virtual environment and (re)install when pyproject.toml changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print("installing the project and its dependencies into .venv", flush=True)
    run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", ".[dev]"])
    stamp.write_text(wanted)


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code:
        sys.exit(code)


def test(args: list[str]) -> None:
    ensure_venv()
    run([str(PYTHON), "-m", "ruff", "check", "."])
    run([str(PYTHON), "-m", "ruff", "format", "--check", "."])
    run([str(PYTHON), "-m", "mypy"])
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    run([str(PYTHON), "-m", "pytest", *args], env=env)


def bench(args: list[str]) -> None:
    ensure_venv()
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    run([str(PYTHON), "-m", "bench", *args], env=env)


def emulator(args: list[str]) -> None:
    ensure_venv()
    os.execv(str(PYTHON), [str(PYTHON), "-m", "emulator", "serve", *args])


def up(args: list[str]) -> None:
    import devstack

    ensure_venv()
    devstack.run_forever(devstack.Stack(PYTHON, ROOT / ".data", demo="--demo" in args))


def scenario(args: list[str]) -> None:
    import devstack
    import scenario as story

    ensure_venv()
    stack = devstack.Stack(PYTHON, ROOT / ".data")
    stack.env = {**os.environ}
    story.run(stack.api_url, stack.token, suffix=f"-{int(time.time())}")


COMMANDS = {"up": up, "scenario": scenario, "test": test, "emulator": emulator, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])
