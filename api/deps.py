"""Dependencies: the app's one Temporal client, settings, database sessions, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from temporalio.client import Client

from api.auth import InvalidToken, Principal, verify
from core.db import AsyncSession
from core.settings import Settings


# `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop each.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _client(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


async def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return factory


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[AsyncEngine, Depends(_engine)]
TemporalDep = Annotated[Client, Depends(_client)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]

_bearer = HTTPBearer(auto_error=False, description="JWT (HS256) with `sub`, `exp`, optional `role`")


def _principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return verify(credentials.credentials, settings)
    except InvalidToken:
        raise HTTPException(
            401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"}
        ) from None


PrincipalDep = Annotated[Principal, Depends(_principal)]


def _admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, "admins only")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]
