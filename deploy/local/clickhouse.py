"""The local stack's ClickHouse: the embedded chDB server, or a real server by URL."""

from __future__ import annotations

import sys

from deploy.local.service import Health, LaunchSpec, PortSpec, Service, http_health
from deploy.settings import env_var_for


class ClickHouseService(Service):
    """`python -m deploy.clickhouse` with its data under `<state_dir>/clickhouse/`."""

    name = "clickhouse"
    startup_timeout_s = 60.0
    # A Flywheel process: if it dies, its keeper starts it again (chDB's folder lock
    # goes with the dead process, and every acknowledged insert is on disk).
    restart_on_exit = True

    @property
    def external(self) -> bool:
        return self.settings.clickhouse.external

    @property
    def address(self) -> str:
        return self.settings.clickhouse.http_url

    def check_health(self) -> Health:
        return http_health(f"{self.settings.clickhouse.http_url}/ping", timeout_s=2.0)

    def ports(self) -> list[PortSpec]:
        ch = self.settings.clickhouse
        return [PortSpec(ch.host, ch.port, env_var_for(("clickhouse", "port")))]

    def launch_spec(self) -> LaunchSpec:
        from deploy.clickhouse.config import SETTINGS_ENV, settings_to_json

        return LaunchSpec(
            argv=[sys.executable, "-m", "deploy.clickhouse"],
            env={SETTINGS_ENV: settings_to_json(self.settings)},
        )
