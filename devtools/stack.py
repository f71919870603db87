"""The embedded stack: Temporal dev server (with UI), Stripe emulator, SMTP sink, migrations,
worker and API, as child processes on local ports (`python3 dev.py up`). Standard library only;
the end-to-end tests and the benchmarks start the same stack on free ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The repository root: every child runs from there (`python -m emulator` finds it on sys.path).
ROOT = Path(__file__).resolve().parent.parent
# Search attributes the workflows set (workflows/subscription.py), registered at start.
SEARCH_ATTRIBUTES = {
    "BillingCustomerId": "Keyword",
    "BillingUserId": "Keyword",
    "BillingStatus": "Keyword",
    "BillingPlan": "Keyword",
    "BillingDunningAttempt": "Int",
    "BillingNextActionAt": "Datetime",
    "BillingAccess": "Keyword",
    "BillingLastDeclineCode": "Keyword",
}
WEBHOOK_SECRET = "whsec_salesflow_local_stack"
# A dunning policy in seconds, for a demo: retries 20 s apart (enterprise 30 s), reminders
# minutes ahead.
DEMO_POLICY = {
    "DUNNING_RETRY_DELAYS": "20s,20s",
    "DUNNING_MAX_FAILURES": "3",
    "DUNNING_TRIAL_REMINDER_BEFORE": "1m",
    "DUNNING_PLAN_RETRY_DELAYS": '{"enterprise": "30s,30s"}',
    "DUNNING_RENEWAL_REMINDER_BEFORE": "1m",
    "DUNNING_CARD_EXPIRY_REMINDER_BEFORE": "2m",
}
# In the data folder while the stack runs: its ports (`python3 dev.py scenario` reads them).
STACK_FILE = "stack.json"


@dataclass
class Ports:
    """The defaults are `python3 dev.py up`'s; devtools/options.py chooses the ones it uses."""

    temporal: int = 7233
    ui: int = 8233
    stripe: int = 12111
    api: int = 8000
    smtp: int = 1025
    # The worker's Prometheus metrics (WORKER_METRICS_ADDRESS), beside the API's GET /metrics.
    metrics: int = 9464


@dataclass
class Stack:
    python: Path
    data: Path
    ports: Ports = field(default_factory=Ports)
    demo: bool = False
    quiet: bool = False
    # Another database than the embedded SQLite file (the benchmark runs on PostgreSQL too).
    database_url: str | None = None
    # Replicas, as a deployment runs them on one database and one Temporal server: an API
    # process on each of these ports besides `ports.api` (the emulator delivers every webhook to
    # each API), and a worker besides the first for each of these ports (its metrics' port,
    # `ports.metrics` being the first's). With more than one, they are named api-1, api-2, ...
    # and worker-1, worker-2, ... (else api and worker).
    extra_api_ports: tuple[int, ...] = ()
    extra_worker_metrics_ports: tuple[int, ...] = ()
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Each child's own variables on top of `env` (an API's port, a worker's metrics address).
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def api_ports(self) -> tuple[int, ...]:
        """Every API process's port, `ports.api` first."""
        return (self.ports.api, *self.extra_api_ports)

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def worker_metrics_ports(self) -> tuple[int, ...]:
        """Every worker's metrics port, `ports.metrics` first."""
        return (self.ports.metrics, *self.extra_worker_metrics_ports)

    @property
    def stripe_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.stripe}"

    def start(self) -> None:
        """Start everything and wait until the API is ready; stops what started on failure."""
        self.data.mkdir(parents=True, exist_ok=True)
        bin_dir = self.python.parent
        p = self.ports
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "STRIPE_API_BASE": self.stripe_url,
            "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{p.temporal}",
            "DATABASE_URL": self.database_url
            or f"sqlite+aiosqlite:///{self.data / 'billing.sqlite3'}",
            "SMTP_PORT": str(p.smtp),
            "API_PORT": str(p.api),
            **(DEMO_POLICY if self.demo else {}),
        }
        try:
            temporal = [
                str(bin_dir / "temporal"),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(p.temporal),
                "--ui-port",
                str(p.ui),
                "--db-filename",
                str(self.data / "temporal.sqlite3"),
                "--log-level",
                "error",
            ]
            for name, kind in SEARCH_ATTRIBUTES.items():
                temporal += ["--search-attribute", f"{name}={kind}"]
            self._spawn("temporal", temporal)
            self._spawn(
                "stripe-emulator",
                [
                    str(self.python),
                    "-m",
                    "emulator",
                    "serve",
                    "--port",
                    str(p.stripe),
                    "--state-file",
                    str(self.data / "stripe.json"),
                    *(
                        arg
                        for url in self.api_urls
                        for arg in ("--webhook-url", f"{url}/stripe/webhooks")
                    ),
                    "--webhook-secret",
                    WEBHOOK_SECRET,
                    "--webhook-retry-base",
                    "2",
                ],
            )
            self._spawn(
                "smtp-sink",
                [
                    str(self.python),
                    "-m",
                    "devtools.mailsink",
                    "--port",
                    str(p.smtp),
                    "--folder",
                    str(self.data / "mail"),
                ],
            )
            _wait_http(f"{self.stripe_url}/healthz", 30)
            self._run(["-m", "core.migrate"])
            for line in self._run(["-m", "emulator", "seed"]).splitlines():
                name, _, value = line.partition("=")
                if name.startswith("STRIPE_PRICE_"):
                    self.env[name] = value
            self._wait_temporal(60)
            workers = self.worker_metrics_ports
            for name, port in zip(_names("worker", len(workers)), workers, strict=True):
                self._spawn(
                    name,
                    [str(self.python), "worker.py"],
                    WORKER_METRICS_ADDRESS=f"127.0.0.1:{port}",
                )
            for name, port in zip(_names("api", len(self.api_ports)), self.api_ports, strict=True):
                self._spawn(name, [str(self.python), "-m", "api"], API_PORT=str(port))
            for url in self.api_urls:
                _wait_http(f"{url}/readyz", 60)
            (self.data / STACK_FILE).write_text(
                json.dumps({"pid": os.getpid(), "ports": asdict(self.ports)}) + "\n"
            )
        except BaseException:
            self.stop()
            raise

    def token(self, user: str, admin: bool = False) -> str:
        return self._run(
            ["-m", "api.auth", "--user", user, *(["--admin"] if admin else [])]
        ).strip()

    def stop(self) -> None:
        """SIGTERM every process (newest first), then SIGKILL what is left."""
        (self.data / STACK_FILE).unlink(missing_ok=True)
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def kill(self, name: str) -> None:
        """SIGKILL one child, as a crash would (no clean stop); `respawn` starts it again."""
        for entry in list(self.processes):
            if entry[0] == name:
                entry[1].kill()
                entry[1].wait(10)
                self.processes.remove(entry)

    def respawn(self, name: str) -> None:
        """Start a child again with the command and environment it was first started with."""
        if any(running == name for running, _ in self.processes):
            raise RuntimeError(f"{name} is still running")
        self._spawn(name, self.commands[name], **self.overrides[name])

    def check(self) -> str | None:
        """The name of a process that has exited, if any."""
        for name, process in self.processes:
            if process.poll() is not None:
                return name
        return None

    def _spawn(self, name: str, cmd: list[str], **overrides: str) -> None:
        self.commands[name], self.overrides[name] = cmd, overrides
        log = open(self.data / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child)
        out = log if self.quiet or name in ("temporal", "stripe-emulator") else None
        env = {**self.env, **overrides}
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out or log)
        self.processes.append((name, process))

    def _run(self, args: list[str]) -> str:
        done = subprocess.run(
            [str(self.python), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def _wait_temporal(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = [
            "-c",
            "import asyncio,sys;from temporalio.client import Client;"
            f"asyncio.run(Client.connect('127.0.0.1:{self.ports.temporal}'))",
        ]
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    [str(self.python), *probe], capture_output=True, check=False
                ).returncode
                == 0
            ):
                return
            if self.check():
                break
            time.sleep(0.5)
        raise RuntimeError("the Temporal dev server did not start (see temporal.log)")


def _names(kind: str, count: int) -> list[str]:
    """The processes' names: `kind` alone, or numbered replicas."""
    return [kind] if count == 1 else [f"{kind}-{i}" for i in range(1, count + 1)]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s")


def banner(stack: Stack) -> str:
    admin = stack.token("admin", admin=True)
    alice = stack.token("alice")
    body = json.dumps(
        {
            "plan": "pro",
            "email": "alice@example.com",
            "trial_days": 0,
            "payment_method_id": "pm_card_visa",
        }
    )
    data = _shown(stack.data)
    scenario = "python3 dev.py scenario" + (
        "" if stack.data.resolve() == (ROOT / ".data").resolve() else f" --data-dir {data}"
    )
    return f"""
SalesFlow Billing is running{" (demo dunning policy: retries 20 s apart)" if stack.demo else ""}.

  API            {stack.api_url}  docs: {stack.api_url}/docs
  Metrics        {stack.api_url}/metrics (API)  http://127.0.0.1:{stack.ports.metrics}/metrics (worker)
  Temporal       127.0.0.1:{stack.ports.temporal} (gRPC)  UI: http://127.0.0.1:{stack.ports.ui}
  Stripe         {stack.stripe_url}  (local emulator, state in {data / "stripe.json"})
  Emails         {data / "mail"}/  (local SMTP sink on 127.0.0.1:{stack.ports.smtp})
  Data and logs  {data}/  (*.log; ports in {data / STACK_FILE})
  Scenario       {scenario}{"" if stack.demo else "  (start with --demo for it)"}

Admin token:
  {admin}

Create a subscription for alice:
  curl -s -X POST {stack.api_url}/stripe/subscriptions \\
    -H 'Authorization: Bearer {alice}' -H 'Content-Type: application/json' \\
    -d '{body}'

Press Ctrl-C to stop.
"""


def _shown(path: Path) -> Path:
    """A path relative to the repository root when it is inside it (shorter to read)."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def run_forever(stack: Stack) -> None:
    """`python3 dev.py up`: start, print where things are, stop cleanly on Ctrl-C."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C (SIGINT) and SIGTERM both stop it, even where SIGINT was inherited as ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start()
        sys.stdout.write(banner(stack))
        sys.stdout.flush()
        while not stopping:
            if dead := stack.check():
                sys.stderr.write(f"{dead} exited; stopping (see {stack.data / (dead + '.log')})\n")
                break
            time.sleep(0.5)
    finally:
        # Ctrl-C reached the children too (same process group); a second one must not cut the
        # clean stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stdout.write("stopping...\n")
        stack.stop()
        sys.stdout.write("stopped.\n")
