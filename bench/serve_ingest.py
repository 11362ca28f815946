"""Run the ingest service with settings handed over as JSON (used by bench_ingest)."""

from __future__ import annotations

import os

import uvicorn

from deploy.settings import SETTINGS_ENV, settings_from_json
from streams.ingest import create_app

settings = settings_from_json(os.environ[SETTINGS_ENV])
uvicorn.run(create_app(settings), host=settings.ingest.host, port=settings.ingest.port,
            log_level="warning", access_log=False)
