"""Prometheus and Alertmanager: Debian's binaries, run as plain processes of the stack.

Both read configuration rendered from settings into their state folders
(`<state_dir>/prometheus/prometheus.yml`, `<state_dir>/alertmanager/alertmanager.yml`)
and keep their data there. `--web.enable-lifecycle` lets `POST /-/reload` pick up a
re-rendered file without a restart.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from deploy.errors import MissingToolError
from deploy.local.prometheus_config import alertmanager_config, prometheus_config, write_config
from deploy.local.service import Health, LaunchSpec, PortSpec, Service, http_health
from deploy.settings import env_var_for

logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "Install it with `apt-get install prometheus prometheus-alertmanager`, or run `make setup`."
)


def _find_binary(binary: str, *, setting: str) -> Path:
    """The absolute path of a program named by a setting.

    Raises:
        MissingToolError: the program is not on PATH and is not an existing file.
    """
    found = shutil.which(binary)
    if found is None:
        raise MissingToolError(
            f"{binary!r} is not installed (or not on PATH). {_INSTALL_HINT} "
            f"Or point {setting} at the binary."
        )
    return Path(found)


class PrometheusService(Service):
    """Prometheus scraping Triton, ClickHouse and Flywheel, with the stack's alert rules."""

    name = "prometheus"

    @property
    def external(self) -> bool:
        return self.settings.prometheus.external

    @property
    def address(self) -> str:
        return self.settings.prometheus.http_url

    @property
    def config_path(self) -> Path:
        return self.state_dir / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def check_health(self) -> Health:
        return http_health(f"{self.settings.prometheus.http_url}/-/ready")

    def ports(self) -> list[PortSpec]:
        prometheus = self.settings.prometheus
        return [PortSpec(prometheus.host, prometheus.port, env_var_for(("prometheus", "port")))]

    def prepare(self) -> None:
        """Check the binary and render prometheus.yml.

        Raises:
            MissingToolError: Debian's `prometheus` is not installed.
        """
        self._binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.config_path, prometheus_config(self.settings))
        logger.info("rendered %s", self.config_path)

    def launch_spec(self) -> LaunchSpec:
        """Prometheus in the foreground with its config and data under the state folder.

        Raises:
            MissingToolError: Debian's `prometheus` is not installed.
        """
        prometheus = self.settings.prometheus
        argv = [
            str(self._binary()),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={prometheus.retention}",
            f"--web.listen-address={prometheus.host}:{prometheus.port}",
            f"--web.external-url={prometheus.http_url}/",
            "--web.enable-lifecycle",
        ]
        return LaunchSpec(argv=argv)

    def _binary(self) -> Path:
        return _find_binary(self.settings.prometheus.binary, setting="FLYWHEEL_PROMETHEUS__BINARY")


class AlertmanagerService(Service):
    """Alertmanager, single node, routing the stack's alerts to Flywheel's webhook."""

    name = "alertmanager"

    @property
    def external(self) -> bool:
        return self.settings.alertmanager.external

    @property
    def address(self) -> str:
        return self.settings.alertmanager.http_url

    @property
    def config_path(self) -> Path:
        return self.state_dir / "alertmanager.yml"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def check_health(self) -> Health:
        return http_health(f"{self.settings.alertmanager.http_url}/-/ready")

    def ports(self) -> list[PortSpec]:
        alertmanager = self.settings.alertmanager
        return [
            PortSpec(alertmanager.host, alertmanager.port, env_var_for(("alertmanager", "port")))
        ]

    def prepare(self) -> None:
        """Check the binary and render alertmanager.yml.

        Raises:
            MissingToolError: Debian's `prometheus-alertmanager` is not installed.
        """
        self._binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.config_path, alertmanager_config(self.settings))
        logger.info("rendered %s", self.config_path)

    def launch_spec(self) -> LaunchSpec:
        """Alertmanager in the foreground, clustering off, data under the state folder.

        Raises:
            MissingToolError: Debian's `prometheus-alertmanager` is not installed.
        """
        alertmanager = self.settings.alertmanager
        argv = [
            str(self._binary()),
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address={alertmanager.host}:{alertmanager.port}",
            f"--web.external-url={alertmanager.http_url}/",
            # An empty address turns the gossip cluster (and its port 9094) off.
            "--cluster.listen-address=",
        ]
        return LaunchSpec(argv=argv)

    def _binary(self) -> Path:
        return _find_binary(
            self.settings.alertmanager.binary, setting="FLYWHEEL_ALERTMANAGER__BINARY"
        )
