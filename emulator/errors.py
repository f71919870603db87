"""Stripe's error body, as the API returns it."""

from __future__ import annotations

from typing import Any


class StripeApiError(Exception):
    """An error answered with Stripe's status code and `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "type": type}
        for key, value in (("code", code), ("decline_code", decline_code), ("param", param)):
            if value is not None:
                self.body[key] = value
        self.body.update(extra or {})

    def response(self, request_id: str) -> dict[str, Any]:
        body = dict(self.body)
        if "code" in body:
            body["doc_url"] = doc_url(body["code"])
        body["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        return {"error": body}


def doc_url(code: str) -> str:
    """The page an error's `doc_url` names for its `code`."""
    return f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"


def card_error(
    message: str,
    code: str,
    decline_code: str | None = None,
    param: str | None = None,
    extra: dict[str, Any] | None = None,
) -> StripeApiError:
    """A 402 `card_error`, as a decline answers."""
    return StripeApiError(
        402,
        message,
        type="card_error",
        code=code,
        decline_code=decline_code,
        param=param,
        extra=extra,
    )


def missing(resource: str, ident: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404, f"No such {resource}: '{ident}'", code="resource_missing", param=param
    )


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeApiError:
    return StripeApiError(400, message, param=param, code=code)
