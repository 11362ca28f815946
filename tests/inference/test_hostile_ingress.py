"""Seeded hostile requests against the running ingress: no 5xx, no worker death, no loss.

The stream worker and the ingest API run as the supervisor's `flywheel ...` processes on
the test stack (Kafka, ClickHouse, Triton); the gateway serves a tiny model from a thread,
producing to the same topics. Each ingress route gets `FLYWHEEL_HOSTILE_PAYLOADS`
requests (default 200 in the suite; the issue's figure is 10,000) from
`tests.streams.hostile_payloads` with seed `FLYWHEEL_HOSTILE_SEED`. Then:

- no answer is 5xx, and 401 comes exactly when neither credential is valid;
- every body an event route refused (the ingest's four, the gateway's feedback) has a
  `quarantine_id`, and the worker landed a `quarantine` row under each one;
- the worker and the ingest are the processes that started, and their keepers restarted
  neither: neither died.

Run the full figure with
`FLYWHEEL_HOSTILE_PAYLOADS=10000 pytest tests/inference/test_hostile_ingress.py -s`.
"""

from __future__ import annotations

import collections
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from deploy.clickhouse.client import get_client
from deploy.local.stack import build_apps_supervisor
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from deploy.warehouse import migrate
from inference.gateway.server import gateway_in_thread
from inference.swap import SwapController
from streams.topics import ensure_topics
from tests.conftest import with_database
from tests.streams.hostile_payloads import Route, hostile_payloads

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = int(os.environ.get("FLYWHEEL_HOSTILE_PAYLOADS", "200"))
SEED = int(os.environ.get("FLYWHEEL_HOSTILE_SEED", "17"))
#: route kind -> (service, path)
ROUTES: dict[Route, tuple[str, str]] = {
    "chat_event": ("ingest", "/v1/events/chat"),
    "feedback_event": ("ingest", "/v1/events/feedback"),
    "chat_batch": ("ingest", "/v1/events/chat/batch"),
    "feedback_batch": ("ingest", "/v1/events/feedback/batch"),
    "chat_completion": ("gateway", "/v1/chat/completions"),
    "gateway_feedback": ("gateway", "/v1/feedback"),
}
EVENT_ROUTES = {kind for kind in ROUTES if kind != "chat_completion"}


@dataclass
class Tally:
    """What one route answered."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    auth_mismatches: list[str] = field(default_factory=list)
    unquarantined: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    quarantine_ids: set[str] = field(default_factory=set)


@dataclass
class Ingress:
    settings: FlywheelSettings
    apps: Supervisor
    urls: dict[str, str]


@pytest.fixture(scope="module")
def ingress(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path
) -> Iterator[Ingress]:
    running("clickhouse", "kafka", "triton")
    database = f"hostile_{uuid.uuid4().hex[:8]}"
    local = with_database(settings, database)
    local = local.model_copy(update={"inference": local.inference.model_copy(
        update={"device": "cpu", "routing_poll_interval_s": 0.1})})
    admin = get_client(local, database="default")
    migrate(admin, local)
    ensure_topics(local)
    controller = SwapController(local, model=f"hostile-{uuid.uuid4().hex[:8]}")
    controller.start(base_model=tiny_base)
    apps = build_apps_supervisor(local)
    try:
        apps.up(["streams-worker", "ingest"])
        ingest_url = f"http://{local.ingest.host}:{local.ingest.port}"
        with gateway_in_thread(local, model=controller.model) as gateway_url:
            yield Ingress(local, apps, {"ingest": ingest_url, "gateway": gateway_url})
    finally:
        apps.down()
        with closing(grpcclient.InferenceServerClient(local.triton.grpc_address)) as triton:
            triton.unload_model(controller.model)
        shutil.rmtree(controller.repo / controller.model, ignore_errors=True)
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


APPS = ("streams-worker", "ingest")


def _pids(apps: Supervisor) -> dict[str, int | None]:
    return {row.name: row.pid for row in apps.status() if row.name in APPS}


def _restarts(apps: Supervisor) -> dict[str, int]:
    """Restarts by each process's keeper (which would hide a death behind the same pid)."""
    keepers = {name: apps.keeper_of(apps.get(name)) for name in APPS}
    return {name: keeper.restarts for name, keeper in keepers.items() if keeper is not None}


def _send(http: httpx.Client, path: str, kind: Route, tally: Tally) -> None:
    for payload in hostile_payloads(kind, count=COUNT, seed=SEED):
        try:
            response = http.post(path, content=payload.body, headers=payload.headers)
        except httpx.TransportError as e:
            tally.transport_errors.append(f"{payload.label}: {e!r}"[:300])
            continue
        status = response.status_code
        tally.statuses[status] += 1
        if status >= 500:
            tally.server_errors.append(f"{status} {payload.label}: {response.text[:200]}")
        if (status == 401) == payload.authorized:
            tally.auth_mismatches.append(f"{status} {payload.label}")
        if kind in EVENT_ROUTES and status in (400, 413, 422):
            record_id = response.json().get("quarantine_id")
            if record_id is None:
                tally.unquarantined.append(f"{status} {payload.label}")
            else:
                tally.quarantine_ids.add(record_id)


def _landed(settings: FlywheelSettings, wanted: set[str], *, since: datetime,
            timeout_s: float) -> set[str]:
    """The wanted quarantine ids that have a row, once all have or the time is up."""
    client = get_client(settings)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = client.query(
                "SELECT DISTINCT toString(record_id) FROM quarantine "
                "WHERE quarantined_at >= {since:DateTime64(3, 'UTC')}",
                parameters={"since": since}).result_rows
            found = wanted & {r[0] for r in rows}
            if found == wanted or time.monotonic() > deadline:
                return found
            time.sleep(2)
    finally:
        client.close()


def test_hostile_requests_get_no_5xx_kill_no_worker_and_every_refused_body_is_quarantined(
    ingress: Ingress,
) -> None:
    started = datetime.now(UTC)
    pids = _pids(ingress.apps)
    assert all(pids.values()), pids
    tallies: dict[Route, Tally] = {}
    for kind, (service, path) in ROUTES.items():
        tallies[kind] = Tally()
        with httpx.Client(base_url=ingress.urls[service], timeout=60) as http:
            _send(http, path, kind, tallies[kind])
    wanted = set().union(*(t.quarantine_ids for t in tallies.values()))
    landed = _landed(ingress.settings, wanted, since=started,
                     timeout_s=120 + len(wanted) / 50)

    for kind, tally in tallies.items():
        print(f"{kind}: {COUNT} sent, {dict(sorted(tally.statuses.items()))}, "
              f"{len(tally.quarantine_ids)} quarantined, "
              f"{len(tally.transport_errors)} transport errors")
    print(f"quarantine rows landed: {len(landed)} of {len(wanted)}")
    assert {k: t.server_errors[:5] for k, t in tallies.items() if t.server_errors} == {}
    assert {k: t.auth_mismatches[:5] for k, t in tallies.items() if t.auth_mismatches} == {}
    assert {k: t.unquarantined[:5] for k, t in tallies.items() if t.unquarantined} == {}
    assert {k: t.transport_errors[:5] for k, t in tallies.items() if t.transport_errors} == {}
    assert sorted(wanted - landed)[:5] == []
    assert _pids(ingress.apps) == pids  # neither the worker nor the ingest died
    assert all(n == 0 for n in _restarts(ingress.apps).values()), _restarts(ingress.apps)
    assert all(row.healthy for row in ingress.apps.status() if row.name in APPS)
