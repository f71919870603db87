"""`python -m devtools.mailsink`: a local SMTP server that keeps each email as a .eml file (dev)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

log = logging.getLogger("mailsink")


class Folder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        count = len(list(self.folder.glob("*.eml")))
        (self.folder / f"{count + 1:05d}.eml").write_bytes(envelope.content)
        message = message_from_bytes(envelope.content)
        log.warning("mail to %s: %s", message["To"], message["Subject"])
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--folder", default=".data/mail")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s")
    controller = Controller(Folder(Path(args.folder)), hostname="127.0.0.1", port=args.port)
    controller.start()
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
