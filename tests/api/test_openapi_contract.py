"""schemathesis against `/openapi.json`: every answer the app gives is one the document promises.

The app is the `api` fixture's (a real time-skipping Temporal server, a worker with fake Stripe
activities, SQLite). schemathesis's runner (the engine behind its CLI: examples, coverage,
fuzzing and stateful phases, every default check) runs in a thread of its own; each request it
makes is served on the test's event loop, where the worker runs.
"""

from __future__ import annotations

import asyncio

import schemathesis
from schemathesis.engine import Status, events, from_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import mint
from tests.api.helpers import Api

CPYTHON_AST_RACE = "AST constructor recursion depth mismatch"


class OnLoop:
    """An ASGI app that serves each request with `app` on `loop`.

    schemathesis calls ASGI apps from its own thread and event loop; the app's Temporal client,
    database engine and the worker live on the test's loop. The lifespan is the fixture's.
    """

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = [await receive()]
        while request[-1].get("more_body"):
            request.append(await receive())
        served = asyncio.run_coroutine_threadsafe(self._serve(scope, request), self.loop)
        for message in await asyncio.wrap_future(served):
            await send(message)

    async def _serve(self, scope: Scope, request: list[Message]) -> list[Message]:
        sent: list[Message] = []
        done = asyncio.Event()

        async def receive() -> Message:
            if request:
                return request.pop(0)
            await done.wait()  # as a client does: no disconnect before the answer
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            if not sent:  # the 500 was answered, then re-raised: the answer is the finding
                raise
        return sent


def run_schemathesis(app: OnLoop, token: str) -> list[str]:
    """Run schemathesis's engine against `app`; its failures and errors, described."""
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"max-examples": 20, "database": "none"},
            "seed": 1,  # the same requests on every run
            "operations": [
                # The time window ("within the past 35 days") is relative to now: no schema
                # can say it, so a schema-valid timestamp may be 422.
                {
                    "include-name": "POST /stripe/subscriptions/{user_id}/usage",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", 401, 403, 404, 422]
                        }
                    },
                },
                # "end not before start" ties two parameters: no schema can say it, so a
                # schema-valid range may be 422.
                {
                    "include-path": "/analytics/revenue",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 403, 422]}
                    },
                },
                # A cursor must name a row that exists (a payment of that customer, a
                # subscription record): no schema can say which, so a schema-valid
                # `starting_after` may be 422.
                {
                    "include-name": "GET /stripe/subscriptions/{user_id}/payments",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", 401, 403, 404, 422]
                        }
                    },
                },
                {
                    "include-name": "GET /stripe/subscriptions",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 403, 422]}
                    },
                },
                # Every request without Stripe's signature is 400, as the document says:
                # fuzzing the webhook tells nothing. tests/api/test_webhooks.py covers it.
                {"include-name": "POST /stripe/webhooks", "enabled": False},
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    found: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status == Status.FAILURE:
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        case = event.recorder.cases[case_id].value
                        found.append(f"{event.label}: {check.name} {case.method} {case.path}")
                        if check.failure_info:
                            found.append(str(check.failure_info.failure))
                            found.append(check.failure_info.code_sample)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            found.append(repr(event))
    return found


async def test_every_answer_is_one_the_document_promises(api: Api) -> None:
    app = OnLoop(api.app, asyncio.get_running_loop())
    # An admin reaches every route (analytics included) and any user's subscription; the
    # email claim makes `email` optional, as the document says it is for such a token.
    token = mint("ops", api.settings, admin=True, email="ops@billing.test")
    found = await asyncio.to_thread(run_schemathesis, app, token)
    if found and all(CPYTHON_AST_RACE in line for line in found):
        # A CPython 3.11 interpreter bug: building ASTs in two threads at once can raise this
        # SystemError inside schemathesis, which is not an answer of ours (seen once in CI, in
        # the stateful phase). Run once more; a second failure of any kind fails the test.
        found = await asyncio.to_thread(run_schemathesis, app, token)
    assert not found, "\n".join(found)
