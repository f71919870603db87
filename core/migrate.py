"""`python -m core.migrate` brings DATABASE_URL's schema to the newest migration (alembic)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from core.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    """Apply every migration not yet applied (safe to run again)."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_async(database_url: str) -> None:
    """`upgrade` from inside a running event loop (alembic's env runs its own loop)."""
    await asyncio.to_thread(upgrade, database_url)


def main() -> None:
    upgrade(get_settings().database_url)


if __name__ == "__main__":
    main()
