"""`python3 dev.py up`'s ports and data folder: flags over the environment over the defaults, a
taken default replaced, a taken port asked for refused. No stack is started."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.options import (
    OptionError,
    Requested,
    choose_ports,
    claim_data_dir,
    parse_up,
    port_is_free,
    read_stack_file,
)
from devtools.stack import STACK_FILE, Ports

DEFAULTS = Ports()


def taken(*ports: int) -> Callable[[int], bool]:
    return lambda port: port not in ports


def test_no_flag_no_variable_asks_for_nothing() -> None:
    options = parse_up([], {})
    assert (options.demo, options.requested, options.data_dir) == (False, {}, None)


def test_flags_and_variables_name_ports_flags_first() -> None:
    environ = {"DEV_API_PORT": "9000", "DEV_SMTP_PORT": " 2525 ", "DEV_UI_PORT": ""}
    options = parse_up(["--demo", "--api-port", "9100", "--stripe-port=12200"], environ)
    assert options.demo
    assert options.requested == {
        "api": Requested(9100, "--api-port"),
        "stripe": Requested(12200, "--stripe-port"),
        "smtp": Requested(2525, "DEV_SMTP_PORT"),
    }


def test_every_port_has_its_flag_and_variable() -> None:
    flags = parse_up(
        [
            *("--api-port", "1"),
            *("--temporal-port", "2"),
            *("--ui-port", "3"),
            *("--stripe-port", "4"),
            *("--smtp-port", "5"),
        ],
        {},
    )
    assert {name: r.port for name, r in flags.requested.items()} == {
        "api": 1,
        "temporal": 2,
        "ui": 3,
        "stripe": 4,
        "smtp": 5,
    }
    names = ("API", "TEMPORAL", "UI", "STRIPE", "SMTP")
    env = parse_up([], {f"DEV_{name}_PORT": str(n) for n, name in enumerate(names, 10)})
    assert [r.port for r in env.requested.values()] == [10, 11, 12, 13, 14]


def test_the_data_folder_from_flag_or_variable(tmp_path: Path) -> None:
    assert parse_up([], {"DEV_DATA_DIR": str(tmp_path)}).data_dir == tmp_path
    assert parse_up(["--data-dir", "x"], {"DEV_DATA_DIR": str(tmp_path)}).data_dir == Path("x")


@pytest.mark.parametrize("value", ["http", "0", "65536", "-1"])
def test_a_bad_port_in_the_environment_names_its_variable(value: str) -> None:
    with pytest.raises(OptionError, match="DEV_TEMPORAL_PORT"):
        parse_up([], {"DEV_TEMPORAL_PORT": value})


def test_a_bad_port_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_up(["--api-port", "eighty"], {})
    assert exited.value.code == 2
    assert "--api-port" in capsys.readouterr().err


def test_free_defaults_are_kept() -> None:
    assert choose_ports({}, is_free=taken()) == (DEFAULTS, [])


def test_a_taken_default_moves_to_the_next_free_port_and_says_so() -> None:
    ports, notes = choose_ports({}, is_free=taken(8000, 8001, 7233))
    assert ports == Ports(temporal=7234, ui=8233, stripe=12111, api=8002, smtp=1025)
    assert len(notes) == 2
    assert any("8000" in n and "8002" in n and "--api-port" in n for n in notes)


def test_a_second_stack_beside_the_first_gets_distinct_ports() -> None:
    first, _ = choose_ports({}, is_free=taken())
    busy = {first.temporal, first.ui, first.stripe, first.api, first.smtp}
    second, notes = choose_ports({}, is_free=lambda port: port not in busy)
    assert len(notes) == 5
    assert not busy & {second.temporal, second.ui, second.stripe, second.api, second.smtp}


def test_a_default_never_takes_a_port_asked_for_another() -> None:
    ports, _ = choose_ports({"ui": Requested(7233, "--ui-port")}, is_free=taken())
    assert ports.ui == 7233
    assert ports.temporal == 7234


def test_when_nothing_near_the_default_is_free_any_free_port() -> None:
    ports, _ = choose_ports(
        {}, is_free=lambda port: not 8000 <= port < 8100, any_free=lambda: 40_000
    )
    assert ports.api == 40_000


def test_a_taken_port_asked_for_is_an_error_naming_who_asked() -> None:
    with pytest.raises(OptionError, match=r"port 9000 \(DEV_API_PORT, the HTTP API\) is already"):
        choose_ports({"api": Requested(9000, "DEV_API_PORT")}, is_free=taken(9000))


def test_one_port_asked_for_twice_is_an_error() -> None:
    asked = {"api": Requested(9000, "--api-port"), "smtp": Requested(9000, "DEV_SMTP_PORT")}
    with pytest.raises(OptionError, match="--api-port"):
        choose_ports(asked, is_free=taken())


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_listening_port_is_not_free_and_is_stepped_over(listener: int) -> None:
    assert not port_is_free(listener)
    ports, notes = choose_ports({}, defaults=Ports(*[listener] * 5))
    assert listener not in (ports.temporal, ports.ui, ports.stripe, ports.api, ports.smtp)
    assert len({ports.temporal, ports.ui, ports.stripe, ports.api, ports.smtp}) == 5
    assert len(notes) == 5


def test_the_default_data_folder_then_numbered_ones_beside_a_running_stack(
    tmp_path: Path,
) -> None:
    first, held_first = claim_data_dir(None, default=tmp_path / ".data")
    second, held_second = claim_data_dir(None, default=tmp_path / ".data")
    assert (first, second) == (tmp_path / ".data", tmp_path / ".data" / "stack-2")
    held_first.close()  # the first stack stopped: its folder is free again
    again, held_again = claim_data_dir(None, default=tmp_path / ".data")
    assert again == first
    held_again.close()
    held_second.close()


def test_a_data_folder_asked_for_and_held_is_an_error(tmp_path: Path) -> None:
    _, held = claim_data_dir(tmp_path / "mine")
    with pytest.raises(OptionError, match="another running stack"):
        claim_data_dir(tmp_path / "mine")
    held.close()
    claim_data_dir(tmp_path / "mine")[1].close()


def test_the_scenario_finds_the_ports_of_the_running_stack(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no stack is running"):
        read_stack_file(tmp_path)
    data, held = claim_data_dir(tmp_path)
    (data / STACK_FILE).write_text(
        '{"pid": 1, "ports": {"api": 9000, "temporal": 9001, '
        '"ui": 9002, "stripe": 9003, "smtp": 9004}}'
    )
    assert read_stack_file(data) == Ports(temporal=9001, ui=9002, stripe=9003, api=9000, smtp=9004)
    held.close()  # stopped without cleaning up (killed): the file alone does not count
    with pytest.raises(OptionError, match="no stack is running"):
        read_stack_file(data)
