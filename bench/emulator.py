"""The emulator as it fills: the cost of one new customer (customer, card, subscription, and
the look-ups the workflow makes) at a small and at a large account, over HTTP with the SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

import stripe

from bench.common import Figure, load
from core.settings import EMULATOR_API_KEY
from emulator.seed import seed
from tests.helpers import ROOT, free_port, wait_for_http


async def new_customer(sdk: stripe.StripeClient, price: str) -> float:
    """Seconds for what one sign-up costs the emulator."""
    user = f"fill-{uuid.uuid4().hex[:10]}"
    began = time.perf_counter()
    v1 = sdk.v1
    await v1.customers.search_async({"query": f"metadata['user_id']:'{user}'"})
    customer = await v1.customers.create_async(
        {"email": f"{user}@example.com", "metadata": {"user_id": user}}
    )
    await v1.subscriptions.list_async({"customer": customer.id, "status": "all"})
    card = await v1.payment_methods.attach_async("pm_card_visa", {"customer": customer.id})
    sub = await v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": price}], "default_payment_method": card.id}
    )
    await v1.invoices.retrieve_async(str(sub.latest_invoice))
    await v1.invoices.list_async({"subscription": sub.id, "status": "paid"})
    return time.perf_counter() - began


async def measure(sdk: stripe.StripeClient, price: str, sample: int) -> float:
    return median([await new_customer(sdk, price) for _ in range(sample)]) * 1000


async def run(small: int = 100, large: int = 10_000, sample: int = 50) -> list[Figure]:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="bench-emulator-")) / "stripe.json"
    command = [sys.executable, "-m", "emulator", "serve", "--port", str(port)]
    process = subprocess.Popen([*command, "--state-file", str(state)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", process)
        sdk = stripe.StripeClient(
            EMULATOR_API_KEY,
            base_addresses={"api": url},
            http_client=stripe.HTTPXClient(),
        )
        prices = await seed(sdk)
        price = prices["STRIPE_PRICE_STARTER_MONTHLY"]
        filled = 0

        async def fill_to(count: int) -> None:
            nonlocal filled
            sem = asyncio.Semaphore(8)

            async def one() -> None:  # a customer with a subscription, fewer calls
                async with sem:
                    user = f"filler-{uuid.uuid4().hex[:10]}"
                    customer = await sdk.v1.customers.create_async(
                        {"email": f"{user}@example.com", "metadata": {"user_id": user}}
                    )
                    await sdk.v1.subscriptions.create_async(
                        {"customer": customer.id, "items": [{"price": price}]}
                    )

            await asyncio.gather(*(one() for _ in range(count - filled)))
            filled = count

        await fill_to(small)
        at_small = await measure(sdk, price, sample)
        filled += sample
        await fill_to(large)
        at_large = await measure(sdk, price, sample)
        return [
            Figure(
                f"emulator: one new customer at {large:,} vs at {small:,} customers",
                at_large / at_small,
                "x",
                goal=2.0,
                baseline=f"{at_large:.1f} ms vs {at_small:.1f} ms, median of {sample}, {load()}",
            )
        ]
    finally:
        process.terminate()
        process.wait(10)
