"""Where `python3 dev.py up` runs: each port from a flag, else the environment, else its default
(the next free one when that is taken); a data folder of its own, so two stacks run side by side.
Standard library only; nothing here starts a process.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

from devtools.stack import ROOT, STACK_FILE, Ports


@dataclass(frozen=True)
class PortOption:
    flag: str
    env: str
    what: str


# One per field of Ports: its flag, its environment variable, what listens there. The variables
# carry a DEV_ prefix: API_PORT, SMTP_PORT and TEMPORAL_ADDRESS are the service's own settings,
# which the stack sets for its children from these.
PORT_OPTIONS: dict[str, PortOption] = {
    "api": PortOption("--api-port", "DEV_API_PORT", "the HTTP API"),
    "temporal": PortOption("--temporal-port", "DEV_TEMPORAL_PORT", "Temporal's gRPC frontend"),
    "ui": PortOption("--ui-port", "DEV_UI_PORT", "the Temporal Web UI"),
    "stripe": PortOption("--stripe-port", "DEV_STRIPE_PORT", "the Stripe emulator"),
    "smtp": PortOption("--smtp-port", "DEV_SMTP_PORT", "the SMTP sink"),
    "metrics": PortOption("--metrics-port", "DEV_METRICS_PORT", "the worker's metrics"),
}
DATA_DIR_ENV = "DEV_DATA_DIR"
DEFAULT_DATA = ROOT / ".data"
LOCK_FILE = "stack.lock"
# How far above a taken default port to look before asking the system for any free one.
SEARCH_ABOVE = 100


class OptionError(ValueError):
    """A port or data folder that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Requested:
    """A port asked for explicitly, and who asked (a flag or a variable), for the messages."""

    port: int
    source: str


@dataclass
class UpOptions:
    demo: bool
    requested: dict[str, Requested]
    data_dir: Path | None


def port_number(text: str, source: str = "port") -> int:
    try:
        port = int(text)
    except ValueError:
        raise OptionError(f"{source}: {text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise OptionError(f"{source}: {port} is not a port number (1-65535)")
    return port


def _flag_port(text: str) -> int:
    try:
        return port_number(text)
    except OptionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def up_parser() -> argparse.ArgumentParser:
    defaults = Ports()
    parser = argparse.ArgumentParser(
        prog="python3 dev.py up",
        description="Start the whole stack on 127.0.0.1 (Ctrl-C stops it).",
        epilog=(
            "Each port comes from its flag, else its environment variable, else its default. "
            "A default port that is taken is replaced by the next free one (so a second stack "
            "starts beside the first); a port asked for that is taken is an error. The data "
            f"folder is --data-dir, else ${DATA_DIR_ENV}, else .data/ (.data/stack-2/, ... when "
            "another running stack holds .data/)."
        ),
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="a dunning policy in seconds (retries 20 s apart, the trial reminder 1 min ahead)",
    )
    for name, option in PORT_OPTIONS.items():
        parser.add_argument(
            option.flag,
            type=_flag_port,
            metavar="PORT",
            dest=name,
            help=f"{option.what} (env {option.env}; default {getattr(defaults, name)})",
        )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"databases, emulator state, mail and logs (env {DATA_DIR_ENV}; default .data)",
    )
    return parser


def parse_up(argv: list[str], environ: Mapping[str, str]) -> UpOptions:
    """`up`'s flags over the environment; a port not asked for either way is left to choose."""
    args = up_parser().parse_args(argv)
    requested: dict[str, Requested] = {}
    for name, option in PORT_OPTIONS.items():
        flag = getattr(args, name)
        if flag is not None:
            requested[name] = Requested(flag, option.flag)
        elif environ.get(option.env, "").strip():
            requested[name] = Requested(port_number(environ[option.env], option.env), option.env)
    data_dir = args.data_dir or (
        Path(environ[DATA_DIR_ENV]) if environ.get(DATA_DIR_ENV, "").strip() else None
    )
    return UpOptions(demo=args.demo, requested=requested, data_dir=data_dir)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen there now (with SO_REUSEADDR, as the stack's servers do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_ports(
    requested: Mapping[str, Requested],
    is_free: Callable[[int], bool] = port_is_free,
    defaults: Ports | None = None,
    any_free: Callable[[], int] = any_free_port,
) -> tuple[Ports, list[str]]:
    """The ports to use, and a note for each default that was taken and replaced.

    Ports asked for must be free and distinct (OptionError otherwise); every other port is its
    default, or the first free one above it, or any free one.
    """
    defaults = defaults or Ports()
    chosen: dict[str, int] = {}
    for name, asked in requested.items():
        if name not in PORT_OPTIONS:
            raise OptionError(f"unknown port {name!r}")
        other = next((n for n, p in chosen.items() if p == asked.port), None)
        if other is not None:
            raise OptionError(
                f"{asked.source} asks for port {asked.port}, which {requested[other].source} "
                "asks for too"
            )
        if not is_free(asked.port):
            raise OptionError(
                f"port {asked.port} ({asked.source}, {PORT_OPTIONS[name].what}) is already in "
                f"use: stop what listens there, ask for another port, or leave "
                f"{PORT_OPTIONS[name].flag} and {PORT_OPTIONS[name].env} unset to get a free one"
            )
        chosen[name] = asked.port
    notes: list[str] = []
    for field in fields(Ports):
        name = field.name
        if name in chosen:
            continue
        default: int = getattr(defaults, name)
        taken = set(chosen.values())
        candidates = range(default, min(default + SEARCH_ABOVE, 65536))
        port = next((p for p in candidates if p not in taken and is_free(p)), None)
        while port is None or port in taken:
            port = any_free()
        chosen[name] = port
        if port != default:
            notes.append(
                f"port {default} ({PORT_OPTIONS[name].what}) is in use: using {port} "
                f"(set {PORT_OPTIONS[name].flag} or {PORT_OPTIONS[name].env} to choose)"
            )
    return Ports(**chosen), notes


def lock_data_dir(folder: Path) -> IO[str] | None:
    """Hold `folder` for this process (an advisory lock, freed when it exits), or None when a
    running stack holds it. Keep the answer open as long as the stack runs."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held for the stack's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def claim_data_dir(explicit: Path | None, default: Path = DEFAULT_DATA) -> tuple[Path, IO[str]]:
    """The data folder, locked: the one asked for (an error when another stack holds it), else
    `default`, else the first of default/stack-2, default/stack-3, ... no running stack holds."""
    if explicit is not None:
        held = lock_data_dir(explicit)
        if held is None:
            raise OptionError(
                f"{explicit} is the data folder of another running stack: stop it, or choose "
                f"another with --data-dir or {DATA_DIR_ENV}"
            )
        return explicit, held
    for folder in (default, *(default / f"stack-{n}" for n in range(2, 100))):
        held = lock_data_dir(folder)
        if held is not None:
            return folder, held
    raise OptionError(f"every data folder under {default} is held by a running stack")


def read_stack_file(data: Path) -> Ports:
    """The ports of the stack running with that data folder."""
    held = lock_data_dir(data) if data.is_dir() else None
    if held is not None:
        held.close()
    if held is not None or not (data / STACK_FILE).exists():
        raise OptionError(
            f"no stack is running with its data in {data}: start one with `python3 dev.py up "
            "--demo`, or pass the --data-dir it printed"
        )
    described = json.loads((data / STACK_FILE).read_text())
    return Ports(**described["ports"])
