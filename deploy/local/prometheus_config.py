"""The configuration files of the local Prometheus and Alertmanager, rendered from settings.

Files are written as JSON, which is valid YAML: no YAML library needed, and every string
is quoted correctly whatever the settings contain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import monitoring

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

NULL_RECEIVER = "null"
WEBHOOK_RECEIVER = "flywheel-webhook"
_HEADER = "# Rendered by Flywheel from its settings on every `flywheel stack up`; edits are lost.\n"


def rules_dir() -> Path:
    """The folder of alerting and recording rule files shipped in the `monitoring` package."""
    return Path(monitoring.__file__).resolve().parent / "rules"


def prometheus_config(settings: FlywheelSettings) -> dict[str, Any]:
    """prometheus.yml: scrape the stack and Flywheel's processes, alert via Alertmanager."""
    prometheus = settings.prometheus
    scrape_configs = [
        _job("prometheus", prometheus.http_url + "/metrics"),
        _job("alertmanager", settings.alertmanager.http_url + "/metrics"),
        _job("triton", settings.triton.metrics_address),
        _job("flywheel", f"http://{settings.metrics.host}:{settings.metrics.port}/metrics"),
        _job(
            "flywheel-monitor",
            f"http://{settings.monitoring.metrics_host}:{settings.monitoring.metrics_port}/metrics",
        ),
        # The FastAPI services mount their registry at /metrics/ (no redirect hop).
        _job("flywheel-ingest",
             f"http://{settings.ingest.host}:{settings.ingest.port}/metrics/"),
        _job(
            "flywheel-gateway",
            f"http://{settings.inference.gateway_host}:{settings.inference.gateway_port}/metrics/",
        ),
    ]
    if not settings.clickhouse.external:
        scrape_configs.append(_job("clickhouse", settings.clickhouse.http_url + "/metrics"))
    if prometheus.extra_scrape_targets:
        scrape_configs.append(
            {"job_name": "extra", "static_configs": [{"targets": prometheus.extra_scrape_targets}]}
        )
    alertmanager = urlsplit(settings.alertmanager.http_url)
    return {
        "global": {
            "scrape_interval": f"{prometheus.scrape_interval_s}s",
            "scrape_timeout": f"{min(prometheus.scrape_interval_s, 10)}s",
            "evaluation_interval": f"{prometheus.evaluation_interval_s}s",
            "external_labels": {"stack": "flywheel"},
        },
        "alerting": {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "scheme": alertmanager.scheme,
                    "path_prefix": alertmanager.path or "/",
                    "static_configs": [{"targets": [alertmanager.netloc]}],
                }
            ]
        },
        # A glob, so a new rule file is picked up by a reload without re-rendering.
        "rule_files": [str(rules_dir() / "*.yml")],
        "scrape_configs": scrape_configs,
    }


def alertmanager_config(settings: FlywheelSettings) -> dict[str, Any]:
    """alertmanager.yml: one route to Flywheel's webhook, or to nowhere when none is set."""
    webhook_url = settings.alertmanager.webhook_url or _default_receiver(settings)
    receivers: list[dict[str, Any]] = [{"name": NULL_RECEIVER}]
    if webhook_url:
        receivers.append(
            {
                "name": WEBHOOK_RECEIVER,
                "webhook_configs": [
                    {"url": webhook_url, "send_resolved": True, "max_alerts": 50}
                ],
            }
        )
    return {
        "route": {
            "receiver": WEBHOOK_RECEIVER if webhook_url else NULL_RECEIVER,
            # One notification per alert and job: a dead Triton is one page, not one per
            # instance; identical alerts from several Prometheus servers are deduplicated.
            "group_by": ["alertname", "job"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "job", "instance"],
            }
        ],
        "receivers": receivers,
    }


def _default_receiver(settings: FlywheelSettings) -> str:
    """Flywheel's own receiver (`flywheel alerts receiver`), which lands every alert."""
    monitoring = settings.monitoring
    return f"http://{monitoring.receiver_host}:{monitoring.receiver_port}/alerts"


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write a config file atomically, so a reload never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(_HEADER + json.dumps(config, indent=2) + "\n")
    partial.replace(path)


def _job(name: str, metrics_url: str) -> dict[str, Any]:
    url = urlsplit(metrics_url)
    return {
        "job_name": name,
        "scheme": url.scheme or "http",
        "metrics_path": url.path or "/metrics",
        "static_configs": [{"targets": [url.netloc]}],
    }
