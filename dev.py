#!/usr/bin/env python3
"""The project's commands. Needs only Python 3.11+: it makes `.venv`, installs into it, then runs
`python -m devtools <command>` there (devtools/__main__.py).

python3 dev.py up [--demo]          start the whole stack on embedded defaults (Ctrl-C stops);
                                    ports and data folder: flags or DEV_* variables (up --help)
python3 dev.py scenario             drive the running stack through the story (needs --demo)
python3 dev.py test [pytest args]   lint, type-check and run the test suite
python3 dev.py emulator [args]      run the local Stripe emulator (python -m emulator serve)
python3 dev.py bench [names]        measure DESIGN.md's budgets against their baselines (needs wrk)
python3 dev.py replay [options]     replay running workflows' histories on this code before a
                                    deploy (read-only; --address, --namespace, --query, --limit)
python3 dev.py simulate [options]   compare dunning policies on the real workflow for a simulated
                                    population (--customers, --months, --policy, --mix, --seed)

python3 dev.py <command> --help     that command's options (up: ports and data folder)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
COMMANDS = ("up", "scenario", "test", "emulator", "bench", "replay", "simulate")


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
    run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", ".[dev,lab]"])
    stamp.write_text(wanted)


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code:
        sys.exit(code)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return
        sys.exit(__doc__)
    ensure_venv()
    # The venv's Python takes this process over (Ctrl-C reaches the stack directly). From the
    # root, where `devtools` and `emulator` are found: the installed project leaves them out.
    os.chdir(ROOT)
    os.execv(PYTHON, [str(PYTHON), "-m", "devtools", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
