"""Apache Kafka 4.x as KRaft nodes (broker + controller each), run from jars resolved by Maven.

One node by default; ``CHATBUS_LOCAL_KAFKA_BROKERS=3`` runs three on loopback (``kafka``,
``kafka-2``, ``kafka-3``: node N on node 1's ports + 100*(N-1), its own data and log), one quorum
of three controllers, topics replicated three times with ``min.insync.replicas`` 2: the
production shape in miniature, run by the same jars. The nodes start together (a quorum needs a
majority before any of them is healthy).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from chatbus import ports, programs
from chatbus.console import say
from chatbus.errors import ConfigurationError, ServiceUnavailable
from chatbus.settings import NODE_PORT_STEP, Settings
from infra.local.service import Command, Service
from infra.local.tls import ServerTLS, ensure_server_tls

log = structlog.get_logger(__name__)

POM = Path(__file__).parent / "kafka" / "pom.xml"
JAVA_HINT = "install OpenJDK 17 or newer (Debian: apt-get install -y openjdk-17-jre-headless)"
MAVEN_HINT = "install Maven (Debian: apt-get install -y maven)"
SECURE_USER = "chatbus"


def home(settings: Settings) -> Path:
    return settings.cache_dir.expanduser().resolve() / f"kafka-{settings.local.kafka_version}"


def libs(settings: Settings) -> Path:
    return home(settings) / "libs"


def java_major(java: str) -> int:
    out = programs.run([java, "-version"], "java -version")
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not led by '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_CLUSTER_ID_LOCK = threading.Lock()  # the nodes are prepared in parallel threads


def cluster_id_file(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "kafka-cluster-id"


def shared_cluster_id(settings: Settings) -> str:
    """The one cluster id every node of a local cluster is formatted with (made once)."""
    with _CLUSTER_ID_LOCK:
        path = cluster_id_file(settings)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(random_cluster_id())
        return path.read_text().strip()


class Kafka(Service):
    title = "Kafka"
    start_timeout = 90.0
    stop_timeout = 30.0

    def __init__(self, node: int = 1) -> None:
        self.node = node
        self.name = "kafka" if node == 1 else f"kafka-{node}"

    def _port(self, first: int) -> int:
        return first + NODE_PORT_STEP * (self.node - 1)

    def client_port(self, settings: Settings) -> int:
        return self._port(settings.local.kafka_port)

    def controller_port(self, settings: Settings) -> int:
        return self._port(settings.local.kafka_controller_port)

    def secure_port(self, settings: Settings) -> int:
        return self._port(settings.local.kafka_secure_port)

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [
            (self.client_port(settings), "CHATBUS_KAFKA_PORT"),
            (self.controller_port(settings), "CHATBUS_KAFKA_CONTROLLER_PORT"),
            (self.secure_port(settings), "CHATBUS_KAFKA_SECURE_PORT"),
        ]

    def address(self, settings: Settings) -> str:
        return f"{ports.HOST}:{self.client_port(settings)}"

    # --- install ----------------------------------------------------------------------------

    def install(self, settings: Settings) -> None:
        java = programs.require("java", JAVA_HINT)
        if java_major(java) < 17:
            raise ConfigurationError(
                f"Kafka {settings.local.kafka_version} needs Java 17+; {JAVA_HINT}"
            )
        marker = home(settings) / ".installed"
        # the marker names the version and the pom's hash: editing the pom re-resolves the jars
        stamp = (
            f"{settings.local.kafka_version} {hashlib.sha256(POM.read_bytes()).hexdigest()[:16]}"
        )
        if programs.marker_ok(marker, stamp):
            log.debug("kafka jars present", libs=str(libs(settings)))
            return
        mvn = programs.require("mvn", MAVEN_HINT)
        say(f"installing Kafka {settings.local.kafka_version} jars from Maven Central…")
        # start from an empty folder: copy-dependencies never removes jars that are no longer wanted
        shutil.rmtree(libs(settings), ignore_errors=True)
        libs(settings).mkdir(parents=True, exist_ok=True)
        programs.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs(settings)}",
                f"-Dkafka.version={settings.local.kafka_version}",
            ],
            f"resolving Kafka {settings.local.kafka_version} from Maven Central",
        )
        jar = libs(settings) / f"kafka_2.13-{settings.local.kafka_version}.jar"
        if not jar.exists():
            raise ConfigurationError(
                f"Maven finished but {jar} is missing; is CHATBUS_KAFKA_VERSION "
                f"({settings.local.kafka_version}) a released Kafka version?"
            )
        programs.write_marker(marker, stamp)

    # --- config and storage -----------------------------------------------------------------

    def properties_file(self, settings: Settings) -> Path:
        return self.data_dir(settings) / "server.properties"

    def log4j_file(self, settings: Settings) -> Path:
        return self.data_dir(settings) / "log4j2.properties"

    def prepare(self, settings: Settings) -> None:
        base = self.data_dir(settings)
        nodes = settings.local.kafka_brokers
        # a node's log of each topology apart: switching between one node and three keeps both
        data = base / ("data" if nodes == 1 else f"data-{nodes}-nodes")
        logs = settings.log_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        host = ports.HOST
        secure = _prepare_secure_listener(base)
        voters = ",".join(
            f"{n}@{host}:{Kafka(n).controller_port(settings)}" for n in range(1, nodes + 1)
        )
        replicas = str(min(3, nodes))
        min_isr = "2" if nodes >= 3 else "1"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node),
            "controller.quorum.voters": voters,
            "listeners": (
                f"PLAINTEXT://{host}:{self.client_port(settings)},"
                f"CONTROLLER://{host}:{self.controller_port(settings)},"
                f"SECURE://{host}:{self.secure_port(settings)}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{host}:{self.client_port(settings)},"
                f"SECURE://{host}:{self.secure_port(settings)}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SECURE:SASL_SSL"
            ),
            # SECURE: what a managed cluster looks like (SASL PLAIN over TLS), so the clients'
            # secure path is tested against a real broker
            "listener.name.secure.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.secure.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{secure.username}" password="{secure.password}" '
                f'user_{secure.username}="{secure.password}";'
            ),
            "listener.name.secure.ssl.keystore.type": "PEM",
            "listener.name.secure.ssl.keystore.location": str(secure.tls.server_pem),
            "log.dirs": str(data),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            # a dead node's partitions get new leaders in ~3 s, not the 9 s default
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
            # lets the inference group notice a dead worker in 1.5 s (CHATBUS_WORKER_SESSION_*)
            "group.min.session.timeout.ms": "1000",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        text = "# written by infra/local/kafka.py on every start; edit that file instead\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_file(settings).write_text(text)
        log_file = logs / f"{self.name}-server.log"
        self.log4j_file(settings).write_text(LOG4J2.format(log_file=log_file))
        if (data / "meta.properties").exists():
            return
        cluster_id = random_cluster_id() if nodes == 1 else shared_cluster_id(settings)
        say(f"formatting Kafka storage in {data} (cluster {cluster_id})…")
        programs.run(
            [
                *self._java(settings),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.properties_file(settings)),
                "--ignore-formatted",
            ],
            "formatting Kafka storage",
        )

    def _java(self, settings: Settings) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file(settings)}",
            f"-Dkafka.logs.dir={settings.log_dir.resolve()}",
            "-cp",
            f"{libs(settings)}/*",
        ]

    def command(self, settings: Settings) -> Command:
        return Command(
            argv=[*self._java(settings), "kafka.Kafka", str(self.properties_file(settings))],
            cwd=self.data_dir(settings),
        )

    # --- health -----------------------------------------------------------------------------

    def check(self, settings: Settings, timeout: float) -> str:
        if not ports.is_open(self.client_port(settings), timeout=min(timeout, 1.0)):
            raise ServiceUnavailable(f"nothing listens on {self.address(settings)}")
        cluster = asyncio.run(describe_cluster(self.address(settings), timeout))
        brokers = cluster.get("brokers") or []
        if not brokers:
            raise ServiceUnavailable("metadata lists no brokers yet")
        return f"cluster {cluster.get('cluster_id')}, {len(brokers)} broker(s)"


@dataclass(frozen=True)
class SecureCredentials:
    username: str
    password: str
    tls: ServerTLS


def _prepare_secure_listener(base: Path) -> SecureCredentials:
    """The SECURE listener's user, password (made once, 0600) and TLS certificate."""
    folder = base / "secure"
    folder.mkdir(parents=True, exist_ok=True)
    password_file = folder / "password"
    if not password_file.exists():
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(24))
    return SecureCredentials(
        username=SECURE_USER,
        password=password_file.read_text().strip(),
        tls=ensure_server_tls(folder, "chatbus-kafka"),
    )


def secure_client_settings(settings: Settings) -> dict[str, Any]:
    """Settings fields of a client of the local broker's SASL_SSL listener (after `make up`)."""
    folder = Kafka().data_dir(settings) / "secure"
    if not (folder / "password").exists():
        raise ServiceUnavailable("the local Kafka has no SECURE listener yet; run `make up`")
    return {
        "kafka_bootstrap": f"{ports.HOST}:{settings.local.kafka_secure_port}",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": SECURE_USER,
        "kafka_sasl_password": (folder / "password").read_text().strip(),
        "kafka_ssl_cafile": folder / "ca.pem",
    }


async def describe_cluster(bootstrap: str, seconds: float) -> dict[str, Any]:
    """One metadata round trip through aiokafka's admin client."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="chatbus-infra-health",
        request_timeout_ms=int(seconds * 1000),
    )
    try:
        async with asyncio.timeout(seconds):
            await admin.start()
            return await admin.describe_cluster()
    finally:
        await admin.close()


LOG4J2 = """\
# written by infra/local/kafka.py on every start
status = warn
name = chatbus-kafka

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""
