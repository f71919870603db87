"""Bearer tokens: JWTs signed HS256 with `sub` (the user id), `exp`, optional `role` and `email`."""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass

import jwt

from api.schemas import valid_email
from core.payloads import USER_ID_PATTERN
from core.settings import Settings, get_settings

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool = False
    email: str | None = None

    def may_act_for(self, user_id: str) -> bool:
        return self.admin or self.user_id == user_id


class InvalidToken(Exception):
    pass


def verify(token: str, settings: Settings) -> Principal:
    """The principal of a valid token; `InvalidToken` for anything else."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError as err:
        raise InvalidToken(str(err)) from err
    subject = claims["sub"]
    if not isinstance(subject, str) or not re.fullmatch(USER_ID_PATTERN, subject):
        raise InvalidToken("sub must be a user id")
    return Principal(
        user_id=subject, admin=claims.get("role") == "admin", email=_email(claims.get("email"))
    )


def _email(claim: object) -> str | None:
    # An unusable email claim is as good as none: the body must then give the address.
    if not isinstance(claim, str):
        return None
    try:
        return valid_email(claim)
    except ValueError:
        return None


def mint(
    user_id: str,
    settings: Settings,
    *,
    admin: bool = False,
    ttl_seconds: int = 3600,
    email: str | None = None,
) -> str:
    """A token for `user_id` (for local use and tests)."""
    claims: dict[str, object] = {"sub": user_id, "exp": int(time.time()) + ttl_seconds}
    if admin:
        claims["role"] = "admin"
    if email:
        claims["email"] = email
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)


def main(argv: list[str] | None = None) -> None:
    """`python -m api.auth --user u1 [--admin] [--email a@b.co] [--ttl 3600]` prints a token."""
    parser = argparse.ArgumentParser(prog="python -m api.auth", description="mint a bearer token")
    parser.add_argument("--user", required=True)
    parser.add_argument("--admin", action="store_true")
    parser.add_argument("--email", help="the user's email address, carried as a claim")
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    if not re.fullmatch(USER_ID_PATTERN, args.user):
        parser.error("--user must be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -")
    token = mint(
        args.user, get_settings(), admin=args.admin, ttl_seconds=args.ttl, email=args.email
    )
    sys.stdout.write(token + "\n")


if __name__ == "__main__":
    main()
