"""`python -m api` serves the HTTP API with uvicorn on API_HOST:API_PORT."""

from __future__ import annotations

import uvicorn

from api.main import create_app
from core.logging import configure_logging
from core.settings import settings_or_exit


def main() -> None:
    settings = settings_or_exit()
    configure_logging(settings)
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
    )


if __name__ == "__main__":
    main()
