"""Which version serves, recorded in ClickHouse's `model_versions` for everyone else.

Triton and routing.json are the truth for the gateway; the trainer (what to evaluate a
candidate against), `flywheel status` and the monitor's automatic actions (when was this
version promoted) read `model_versions` instead. After every switch the controller writes
copies of the affected rows with a new `status` and `updated_at`, which is the
ReplacingMergeTree's version column, so `FINAL` sees only the newest copy:

- the version now serving gets `serving`;
- the one it replaced gets `retired`, or `rolled_back` when the switch is a rollback;
- any other row still marked `serving` (a write lost while ClickHouse was down) gets
  `retired` too, so at most one version of a model reads as serving.

A canary is `canary` while it takes its share of traffic, then `serving` when promoted or
`rolled_back`. A published version the controller would not deploy (wrong hash, unreadable
or non-finite weights, a failed load) becomes `refused`, with the reason in
`status_reason`; every other write leaves `status_reason` empty.

`check_serving` is the other half of the truth: whether Triton has the model ready now,
which the gateway's `/healthz` and `flywheel status` report (a row reading `serving` says
which version should answer, not that anything does).

A version the trainer never recorded (version 1, the bare base, or one an operator wrote
into the repository by hand) gets a minimal row built from its `metadata.json`: empty
training window at the epoch, zero hashes and counts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deploy.settings import FlywheelSettings
from inference.errors import ServingStatusError
from inference.repository import ADAPTER_DIR, BASE_ADAPTER_ID, read_metadata, version_dir

logger = logging.getLogger(__name__)

Status = Literal["serving", "retired", "rolled_back", "canary", "refused"]

SERVING: Final = "serving"
CANARY: Final = "canary"
RETIRED: Final = "retired"
ROLLED_BACK: Final = "rolled_back"
REFUSED: Final = "refused"
ZERO_SHA256: Final = "0" * 64
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Columns of model_versions in the order rows are read and written here.
COLUMNS: Final = (
    "model", "version", "adapter_id", "base_model", "adapter_uri", "adapter_sha256",
    "previous_version", "window_start", "window_end", "train_rows", "validation_rows",
    "content_sha256", "dataset_query", "kafka_offsets", "metrics", "status", "status_reason",
    "published_at", "updated_at",
)
#: Longest `status_reason` written; a refusal's message can quote a whole Triton error.
MAX_REASON_CHARS: Final = 2000
# FixedString comes back as bytes unless converted; everything else round-trips as is.
_SELECT: Final = ", ".join(
    f"toString({c}) AS {c}" if c in ("adapter_sha256", "content_sha256") else c
    for c in COLUMNS
)


def replaced_status(reason: str) -> Status:
    """What the version that stops serving becomes: `rolled_back` for a rollback."""
    return ROLLED_BACK if reason == "rollback" else RETIRED


class ServingStatusWriter:
    """Writes serving / retired rows of one model's versions; connects on each call.

    A write is rare (one per swap) and must not hold a connection between swaps, so every
    call opens a client with short timeouts and closes it.
    """

    def __init__(
        self, settings: FlywheelSettings, *, model: str, repo: Path,
        connect_timeout_s: float = 3.0, timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.model = model
        self.repo = repo
        self.table = f"{settings.clickhouse.database}.model_versions"
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s

    def record_switch(self, *, serving: int, replaced: int | None, reason: str) -> None:
        """Mark `serving` as serving and `replaced` (and any stale serving row) as replaced.

        Raises:
            ServingStatusError: ClickHouse could not be read or written; the message says
                which version was left unrecorded.
        """
        with self._client() as client:
            rows = self._current_rows(client, [serving, *([replaced] if replaced else [])])
            stale = [v for v, row in rows.items()
                     if row["status"] == SERVING and v not in (serving, replaced)]
            changes: dict[int, Status] = {serving: SERVING}
            if replaced is not None and replaced != serving:
                changes[replaced] = replaced_status(reason)
            changes.update({v: RETIRED for v in stale})
            self._write(client, rows, changes)
        logger.info("model_versions: %s v%s serving (%s), replaced %s", self.model, serving,
                    reason, replaced)

    def mark(self, version: int, status: Status) -> None:
        """Set one version's status, leaving every other row as it is (canary start / end).

        Raises:
            ServingStatusError: ClickHouse could not be read or written.
        """
        with self._client() as client:
            self._write(client, self._current_rows(client, [version]), {version: status})
        logger.info("model_versions: %s v%s %s", self.model, version, status)

    def refuse(self, version: int, reason: str) -> bool:
        """Record that `version` was not deployed, and why; returns whether it wrote.

        Only a version that exists somewhere (a row the trainer wrote, or a folder in the
        repository) is recorded: a typo in `flywheel models promote 99` makes no row. A
        version already serving is left alone (a refused re-deploy of it changes nothing).

        Raises:
            ServingStatusError: ClickHouse could not be read or written.
        """
        with self._client() as client:
            rows = self._current_rows(client, [version])
            row = rows.get(version)
            if row is None and not version_dir(self.repo, self.model, version).is_dir():
                return False
            if row is not None and row["status"] == SERVING:
                return False
            self._write(client, rows, {version: REFUSED}, reason=reason[:MAX_REASON_CHARS])
        logger.info("model_versions: %s v%s refused: %s", self.model, version, reason)
        return True

    def ensure_serving(self, version: int) -> bool:
        """Record `version` as serving unless it already is the only serving row.

        Returns whether anything was written.

        Raises:
            ServingStatusError: ClickHouse could not be read or written.
        """
        with self._client() as client:
            rows = self._current_rows(client, [version])
            serving = {v for v, row in rows.items() if row["status"] == SERVING}
            if serving == {version}:
                return False
            changes: dict[int, Status] = {version: SERVING}
            changes.update({v: RETIRED for v in serving - {version}})
            self._write(client, rows, changes)
        logger.info("model_versions: %s v%s recorded as serving", self.model, version)
        return True

    def serving_version(self) -> int | None:
        """The version model_versions says serves, or None when none is recorded.

        Raises:
            ServingStatusError: ClickHouse could not be read.
        """
        with self._client() as client:
            rows = self._query(
                client, f"SELECT version FROM {self.table} FINAL WHERE model = {{m:String}} "
                "AND status = 'serving' ORDER BY updated_at DESC LIMIT 1", {"m": self.model})
        return int(rows[0][0]) if rows else None

    # -- steps --------------------------------------------------------------------------

    def _client(self) -> Any:
        from deploy.clickhouse.client import get_client

        try:
            return get_client(self.settings, connect_timeout=self._connect_timeout_s,
                              send_receive_timeout=self._timeout_s)
        except Exception as e:  # clickhouse-connect raises several unrelated types
            raise ServingStatusError(
                f"ClickHouse at {self.settings.clickhouse.http_url} is unreachable ({e}); "
                "`flywheel stack status` shows whether it runs"
            ) from e

    def _query(self, client: Any, sql: str, parameters: dict[str, Any]) -> list[Any]:
        try:
            rows: list[Any] = client.query(sql, parameters=parameters).result_rows
        except Exception as e:  # noqa: BLE001 - wrapped with the cause kept
            raise ServingStatusError(
                f"could not read {self.table} ({e}); is the warehouse migrated? "
                "(`flywheel warehouse migrate`)"
            ) from e
        return rows

    def _current_rows(self, client: Any, versions: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The newest row of each given version and of every version marked serving."""
        result = self._query(
            client, f"SELECT {_SELECT} FROM {self.table} FINAL WHERE model = {{m:String}} "
            "AND (version IN {vs:Array(UInt32)} OR status = 'serving')",
            {"m": self.model, "vs": sorted(set(versions))})
        return {int(row[1]): dict(zip(COLUMNS, row, strict=True)) for row in result}

    def _write(self, client: Any, rows: dict[int, dict[str, Any]],
               changes: dict[int, Status], *, reason: str = "") -> None:
        """Write the changed rows; `reason` goes with a `refused` status, '' otherwise."""
        now = datetime.now(UTC)
        out = []
        for version, status in sorted(changes.items()):
            row = dict(rows.get(version) or self._minimal_row(version))
            previous_update = _utc(row.get("updated_at")) or EPOCH
            # ReplacingMergeTree keeps the greatest updated_at: never write an older one.
            row.update(status=status, status_reason=reason if status == REFUSED else "",
                       updated_at=max(now, previous_update + timedelta(milliseconds=1)))
            out.append([row[c] for c in COLUMNS])
        try:
            client.insert(self.table, out, column_names=list(COLUMNS))
        except Exception as e:  # noqa: BLE001 - wrapped with the cause kept
            raise ServingStatusError(
                f"could not write {dict(changes)} for {self.model} into {self.table} ({e})"
            ) from e

    def _minimal_row(self, version: int) -> dict[str, Any]:
        """A row for a version the trainer never recorded, from its metadata.json."""
        try:
            meta = read_metadata(self.repo, self.model, version)
        except Exception:  # noqa: BLE001 - a row without metadata is still worth writing
            meta = {}
        adapter = version_dir(self.repo, self.model, version) / ADAPTER_DIR
        created = _parse_time(meta.get("created_at")) or datetime.now(UTC)
        return {
            "model": self.model, "version": version,
            "adapter_id": str(meta.get("adapter_id") or BASE_ADAPTER_ID),
            "base_model": str(meta.get("base_model") or ""),
            "adapter_uri": str(adapter) if adapter.is_dir() else "",
            "adapter_sha256": str(meta.get("adapter_sha256") or ZERO_SHA256),
            "previous_version": None, "window_start": EPOCH, "window_end": EPOCH,
            "train_rows": 0, "validation_rows": 0, "content_sha256": ZERO_SHA256,
            "dataset_query": "", "kafka_offsets": json.dumps({}), "metrics": {},
            "status": "", "status_reason": "", "published_at": created, "updated_at": EPOCH,
        }


@dataclass(frozen=True)
class ServingHealth:
    """Whether Triton has the model ready to answer now, and why not when it is not."""

    serving: bool
    model: str
    live_version: int
    reason: str = ""

    def body(self) -> dict[str, Any]:
        """The JSON a health endpoint answers: `ok` or `not serving` with the reason."""
        if self.serving:
            return {"status": "ok", "model": self.model, "live_version": self.live_version}
        return {"status": "not serving", "model": self.model,
                "live_version": self.live_version, "reason": self.reason}


def check_serving(grpc_address: str, model: str, *, live_version: int,
                  timeout_s: float = 2.0) -> ServingHealth:
    """Ask Triton whether `model` is loaded and ready; never raises.

    After a Triton restart (explicit model control) the server is up and ready but has
    no model loaded until the controller loads the live version again: the server's own
    readiness says nothing about serving, the model's does.
    """
    try:
        with closing(grpcclient.InferenceServerClient(grpc_address)) as client:
            if client.is_model_ready(model, client_timeout=timeout_s):
                return ServingHealth(True, model, live_version)
            reason = (f"Triton at {grpc_address} has no ready {model}; the inference "
                      "controller loads the live version again by itself (see "
                      "docs/runbooks/FlywheelModelNotServing.md)")
    except InferenceServerException as e:
        reason = (f"Triton at {grpc_address} is unreachable ({e.message() or e}); "
                  "`flywheel stack status` shows whether it runs")
    return ServingHealth(False, model, live_version, reason)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
