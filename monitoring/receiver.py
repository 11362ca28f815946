"""`flywheel alerts receiver`: the Alertmanager webhook that records every notification.

POST /alerts takes Alertmanager's webhook body, writes each alert to the `alerts` table
and the alerts topic, then hands it to the automatic actions (retrain, rollback). A
failure answers 503 so Alertmanager retries. GET /healthz answers 200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from monitoring.alerts import AlertSink, alerts_from_webhook
from monitoring.errors import ReceiverError

if TYPE_CHECKING:
    from schemas.platform import Alert

logger = logging.getLogger(__name__)

OnAlerts = Callable[["Sequence[Alert]"], Any]


def build_receiver_app(sink: AlertSink, *, on_alerts: OnAlerts | None = None) -> FastAPI:
    """The webhook app; `on_alerts` (e.g. `ActionDispatcher.handle`) sees each stored batch."""
    app = FastAPI(title="Flywheel alert receiver", version="1", description=__doc__)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/alerts")
    async def receive(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
            alerts = alerts_from_webhook(payload)
        except (ValueError, ReceiverError) as e:
            return JSONResponse({"error": f"{e}; send Alertmanager's webhook JSON"}, 400)
        try:
            await asyncio.to_thread(sink.write, alerts)
        except ReceiverError as e:
            logger.error("receiver: %s", e)
            return JSONResponse({"error": str(e)}, 503)
        if on_alerts is not None:
            try:
                await asyncio.to_thread(on_alerts, alerts)
            except Exception:  # an action failing must not make Alertmanager resend
                logger.exception("receiver: automatic action failed")
        return JSONResponse({"stored": len(alerts)})

    return app


def serve_receiver(app: FastAPI, *, host: str, port: int) -> None:
    """Run the receiver in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
