"""Lists read from the database, never from Temporal: a customer's payments ledger, and the
subscriptions read model for admins.

Pages as Stripe's lists: `limit` items, `has_more`, and `starting_after` naming the last item of
the page before. The cursor is a keyset, not an offset: rows written meanwhile neither shift a
page nor repeat one, and rows that share a time are told apart by their key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import and_, exists, or_
from sqlmodel import col, select

from api.deps import AdminDep, PrincipalDep, SessionsDep
from api.errors import DATABASE_UNAVAILABLE, NOT_FOUND, reading_database
from api.problems import invalid, problems
from api.routes.subscriptions import owned
from api.schemas import (
    PAYMENT_ID_PATTERN,
    PaymentOut,
    PaymentsPage,
    SubscriptionRecordOut,
    SubscriptionsPage,
    UserId,
    payment_row,
)
from core.db import AsyncSession, Customer, Payment, SubscriptionRecord
from core.payloads import Access, Plan, Status
from workflows.subscription import workflow_id

router = APIRouter(prefix="/stripe/subscriptions")

Limit = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100")]


@router.get(
    "/{user_id}/payments",
    response_model=PaymentsPage,
    tags=["payments"],
    responses=problems(
        401,
        404,
        422,
        503,
        described={
            404: "No billing customer for this user (or not yours)",
            422: "Bad `limit` or `starting_after` (an `id` that names none of this customer's "
            "payments)",
            503: DATABASE_UNAVAILABLE,
        },
    ),
)
async def list_payments(
    user_id: UserId,
    principal: PrincipalDep,
    sessions: SessionsDep,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None,
        Query(
            pattern=PAYMENT_ID_PATTERN,
            description="The `id` of the last payment of the page before: the page after it",
        ),
    ] = None,
) -> PaymentsPage:
    """The customer's payments ledger, newest first: every payment attempt and refund.

    Read from the database (the ledger the customer's workflow writes). A customer with no
    payment yet has an empty list; a user who never became a billing customer, 404.

    Pages: up to `limit` payments and `has_more`; for the next page pass the last payment's
    `id` (an opaque string) as `starting_after`. Payments of the same time come in a fixed
    order, and payments written meanwhile do not shift the pages: none is skipped or repeated.
    """
    owned(principal, user_id)
    occurred, key = col(Payment.occurred_at), col(Payment.id)
    query = select(Payment).where(Payment.user_id == user_id)
    async with reading_database(), sessions() as session:
        if starting_after is not None:
            after = await _payment(session, user_id, payment_row(starting_after))
            # Newest first: older rows, and among rows of the same time, lower keys.
            query = query.where(
                or_(
                    occurred < after.occurred_at,
                    and_(occurred == after.occurred_at, key < after.id),
                )
            )
        page = list(
            (await session.exec(query.order_by(occurred.desc(), key.desc()).limit(limit + 1))).all()
        )
        if not page and starting_after is None and not await _customer_known(session, user_id):
            raise HTTPException(404, NOT_FOUND)
    return PaymentsPage(
        data=[PaymentOut.of(row) for row in page[:limit]], has_more=len(page) > limit
    )


# The largest key either database gives a ledger row (PostgreSQL's `integer`): a larger one
# names no row, and is never sent to the database.
LARGEST_KEY = 2**31 - 1


async def _payment(session: AsyncSession, user_id: str, row_id: int) -> Payment:
    """The customer's ledger row `row_id`; 422 if it is not one (another customer's is not)."""
    row = None
    if row_id <= LARGEST_KEY:
        row = (
            await session.exec(
                select(Payment).where(Payment.id == row_id, Payment.user_id == user_id)
            )
        ).first()
    if row is None:
        raise invalid(("query", "starting_after"), "names none of this customer's payments")
    return row


async def _customer_known(session: AsyncSession, user_id: str) -> bool:
    """Whether the user ever became a billing customer (a Stripe customer or a subscription)."""
    known = await session.scalar(
        select(
            or_(
                exists().where(col(Customer.user_id) == user_id),
                exists().where(col(SubscriptionRecord.user_id) == user_id),
            )
        )
    )
    return bool(known)


@router.get(
    "",
    response_model=SubscriptionsPage,
    tags=["subscriptions"],
    responses=problems(
        401,
        403,
        422,
        503,
        described={
            422: "Bad filter, `limit` or `starting_after` (a `stripe_subscription_id` that "
            "names no record)",
            503: DATABASE_UNAVAILABLE,
        },
    ),
)
async def list_subscriptions(
    _: AdminDep,
    sessions: SessionsDep,
    status: Annotated[Status | None, Query(description="Only records with this status")] = None,
    access: Annotated[Access | None, Query(description="Only records granting this access")] = None,
    plan: Annotated[Plan | None, Query(description="Only records on this plan")] = None,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="The `stripe_subscription_id` of the last record of the page before: "
            "the page after it",
        ),
    ] = None,
) -> SubscriptionsPage:
    """Admins: every subscription record of the read model, newest first, one per subscription
    (a user who subscribed again after a cancellation is listed once per subscription).

    Read from the database without asking Temporal: see `SubscriptionRecordOut` for the fields
    only the customer's view has. Pages: up to `limit` records and `has_more`; for the next
    page pass the last record's `stripe_subscription_id` as `starting_after`.
    """
    record = SubscriptionRecord
    key = col(record.id)
    filters: list[Any] = []
    if status is not None:
        filters.append(col(record.status) == status.value)
    if access is not None:
        filters.append(col(record.access) == access.value)
    if plan is not None:
        filters.append(col(record.plan) == plan.value)
    async with reading_database(), sessions() as session:
        if starting_after is not None:
            after = await session.scalar(
                select(key).where(col(record.stripe_subscription_id) == starting_after)
            )
            if after is None:
                raise invalid(("query", "starting_after"), "names no subscription record")
            filters.append(key < after)
        query = (
            select(record, Customer.stripe_customer_id)
            .outerjoin(Customer, col(Customer.user_id) == col(record.user_id))
            .where(*filters)
            .order_by(key.desc())
            .limit(limit + 1)
        )
        page = list((await session.exec(query)).all())
    return SubscriptionsPage(
        data=[
            SubscriptionRecordOut.of(
                row, stripe_customer_id=customer, workflow_id=workflow_id(row.user_id)
            )
            for row, customer in page[:limit]
        ],
        has_more=len(page) > limit,
    )
