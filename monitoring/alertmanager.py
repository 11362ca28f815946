"""Alertmanager's API v2: the alerts it holds now, posting Flywheel's own, and silences."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from monitoring.errors import AlertmanagerError

if TYPE_CHECKING:
    from schemas.platform import Alert

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveAlert:
    """An alert Alertmanager holds, as `flywheel alerts list` shows it."""

    name: str
    state: str
    severity: str
    summary: str
    labels: dict[str, str]
    starts_at: str
    fingerprint: str


class AlertmanagerClient:
    """A thin client of one Alertmanager's `/api/v2`."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._api = url.rstrip("/") + "/api/v2"
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = httpx.request(method, self._api + path, timeout=self._timeout_s, **kwargs)
        except httpx.HTTPError as e:
            raise AlertmanagerError(
                f"Alertmanager at {self._api} is unreachable: {e}; is it up? "
                "(flywheel stack status)"
            ) from e
        if response.status_code >= 400:
            raise AlertmanagerError(
                f"Alertmanager answered {response.status_code} to {method} {path}: "
                f"{response.text[:300]}"
            )
        return response.json() if response.content else None

    def alerts(self, *, include_silenced: bool = False) -> list[ActiveAlert]:
        """Active alerts, most severe first.

        Raises:
            AlertmanagerError: unreachable or refused.
        """
        params = {"active": "true", "silenced": str(include_silenced).lower(),
                  "inhibited": str(include_silenced).lower()}
        body = self._call("GET", "/alerts", params=params) or []
        rank = {"critical": 0, "warning": 1, "info": 2}
        alerts = [
            ActiveAlert(
                name=a["labels"].get("alertname", ""), state=a["status"]["state"],
                severity=a["labels"].get("severity", ""),
                summary=a.get("annotations", {}).get("summary", ""), labels=a["labels"],
                starts_at=a.get("startsAt", ""), fingerprint=a.get("fingerprint", ""),
            )
            for a in body
        ]
        return sorted(alerts, key=lambda a: (rank.get(a.severity, 3), a.starts_at))

    def post(self, alerts: Sequence[Alert], *, hold_s: float) -> None:
        """Post alerts as a Prometheus server would: labels, annotations, start and end.

        A firing alert ends `hold_s` from now unless posted again (Alertmanager then
        resolves it by itself); a resolved one ends at its `ends_at`, or now.

        Raises:
            AlertmanagerError: refused or unreachable.
        """
        now = datetime.now(UTC)
        body = []
        for alert in alerts:
            if alert.status == "resolved":
                ends_at = alert.ends_at or now
            else:
                ends_at = now + timedelta(seconds=hold_s)
            annotations = {"summary": alert.summary, "description": alert.description}
            if alert.runbook_url:
                annotations["runbook_url"] = alert.runbook_url
            body.append({
                "labels": {**alert.labels, "alertname": alert.name,
                           "severity": str(alert.severity)},
                "annotations": annotations,
                "startsAt": alert.starts_at.isoformat(),
                "endsAt": ends_at.isoformat(),
            })
        if body:
            self._call("POST", "/alerts", json=body)

    def silence(self, matchers: dict[str, str], *, duration_s: float, created_by: str,
                comment: str) -> str:
        """Silence alerts whose labels equal `matchers` for `duration_s`; returns the id.

        Raises:
            AlertmanagerError: refused (e.g. no matchers) or unreachable.
        """
        if not matchers:
            raise AlertmanagerError("a silence needs at least one matcher, e.g. "
                                    "alertname=FlywheelEmbeddingDrift")
        now = datetime.now(UTC)
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                         for k, v in matchers.items()],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=duration_s)).isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        answer = self._call("POST", "/silences", json=body)
        return str(answer["silenceID"])

    def expire_silence(self, silence_id: str) -> None:
        """End a silence now.

        Raises:
            AlertmanagerError: unknown id or unreachable.
        """
        self._call("DELETE", f"/silence/{silence_id}")


def parse_matchers(pairs: list[str]) -> dict[str, str]:
    """["alertname=X", "model=m"] -> {"alertname": "X", "model": "m"}.

    Raises:
        AlertmanagerError: a pair has no `=`.
    """
    matchers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise AlertmanagerError(f"matcher {pair!r} must look like label=value")
        matchers[name.strip()] = value.strip()
    return matchers
