"""`python -m emulator serve` runs the local Stripe; `python -m emulator seed` fills the catalog."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn

from activities.stripe import stripe_client
from core.logging import configure_logging
from core.settings import get_settings
from emulator.store import DEFAULT_UPCOMING_INVOICE_DAYS


def build(args: argparse.Namespace) -> Any:
    from emulator.account import Account
    from emulator.app import Emulator
    from emulator.webhooks import Dispatcher

    account = Account(
        Path(args.state_file) if args.state_file else None,
        public_url=args.public_url or _public_url(args.host, args.port),
        upcoming_invoice_days=args.upcoming_invoice_days,
    )
    dispatcher = Dispatcher(
        account, retry_base_seconds=args.webhook_retry_base, max_attempts=args.webhook_attempts
    )
    emulator = Emulator(account, dispatcher, api_key=args.api_key)
    for url in args.webhook_url or ():
        existing = [
            o
            for o in account.objects.values()
            if o["object"] == "webhook_endpoint" and o["url"] == url and not o.get("deleted")
        ]
        if not existing:
            account.create_webhook_endpoint(
                {"url": url, "enabled_events": ["*"]}, secret=args.webhook_secret
            )
    return emulator


def _public_url(host: str, port: int) -> str:
    """Where clients reach a server bound to host:port (loopback for a wildcard address)."""
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    return f"http://{'127.0.0.1' if wildcard else host}:{port}"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stripe-emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the emulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=12111)
    serve.add_argument("--api-key", default=None, help="accept only this sk_test_ key")
    serve.add_argument("--state-file", default=None, help="keep state in this JSON file")
    serve.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        help="deliver every event to this URL (repeat it for more endpoints)",
    )
    serve.add_argument("--webhook-secret", default=None, help="signing secret for --webhook-url")
    serve.add_argument("--webhook-retry-base", type=float, default=1.0, help="first retry delay, s")
    serve.add_argument("--webhook-attempts", type=int, default=8)
    serve.add_argument(
        "--public-url",
        default=None,
        help="base of the URLs the emulator hands out, e.g. hosted invoice pages "
        "(default: http://<host>:<port>)",
    )
    serve.add_argument(
        "--upcoming-invoice-days",
        type=_positive,
        default=DEFAULT_UPCOMING_INVOICE_DAYS,
        help="days before a renewal that invoice.upcoming is sent "
        f"(default {DEFAULT_UPCOMING_INVOICE_DAYS})",
    )
    sub.add_parser("seed", help="create the SalesFlow catalog and print its settings")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = arguments().parse_args(argv)

    settings = get_settings()
    configure_logging(settings)
    if args.command == "serve":
        uvicorn.run(build(args).app, host=args.host, port=args.port, log_level="warning")
    else:
        from emulator.seed import seed

        async def seeded() -> dict[str, str]:
            async with stripe_client(settings) as client:
                return await seed(client)

        env = asyncio.run(seeded())
        for name, value in env.items():
            sys.stdout.write(f"{name}={value}\n")
        logging.getLogger("emulator").info("catalog ready at %s", settings.stripe_api_base)


if __name__ == "__main__":
    main()
