"""Every error answer is an RFC 9457 problem (`application/problem+json`), and documented so.

The handlers cover FastAPI's and Starlette's HTTP exceptions (routes' own, unknown paths 404,
wrong methods 405, a body that cannot be read 400), validation errors (422, with `errors`) and
anything unexpected (500). `document` rewrites the OpenAPI document to match.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api.schemas import FieldError, Problem

PROBLEM_JSON = "application/problem+json"

log = structlog.get_logger("api")

# What each status means on these routes; a route may say more precisely.
DESCRIPTIONS = {
    400: "The body cannot be read (e.g. it is not UTF-8)",
    401: "Missing, invalid or expired bearer token",
    402: "Card declined",
    403: "Admins only",
    404: "No subscription for this user (or not yours)",
    409: "The subscription's state forbids this",
    422: "Invalid request (`errors` says where), or a card number in it",
    502: "The billing engine failed",
    503: "The billing engine is unavailable; retry",
}


def problem_body(status: int, detail: str, /, **members: Any) -> dict[str, Any]:
    """The JSON of a problem; `members` adds `errors`, `code` or extension members."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = Problem(title=title, status=status, detail=detail).model_dump(exclude_none=True)
    body.update({key: value for key, value in members.items() if value is not None})
    return body


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, /, **members: Any
) -> JSONResponse:
    """A problem answer."""
    return JSONResponse(
        problem_body(status, detail, **members),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def invalid(loc: Sequence[str | int], msg: str) -> RequestValidationError:
    """A validation error found by a route itself, answered like the ones FastAPI finds."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "value_error"}])


def problems(
    *statuses: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status a Problem, `described` overriding the wording."""
    wording = {**DESCRIPTIONS, **(described or {})}
    return {status: {"model": Problem, "description": wording[status]} for status in statuses}


def install(app: FastAPI, *, exempt: tuple[str, ...] = ()) -> None:
    """Answer every error of `app` as a problem and document it (`exempt`: no card check)."""
    app.add_exception_handler(HTTPException, _http_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    document(app, exempt=exempt)


async def _http_problem(request: Request, exc: HTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path; a path served
        # by several routes (GET, PATCH, DELETE) must list them all.
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem(exc.status_code, str(exc.detail), headers)


async def _invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
    # Field, location and reason only: the offending input is never echoed back.
    errors = [
        FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg", ""))) for e in err.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
    return problem(
        422,
        detail or "the request is not valid",
        errors=[e.model_dump() for e in errors],
    )


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.error("unhandled error", method=request.method, error_type=type(err).__name__)
    return problem(500, "the service failed; it has been logged")


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path.

    Asked of the routes themselves, one method at a time: FastAPI nests included routers, so
    the app's route list does not show every route's methods.
    """
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def document(app: FastAPI, *, exempt: tuple[str, ...] = ()) -> None:
    """Make `/openapi.json` tell the truth about errors.

    Every 4xx/5xx answer is a Problem in `application/problem+json` (FastAPI's default 422
    `HTTPValidationError` is replaced); every operation with a body may answer 400 (a body
    that cannot be read) and 422; every operation outside `exempt` may answer 422 (the card
    number check runs on every path, query and body).
    """
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = default()
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, operations in spec.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": DESCRIPTIONS[400]})
                if not path.startswith(exempt) or "requestBody" in operation:
                    responses.setdefault("422", {"description": DESCRIPTIONS[422]})
                if responses.get("422", {}).get("description") == "Validation Error":
                    responses["422"]["description"] = DESCRIPTIONS[422]
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = {PROBLEM_JSON: {"schema": ref}}
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas.update(_problem_schemas())
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_schemas() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs
