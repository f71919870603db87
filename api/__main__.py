"""`python -m api` serves the HTTP API with uvicorn on API_HOST:API_PORT."""

from __future__ import annotations

import uvicorn

from api.main import create_app
from core.logging import configure_logging
from core.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
    )


if __name__ == "__main__":
    main()
