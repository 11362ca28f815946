"""Run the gateway inside this process (tests, benchmarks, the demo)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from deploy.settings import FlywheelSettings
from inference.gateway.app import create_app

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def gateway_in_thread(
    settings: FlywheelSettings, *, port: int | None = None, start_timeout_s: float = 20.0,
    **app_options: Any,
) -> Iterator[str]:
    """Serve the gateway on a background thread; yields its base URL, stops it on exit.

    Raises:
        TimeoutError: it did not start in time.
    """
    host = settings.inference.gateway_host
    port = port or free_port(host)
    config = uvicorn.Config(create_app(settings, **app_options), host=host, port=port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="flywheel-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the gateway did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
