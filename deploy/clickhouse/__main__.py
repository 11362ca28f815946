"""`python -m deploy.clickhouse`: the server process the local stack starts."""

from __future__ import annotations

import logging
import os
import sys

from deploy.clickhouse.config import SETTINGS_ENV, settings_from_json
from deploy.settings import load_settings


def main() -> int:
    # The entry point: the one place that reads the environment.
    raw = os.environ.get(SETTINGS_ENV)
    settings = settings_from_json(raw) if raw else load_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deploy.clickhouse.server import serve

    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
