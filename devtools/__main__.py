"""`python -m devtools <command>`: the project's commands, run inside `.venv` by `dev.py`.

up [--demo]          start the whole stack on embedded defaults (Ctrl-C stops); ports and the
                     data folder from flags or DEV_* variables (`up --help`)
scenario             drive the running stack through the story (needs --demo; --data-dir)
test [pytest args]   lint, type-check and run the test suite
emulator [args]      run the local Stripe emulator (python -m emulator serve)
bench [names]        measure DESIGN.md's budgets against their baselines (needs wrk)
replay [options]     replay running workflows' histories on this code before a deploy
                     (read-only; --address, --namespace, --query, --limit; `replay --help`)
simulate [options]   compare dunning policies on the real workflow (lab/; `simulate --help`)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devtools import scenario as story
from devtools.options import (
    DATA_DIR_ENV,
    DEFAULT_DATA,
    OptionError,
    choose_ports,
    claim_data_dir,
    parse_up,
    read_stack_file,
)
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
    options = parse_up(args, os.environ)
    ports, notes = choose_ports(options.requested)
    # Absolute: the children run from the repository root.
    data, lock = claim_data_dir(options.data_dir.resolve() if options.data_dir else None)
    with lock:
        for note in notes:
            print(note, flush=True)
        run_forever(Stack(PYTHON, data, ports, demo=options.demo))


def scenario(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py scenario",
        description="Drive the stack `python3 dev.py up --demo` runs through the story.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA),
        help=f"the running stack's data folder, as its banner shows (env {DATA_DIR_ENV}; "
        "default .data)",
    )
    data = parser.parse_args(args).data_dir.resolve()
    stack = Stack(PYTHON, data, read_stack_file(data))
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


def replay(args: list[str]) -> None:
    # Imported here: it loads the worker (Stripe's SDK, SQLAlchemy), which `up` does not need.
    from devtools import replay as command

    sys.exit(command.main(args))


def simulate(args: list[str]) -> None:
    _run([str(PYTHON), "-m", "lab.simulate", *args])


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "up": up,
    "scenario": scenario,
    "test": test,
    "emulator": emulator,
    "bench": bench,
    "replay": replay,
    "simulate": simulate,
}


def main(argv: list[str]) -> None:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not argv or argv[0] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[argv[0]](argv[1:])
    except OptionError as err:
        sys.exit(f"{argv[0]}: {err}")


if __name__ == "__main__":
    main(sys.argv[1:])
