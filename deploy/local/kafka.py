"""The local stack's Kafka: a single-node KRaft broker from the official jars, or a cluster.

Locally, one JVM runs Apache Kafka as combined broker and controller (node 1), with its
configuration and data under `<state_dir>/kafka/`. Storage is formatted on the first
start only, so topics and records survive `flywheel stack down` / `up`. With
`kafka.bootstrap_servers` set, no broker runs and the stack only checks the cluster.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from deploy.errors import StackError
from deploy.local.kafka_jars import KAFKA_LOG4J2_CONFIG, ensure_kafka_jars, require_tool
from deploy.local.service import Health, LaunchSpec, PortSpec, Service, port_is_listening
from deploy.local.supervisor import tail
from deploy.settings import env_var_for

logger = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
FORMAT_TIMEOUT_S = 120.0
HEALTH_TIMEOUT_S = 3.0


def random_cluster_id() -> str:
    """A cluster id as Kafka writes them: 16 random bytes, URL-safe base64, no padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator skips ids starting with '-': they read as CLI options.
        if not text.startswith("-"):
            return text


class KafkaService(Service):
    """Apache Kafka in KRaft mode, run as `java ... kafka.Kafka server.properties`."""

    name = "kafka"
    # A cold JVM on 2 cores needs 10-20 s; leave room for a busy machine.
    startup_timeout_s = 90.0

    @property
    def external(self) -> bool:
        return self.settings.kafka.external

    @property
    def address(self) -> str:
        return self.settings.kafka.bootstrap

    @property
    def config_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def jars_dir(self) -> Path:
        return self.settings.kafka_jars_dir()

    def ports(self) -> list[PortSpec]:
        kafka = self.settings.kafka
        return [
            PortSpec(kafka.host, kafka.port, env_var_for(("kafka", "port"))),
            PortSpec(kafka.host, kafka.controller_port, env_var_for(("kafka", "controller_port"))),
        ]

    def check_health(self) -> Health:
        kafka = self.settings.kafka
        if not kafka.external and not port_is_listening(kafka.host, kafka.port):
            return Health(False, f"nothing listens on {kafka.bootstrap} yet")
        # log_level 0: a probe runs every quarter second while starting; its failures
        # are reported in the Health detail, not as librdkafka lines on stderr.
        admin = AdminClient({**kafka.client_config(), "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=HEALTH_TIMEOUT_S)
        except KafkaException as e:
            return Health(False, f"{kafka.bootstrap}: {e.args[0].str()}")
        except Exception as e:  # a health check must not raise
            return Health(False, f"{kafka.bootstrap}: {type(e).__name__}: {e}")
        if not metadata.brokers:
            return Health(False, f"{kafka.bootstrap} answered but lists no brokers yet")
        user_topics = [t for t in metadata.topics if not t.startswith("__")]
        return Health(
            True,
            f"{len(metadata.brokers)} broker(s), {len(user_topics)} topic(s), "
            f"cluster {metadata.cluster_id}",
        )

    def prepare(self) -> None:
        """Check Java and Maven, resolve the jars, write the config, format storage once.

        Raises:
            MissingToolError: java or mvn is not installed.
            StackError: Maven could not resolve the jars, or formatting the storage failed.
        """
        require_tool("java", purpose="to run the broker")
        ensure_kafka_jars(self.jars_dir, version=self.settings.kafka.version)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.server_properties())
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()

    def server_properties(self) -> str:
        """The broker's configuration, derived from the settings."""
        kafka = self.settings.kafka
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{kafka.host}:{kafka.controller_port}",
            "listeners": (
                f"PLAINTEXT://{kafka.host}:{kafka.port},CONTROLLER://{kafka.host}:"
                f"{kafka.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{kafka.host}:{kafka.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # One node: every internal topic has a single replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Flywheel creates its topics from streams/topics.py; a typo must fail loudly.
            "auto.create.topics.enable": "false",
            # Tests and a developer's workers join groups alone; don't wait 3 s for others.
            "group.initial.rebalance.delay.ms": "0",
        }
        header = "# Written by flywheel (deploy/local/kafka.py) at each start; edits are lost.\n"
        return header + "".join(f"{key}={value}\n" for key, value in lines.items())

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        return [
            require_tool("java", purpose="to run the broker"),
            f"-Xmx{self.settings.kafka.heap_mb}m",
            f"-Xms{min(self.settings.kafka.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J2_CONFIG}",
            "-cp",
            f"{self.jars_dir}/*",
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        argv = self._java_argv(
            STORAGE_TOOL_CLASS, "format", "-t", random_cluster_id(), "-c", str(self.config_path)
        )
        logger.info("formatting kafka storage in %s", self.data_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(b"\n--- flywheel: formatting kafka storage ---\n")
            log.flush()
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=FORMAT_TIMEOUT_S, check=False, cwd=self.state_dir,
                )
            except subprocess.TimeoutExpired as e:
                raise StackError(
                    f"formatting Kafka storage took over {FORMAT_TIMEOUT_S:.0f} s; "
                    f"see {self.log_path}"
                ) from e
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {self.data_dir} failed (exit code "
                f"{result.returncode}). Last lines of {self.log_path}:\n{tail(self.log_path, 10)}"
            )

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec(
            argv=self._java_argv(MAIN_CLASS, str(self.config_path)),
            cwd=self.state_dir,
        )
