"""`python3 dev.py bench [names...]`: the budgets of DESIGN.md, each against its baseline."""

from __future__ import annotations

import asyncio
import os
import sys

from bench import create, emulator, memory, webhooks, year
from bench.common import Figure, load

POSTGRES = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


async def main(names: list[str]) -> int:
    runs = {
        "webhooks": lambda: webhooks.run("sqlite"),
        "webhooks-postgres": lambda: webhooks.run(POSTGRES),
        "memory": lambda: memory.run(),
        "create": lambda: create.run(),
        "year": lambda: year.run(),
        "emulator": lambda: emulator.run(),
    }
    figures: list[Figure] = []
    for name in names or list(runs):
        print(f"# {name} ({load()})", flush=True)
        for figure in await runs[name]():
            print(figure.line(), flush=True)
            figures.append(figure)
    missed = [f for f in figures if not f.met]
    print(f"{len(figures) - len(missed)} of {len(figures)} goals met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
