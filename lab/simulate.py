"""`python3 dev.py simulate`: what would a dunning policy recover? Run the real workflow and see.

For each policy file, N customers (monthly plans, 60% starter, 30% pro, 10% enterprise) run
the real `SubscriptionWorkflow` for M months of 30 days on Temporal's time-skipping server
against the simulated world of `lab/world.py`, whose payment outcomes follow a decline mix
(`lab/default_mix.json`, or `--mix`). The harness moves time a day at a time and carries out
what customers decided to do after an email (add a card through the API's update, or
authenticate on Stripe's page). The same seed gives the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from core.payloads import Interval, Plan, SetPaymentMethod, StripeEventRef
from core.policy import DunningPolicy
from core.state import StartSubscription
from core.temporal import ensure_search_attributes
from lab.mix import DEFAULT_MIX, DeclineMix
from lab.world import DUNNING_EMAILS, PERIOD, Action, World
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
# Declines are the simulation's daily bread: the SDK's warnings about each failed activity (and
# its core's about the test server's version) would bury the progress bar.
QUIET = Runtime(
    telemetry=TelemetryConfig(
        logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    )
)
POLICIES = Path(__file__).resolve().parent / "policies"
DAY = timedelta(days=1)
PLANS = [(Plan.STARTER, 0.6), (Plan.PRO, 0.3), (Plan.ENTERPRISE, 0.1)]
# Customers started (and customer actions carried out) at a time.
BATCH = 200


@dataclass
class CodeFigures:
    failed: int = 0
    recovered: int = 0

    @property
    def recovery_rate(self) -> float:
        return self.recovered / self.failed if self.failed else 0.0


@dataclass
class Figures:
    """One policy's outcome over the population."""

    policy: str
    customers: int
    months: int
    failed_invoices: int
    recovered: int
    lost: int
    # Still in dunning when the simulation ended (counted in neither).
    pending: int
    recovery_rate: float
    involuntary_churn_rate: float  # per month: canceled for non-payment over live at its start
    revenue_recovered_minor: int
    revenue_lost_minor: int
    emails_per_recovered_invoice: float
    days_in_dunning_median: float
    days_in_dunning_p90: float
    restricted_customer_days: float
    by_code: dict[str, CodeFigures] = field(default_factory=dict)
    # Share of failed invoices recovered by day d since their first failure (d = index).
    recovered_by_day: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class FailedInvoice:
    code: str
    amount: int
    # recovered, lost (the subscription was canceled) or pending (still in dunning at the end)
    outcome: str
    # Days from the first failure to the payment or the cancellation.
    days: float | None


@dataclass
class Outcome:
    """One shard's results, times in days since it started: what the figures are made of."""

    failed: list[FailedInvoice] = field(default_factory=list)
    # Per customer: the day it was canceled (None: still live) and whether for non-payment.
    cancellations: list[tuple[float | None, bool]] = field(default_factory=list)
    restricted_days: float = 0.0
    dunning_emails: int = 0


async def simulate(
    name: str,
    policy: DunningPolicy,
    mix: DeclineMix,
    customers: int,
    months: int,
    seed: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
    shards: int = 1,
) -> Figures:
    """Run one policy over the population, in `shards` processes (each with its own
    time-skipping server: customers are independent); `progress(days done, days)`."""
    began = time.monotonic()
    if shards <= 1:
        outcomes = [await run_shard(policy, mix, range(customers), months, seed, progress)]
    else:
        outcomes = await _in_processes(policy, mix, customers, months, seed, progress, shards)
    figures = _figures(name, outcomes, customers, months)
    figures.seconds = time.monotonic() - began
    return figures


async def run_shard(
    policy: DunningPolicy,
    mix: DeclineMix,
    numbers: range,
    months: int,
    seed: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Outcome:
    """Customers `numbers` on one time-skipping server."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
        runtime=QUIET,
    )
    try:
        await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
        world = World(mix, seed, env.get_current_time, expected=len(numbers))
        queue = "lab"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[SubscriptionWorkflow],
            # The same workflow code, without the sandbox's guard around each activation (the
            # worker keeps it; CI replays every history in it): 1.7 times faster here, and the
            # figures are the same to the last digit.
            workflow_runner=UnsandboxedWorkflowRunner(),
            activities=world.activities(),
            max_cached_workflows=max(len(numbers), 100),
            max_concurrent_workflow_tasks=200,
            max_concurrent_local_activities=200,
        ):
            t0 = await env.get_current_time()
            await _start(env, world, policy, numbers, queue)
            days = months * PERIOD.days
            for day in range(days):
                await env.sleep(DAY)
                await _carry_out(env, world, await env.get_current_time())
                progress(day + 1, days)
            end = await env.get_current_time()
    finally:
        await env.shutdown()
    return _outcome(world, t0, end)


def _shard_main(
    policy: DunningPolicy,
    mix: DeclineMix,
    numbers: range,
    months: int,
    seed: int,
    days_done: MutableMapping[int, int],
    shard: int,
) -> Outcome:
    """A shard in its own process (`days_done[shard]` tells the parent how far it is)."""
    logging.getLogger("temporalio").setLevel(logging.ERROR)

    def progress(done: int, total: int) -> None:
        days_done[shard] = done

    return asyncio.run(run_shard(policy, mix, numbers, months, seed, progress))


async def _in_processes(
    policy: DunningPolicy,
    mix: DeclineMix,
    customers: int,
    months: int,
    seed: int,
    progress: Callable[[int, int], None],
    shards: int,
) -> list[Outcome]:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(shards, mp_context=context) as pool:
        days_done = manager.dict({k: 0 for k in range(shards)})
        loop = asyncio.get_running_loop()
        running = [
            loop.run_in_executor(
                pool,
                _shard_main,
                policy,
                mix,
                range(k, customers, shards),
                months,
                seed,
                days_done,
                k,
            )
            for k in range(shards)
        ]
        days = months * PERIOD.days
        while not all(f.done() for f in running):
            await asyncio.wait(running, timeout=0.5)
            progress(min(days_done.values()), days)
        return [f.result() for f in running]


async def _start(
    env: WorkflowEnvironment, world: World, policy: DunningPolicy, numbers: range, queue: str
) -> None:
    async def start(number: int) -> None:
        user = f"c{number:06d}"
        plan = world.draw(user, "plan").choices([p for p, _ in PLANS], [w for _, w in PLANS])[0]
        await env.client.start_workflow(
            SubscriptionWorkflow.run,
            StartSubscription(
                user_id=user,
                email=f"{user}@example.com",
                plan=plan,
                interval=Interval.MONTHLY,
                trial_days=0,
                payment_method_id="pm_card_visa",
                policy=policy,
            ),
            id=workflow_id(user),
            task_queue=queue,
        )

    for first in range(0, len(numbers), BATCH):
        await asyncio.gather(*(start(n) for n in numbers[first : first + BATCH]))
    await world.all_created.wait()  # every subscription created before time moves


async def _carry_out(env: WorkflowEnvironment, world: World, now: datetime) -> None:
    """What customers decided to do after an email, once its time has come."""
    due = [a for a in world.actions if a.at <= now]
    world.actions = [a for a in world.actions if a.at > now]

    async def act(action: Action, number: int) -> None:
        handle = env.client.get_workflow_handle_for(
            SubscriptionWorkflow.run, workflow_id(action.user_id)
        )
        try:
            if action.kind == "new_card":
                await handle.execute_update(
                    SubscriptionWorkflow.set_payment_method,
                    SetPaymentMethod(payment_method_id=f"pm_new_{action.invoice_id}_{number}"),
                )
            elif world.authenticate(action):
                await handle.signal(
                    SubscriptionWorkflow.stripe_event,
                    StripeEventRef(
                        id=f"evt_auth_{action.invoice_id}",
                        type="invoice.paid",
                        created=now,
                        object_id=action.invoice_id,
                    ),
                )
        except (WorkflowUpdateFailedError, RPCError):
            pass  # the customer acted too late: the subscription has ended

    for first in range(0, len(due), BATCH):
        batch = due[first : first + BATCH]
        await asyncio.gather(*(act(a, first + i) for i, a in enumerate(batch)))


def _outcome(world: World, t0: datetime, end: datetime) -> Outcome:
    outcome = Outcome()
    for inv in world.invoices.values():
        if not inv.code or not inv.first_failed_at:
            continue
        customer = world.customers[inv.user_id]
        if inv.status == "paid" and inv.paid_at:
            failed = FailedInvoice(
                inv.code, inv.amount, "recovered", _days(inv.paid_at - inv.first_failed_at)
            )
        elif customer.canceled_at:
            failed = FailedInvoice(
                inv.code, inv.amount, "lost", _days(customer.canceled_at - inv.first_failed_at)
            )
        else:
            failed = FailedInvoice(inv.code, inv.amount, "pending", None)
        outcome.failed.append(failed)
    for customer in world.customers.values():
        gone = _days(customer.canceled_at - t0) if customer.canceled_at else None
        outcome.cancellations.append((gone, customer.involuntary))
    for history in world.access.values():
        for (at, access), (until, _) in zip(history, [*history[1:], (end, "")], strict=True):
            if access == "restricted":
                outcome.restricted_days += _days(until - at)
    outcome.dunning_emails = sum(n for k, n in world.emails.items() if k in DUNNING_EMAILS)
    return outcome


def _figures(name: str, outcomes: list[Outcome], customers: int, months: int) -> Figures:
    failed = [f for o in outcomes for f in o.failed]
    by_code: dict[str, CodeFigures] = {}
    for f in failed:
        code = by_code.setdefault(f.code, CodeFigures())
        code.failed += 1
        code.recovered += f.outcome == "recovered"
    recovered = [f for f in failed if f.outcome == "recovered"]
    lost = [f for f in failed if f.outcome == "lost"]
    durations = [f.days for f in failed if f.days is not None]
    cancellations = [c for o in outcomes for c in o.cancellations]
    churn = []
    for month in range(months):
        start, stop = month * PERIOD.days, (month + 1) * PERIOD.days
        live = [(day, why) for day, why in cancellations if day is None or day >= start]
        gone = [1 for day, why in live if why and day is not None and day < stop]
        churn.append(len(gone) / len(live) if live else 0.0)
    horizon = int(max(durations, default=0)) + 1
    curve = [
        sum(1 for f in recovered if f.days is not None and f.days <= day) / len(failed)
        if failed
        else 0.0
        for day in range(horizon + 1)
    ]
    dunning_emails = sum(o.dunning_emails for o in outcomes)
    return Figures(
        policy=name,
        customers=customers,
        months=months,
        failed_invoices=len(failed),
        recovered=len(recovered),
        lost=len(lost),
        pending=len(failed) - len(recovered) - len(lost),
        recovery_rate=len(recovered) / (len(recovered) + len(lost)) if recovered or lost else 0.0,
        involuntary_churn_rate=statistics.fmean(churn) if churn else 0.0,
        revenue_recovered_minor=sum(f.amount for f in recovered),
        revenue_lost_minor=sum(f.amount for f in lost),
        emails_per_recovered_invoice=dunning_emails / len(recovered) if recovered else 0.0,
        days_in_dunning_median=statistics.median(durations) if durations else 0.0,
        days_in_dunning_p90=_percentile(durations, 0.9),
        restricted_customer_days=round(sum(o.restricted_days for o in outcomes), 4),
        by_code=dict(sorted(by_code.items())),
        recovered_by_day=curve,
    )


def _days(delta: timedelta) -> float:
    """In days, to the minute: the time-skipping server's clock moves on by a few real
    milliseconds while work runs, which must not make two runs of one seed differ."""
    return round(delta / timedelta(minutes=1)) / (24 * 60)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the command ---------------------------------------------------------------------------------


def table(results: list[Figures]) -> str:
    """The figures side by side, one column per policy (plain text)."""
    rows: list[tuple[str, list[str]]] = [
        ("failed invoices", [str(r.failed_invoices) for r in results]),
        (
            "recovered / lost / pending",
            [f"{r.recovered} / {r.lost} / {r.pending}" for r in results],
        ),
        ("recovery rate", [f"{r.recovery_rate:.1%}" for r in results]),
        ("involuntary churn / month", [f"{r.involuntary_churn_rate:.2%}" for r in results]),
        ("revenue recovered", [_money(r.revenue_recovered_minor) for r in results]),
        ("revenue lost", [_money(r.revenue_lost_minor) for r in results]),
        (
            "emails per recovered invoice",
            [f"{r.emails_per_recovered_invoice:.2f}" for r in results],
        ),
        (
            "days in dunning (median, p90)",
            [f"{r.days_in_dunning_median:.1f}, {r.days_in_dunning_p90:.1f}" for r in results],
        ),
        ("restricted customer-days", [f"{r.restricted_customer_days:,.0f}" for r in results]),
    ]
    codes = sorted({code for r in results for code in r.by_code})
    for code in codes:
        rows.append(
            (
                f"  {code}",
                [
                    f"{r.by_code[code].recovered}/{r.by_code[code].failed} "
                    f"({r.by_code[code].recovery_rate:.0%})"
                    if code in r.by_code
                    else "-"
                    for r in results
                ],
            )
        )
    rows.append(("seconds", [f"{r.seconds:.0f}" for r in results]))
    head = ["", *[r.policy for r in results]]
    widths = [
        max(len(line[i]) for line in [head, *[[k, *v] for k, v in rows]]) for i in range(len(head))
    ]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(head, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    for label, values in rows:
        cells = [label, *values]
        lines.append(" | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def _money(minor: int) -> str:
    return f"{minor / 100:,.2f} USD"


def chart(results: list[Figures], path: Path) -> None:
    """Share of failed invoices recovered by day since the first failure, a line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    for r in results:
        axes.step(range(len(r.recovered_by_day)), r.recovered_by_day, where="post", label=r.policy)
    axes.set_xlabel("days since the first failed payment")
    axes.set_ylabel("share of failed invoices recovered")
    axes.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("Recovery by day, per dunning policy")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev.py simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mix", type=Path, default=DEFAULT_MIX, help="a decline mix (JSON)")
    parser.add_argument(
        "--policy",
        type=Path,
        action="append",
        help="a policy file (JSON, as the workflow takes it); several to compare "
        "(default: lab/policies/default.json, short.json and long.json)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=os.cpu_count() or 1,
        help="processes, each with its own time-skipping server (default: one per core)",
    )
    parser.add_argument("--chart", type=Path, default=Path("simulation.png"))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    mix = DeclineMix.load(args.mix)
    paths = args.policy or [POLICIES / f"{n}.json" for n in ("default", "short", "long")]
    policies = [(p.stem, DunningPolicy.model_validate_json(p.read_text())) for p in paths]
    results = asyncio.run(
        _run_all(policies, mix, args.customers, args.months, args.seed, args.shards)
    )
    print(table(results))
    chart(results, args.chart)
    print(f"chart: {args.chart}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


async def _run_all(
    policies: list[tuple[str, DunningPolicy]],
    mix: DeclineMix,
    customers: int,
    months: int,
    seed: int,
    shards: int,
) -> list[Figures]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeElapsedColumn(),
    ) as bar:
        for name, policy in policies:
            task = bar.add_task(f"{name}: {customers:,} customers", total=months * PERIOD.days)

            def progress(done: int, total: int, task: object = task) -> None:
                bar.update(task, completed=done)  # type: ignore[arg-type]

            results.append(
                await simulate(name, policy, mix, customers, months, seed, progress, shards)
            )
    return results


if __name__ == "__main__":
    sys.exit(main())
