"""Resolve Apache Kafka's jars from Maven Central into a cache folder, once.

Kafka ships on no PyPI, npm or Debian package, so the local stack runs the official
jars. `maven/kafka-pom.xml` pins them; Maven copies them into the cache folder and a
marker file records what was resolved, so a warm cache never starts Maven.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from pathlib import Path

from deploy.errors import MissingToolError, StackError

logger = logging.getLogger(__name__)

MAVEN_DIR = Path(__file__).parent / "maven"
KAFKA_POM = MAVEN_DIR / "kafka-pom.xml"
KAFKA_LOG4J2_CONFIG = MAVEN_DIR / "kafka-log4j2.xml"
MARKER_NAME = ".flywheel-resolved"
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"


def require_tool(tool: str, *, purpose: str) -> str:
    """The full path of a program on PATH.

    Raises:
        MissingToolError: it is not installed; the message says how to install it.
    """
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(
            f"`{tool}` is not installed, and the local Kafka needs it {purpose}. "
            f"Install it with `{INSTALL_HINT}`, or use an existing cluster by setting "
            "FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS."
        )
    return path


def _marker_text(version: str, pom: Path) -> str:
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    return f"kafka {version} pom {digest}\n"


def jars_are_resolved(jars_dir: Path, *, version: str, pom: Path = KAFKA_POM) -> bool:
    """True when `jars_dir` holds the jars of this Kafka version and this POM."""
    marker = jars_dir / MARKER_NAME
    try:
        return marker.read_text() == _marker_text(version, pom)
    except OSError:
        return False


def ensure_kafka_jars(
    jars_dir: Path,
    *,
    version: str,
    pom: Path = KAFKA_POM,
    timeout_s: float = 900.0,
) -> Path:
    """Make `jars_dir` hold Kafka `version` and its dependencies; skip Maven when it does.

    Maven resolves into a sibling folder that replaces `jars_dir` only when complete,
    so an interrupted download never leaves a half-filled cache behind.

    Raises:
        MissingToolError: Maven is not installed.
        StackError: Maven failed (no network, unknown version); the message has its output.
    """
    if jars_are_resolved(jars_dir, version=version, pom=pom):
        logger.debug("kafka %s jars already in %s", version, jars_dir)
        return jars_dir
    mvn = require_tool("mvn", purpose="to download Kafka's jars from Maven Central")
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = jars_dir.with_name(f"{jars_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    argv = [
        mvn, "-q", "-B", "-Dstyle.color=never",
        "-f", str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    logger.info("resolving kafka %s jars with Maven into %s", version, jars_dir)
    started = time.monotonic()
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(
            f"Maven did not finish resolving Kafka {version} within {timeout_s:.0f} s; "
            "check the connection to Maven Central and run `flywheel stack up` again."
        ) from e
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"Maven could not resolve Kafka {version} (exit code {result.returncode}). "
            "Check the connection to Maven Central, and that the version exists "
            f"(FLYWHEEL_KAFKA__VERSION). Command: {' '.join(argv)}\n{output}"
        )
    (staging / MARKER_NAME).write_text(_marker_text(version, pom))
    if jars_dir.exists():
        shutil.rmtree(jars_dir)
    staging.rename(jars_dir)
    logger.info("resolved kafka %s jars in %.1f s", version, time.monotonic() - started)
    return jars_dir
