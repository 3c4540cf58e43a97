"""The local single-node Kafka broker (KRaft): `langerhans kafka up|down|status`.

Apache Kafka's jars come from Maven Central through `deploy/kafka/pom.xml` (fetched into
`deploy/kafka/lib/` on first use). The broker is both broker and controller, listens on
127.0.0.1:19092 (controller 19093) and keeps its data under `var/kafka/`. Only Java 17 and
Maven are needed. When `KAFKA_BOOTSTRAP_SERVERS` names another cluster, `up` only checks
that it answers and starts nothing.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import DEFAULT_KAFKA_BOOTSTRAP, REPO_ROOT, var_dir

__all__ = [
    "LOCAL_BOOTSTRAP",
    "KafkaPaths",
    "bootstrap_servers",
    "broker_reachable",
    "ensure_kafka",
    "kafka_command",
    "kafka_down",
    "kafka_status",
    "kafka_up",
    "uses_local_broker",
]

LOCAL_BOOTSTRAP = DEFAULT_KAFKA_BOOTSTRAP
LOCAL_HOST = "127.0.0.1"
BROKER_PORT = 19092
CONTROLLER_PORT = 19093
KAFKA_DIR = REPO_ROOT / "deploy" / "kafka"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# The machine is small and shared: a modest heap and few threads are plenty for one node.
JVM_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


@dataclass(frozen=True)
class KafkaPaths:
    """Where the local broker keeps its jars, configuration, data, pid and log."""

    root: Path

    @classmethod
    def default(cls) -> KafkaPaths:
        return cls(var_dir() / "kafka")

    @property
    def lib(self) -> Path:
        return KAFKA_DIR / "lib"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"


def bootstrap_servers() -> str:
    """The configured bootstrap servers (`KAFKA_BOOTSTRAP_SERVERS`), local broker by default."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or LOCAL_BOOTSTRAP


def uses_local_broker() -> bool:
    """True unless `KAFKA_BOOTSTRAP_SERVERS` points somewhere other than our local broker."""
    servers = {s.strip() for s in bootstrap_servers().split(",") if s.strip()}
    return servers <= {LOCAL_BOOTSTRAP, f"localhost:{BROKER_PORT}"}


def broker_reachable(servers: str | None = None, timeout_s: float = 5.0) -> bool:
    """Whether a broker answers a metadata request within `timeout_s`."""
    from kafka import KafkaAdminClient

    timeout_ms = max(int(timeout_s * 1000), 500)
    kafka_logger = logging.getLogger("kafka")
    previous_level = kafka_logger.level
    # Connection refusals while the broker boots are expected; keep them off the console.
    kafka_logger.setLevel(logging.CRITICAL)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers or bootstrap_servers(),
            client_id="langerhans-readiness",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=500,
        )
    except Exception:
        return False
    else:
        try:
            cluster = admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except Exception:
            return False
        finally:
            admin.close()
    finally:
        kafka_logger.setLevel(previous_level)


def _read_pid(paths: KafkaPaths) -> int | None:
    """The pid of our running broker, or None (a stale pid file is removed)."""
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        alive = True
    except OSError:
        cmdline, alive = b"", False
    # Right after exec the cmdline is briefly empty; any other program means a reused pid.
    if not alive or (cmdline and b"kafka.Kafka" not in cmdline):
        paths.pid_file.unlink(missing_ok=True)
        return None
    return pid


@contextlib.contextmanager
def _locked(paths: KafkaPaths) -> Iterator[None]:
    """Serialise up/down between processes (several test sessions may start at once)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_jars(paths: KafkaPaths) -> None:
    """Fetch the jars named by deploy/kafka/pom.xml, again whenever the pom changes."""
    pom = KAFKA_DIR / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = paths.lib / ".pom.sha256"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed to fetch Apache Kafka into deploy/kafka/lib")
    print("kafka: fetching Apache Kafka and its dependencies with mvn…", flush=True)
    # Stale jars from an older pom (say a second slf4j-api) would shadow the right ones.
    for jar in paths.lib.glob("*.jar"):
        jar.unlink()
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"],
        check=True,
        cwd=REPO_ROOT,
    )
    stamp.write_text(digest + "\n")


def server_properties(paths: KafkaPaths) -> str:
    """KRaft single-node configuration: one process is broker and controller."""
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{LOCAL_HOST}:{CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://{LOCAL_HOST}:{BROKER_PORT},CONTROLLER://{LOCAL_HOST}:{CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{BROKER_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(paths.data),
        # Topics are declared in services/runtime/topics.py; a typo must fail, not create one.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Two cores: few threads.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        "delete.topic.enable": "true",
    }
    header = "# Written by `langerhans kafka up`; edits are overwritten.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("Java 17 is needed to run the local Kafka broker")
    return java


def _classpath(paths: KafkaPaths) -> str:
    return str(paths.lib / "*")


def _format_storage(paths: KafkaPaths) -> None:
    """Format the KRaft log directory once; a formatted directory has meta.properties."""
    if (paths.data / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    print(f"kafka: formatting storage in {paths.data} (cluster id {cluster_id})", flush=True)
    result = subprocess.run(
        [
            _java(),
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={paths.logs}",
            "-cp",
            _classpath(paths),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(paths.properties),
        ],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def _start_process(paths: KafkaPaths) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    with paths.console_log.open("ab") as console:
        process = subprocess.Popen(
            [
                _java(),
                *JVM_OPTS,
                f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
                f"-Dkafka.logs.dir={paths.logs}",
                "-cp",
                _classpath(paths),
                "kafka.Kafka",
                str(paths.properties),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            # Detached: the broker outlives the command (and a Ctrl-C in the terminal).
            start_new_session=True,
        )
    paths.pid_file.write_text(f"{process.pid}\n")
    return process.pid


def _wait_ready(paths: KafkaPaths, pid: int, timeout_s: float) -> bool:
    started = time.monotonic()
    last_report = started
    while time.monotonic() - started < timeout_s:
        if _read_pid(paths) != pid:
            return False
        if broker_reachable(LOCAL_BOOTSTRAP, timeout_s=2.0):
            return True
        now = time.monotonic()
        if now - last_report >= 5.0:
            print(f"kafka: waiting for the broker… {now - started:.0f} s", flush=True)
            last_report = now
        time.sleep(0.5)
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kafka_up(paths: KafkaPaths | None = None, timeout_s: float = STARTUP_TIMEOUT_S) -> int:
    """Start the local broker (or check the configured cluster); 0 when it answers."""
    if not uses_local_broker():
        servers = bootstrap_servers()
        if broker_reachable(servers, timeout_s=10.0):
            print(f"kafka: using the existing cluster at {servers} (KAFKA_BOOTSTRAP_SERVERS)")
            return 0
        print(f"kafka: the cluster at {servers} (KAFKA_BOOTSTRAP_SERVERS) does not answer")
        return 1
    paths = paths or KafkaPaths.default()
    with _locked(paths):
        pid = _read_pid(paths)
        if pid is not None and broker_reachable(LOCAL_BOOTSTRAP, timeout_s=5.0):
            print(f"kafka: already running at {LOCAL_BOOTSTRAP} (pid {pid})")
            return _reconcile_declared_topics()
        if pid is None and broker_reachable(LOCAL_BOOTSTRAP, timeout_s=2.0):
            print(f"kafka: a broker already answers at {LOCAL_BOOTSTRAP} (not started by us)")
            return _reconcile_declared_topics()
        started = time.monotonic()
        if pid is None:
            _ensure_jars(paths)
            paths.root.mkdir(parents=True, exist_ok=True)
            paths.properties.write_text(server_properties(paths))
            _format_storage(paths)
            print(f"kafka: starting the local broker at {LOCAL_BOOTSTRAP}…", flush=True)
            pid = _start_process(paths)
        else:
            print(f"kafka: broker process {pid} exists but is not answering yet; waiting")
        if not _wait_ready(paths, pid, timeout_s):
            print(
                f"kafka: the broker did not become ready within {timeout_s:.0f} s; "
                f"last lines of {paths.console_log}:\n{_tail(paths.console_log)}",
                file=sys.stderr,
            )
            return 1
        elapsed_s = time.monotonic() - started
        print(f"kafka: ready at {LOCAL_BOOTSTRAP} in {elapsed_s:.1f} s (pid {pid})")
        return _reconcile_declared_topics()


def _reconcile_declared_topics() -> int:
    from services.runtime.topics import reconcile_topics_command

    return reconcile_topics_command(quiet=True)


def kafka_down(paths: KafkaPaths | None = None, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Stop the local broker: SIGTERM (controlled shutdown), then SIGKILL after `timeout_s`."""
    if not uses_local_broker():
        print("kafka: KAFKA_BOOTSTRAP_SERVERS names an existing cluster; nothing to stop")
        return 0
    paths = paths or KafkaPaths.default()
    with _locked(paths):
        pid = _read_pid(paths)
        if pid is None:
            print("kafka: not running")
            return 0
        print(f"kafka: stopping the broker (pid {pid})…", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _read_pid(paths) == pid:
            time.sleep(0.2)
        if _read_pid(paths) == pid:
            print("kafka: no clean stop in time; killing", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        paths.pid_file.unlink(missing_ok=True)
        print("kafka: stopped")
        return 0


def kafka_status(paths: KafkaPaths | None = None) -> int:
    """Print whether the broker runs and answers; 0 when it answers."""
    servers = bootstrap_servers()
    reachable = broker_reachable(servers, timeout_s=5.0)
    if not uses_local_broker():
        state = "answers" if reachable else "does NOT answer"
        print(f"kafka: existing cluster {servers} (KAFKA_BOOTSTRAP_SERVERS) {state}")
        return 0 if reachable else 1
    paths = paths or KafkaPaths.default()
    pid = _read_pid(paths)
    process = f"pid {pid}" if pid is not None else "no local process"
    state = "answers" if reachable else "not answering"
    print(f"kafka: {servers} {state} ({process}; data in {paths.data}, log {paths.logs})")
    return 0 if reachable else 1


def ensure_kafka() -> str:
    """Make sure a broker answers (starting the local one if needed); return bootstrap servers."""
    if kafka_up() != 0:
        raise RuntimeError(f"Kafka at {bootstrap_servers()} is not available")
    return bootstrap_servers()


def kafka_command(action: str) -> int:
    """Entry point of `langerhans kafka up|down|status`."""
    if action == "up":
        return kafka_up()
    if action == "down":
        return kafka_down()
    if action == "status":
        return kafka_status()
    print(f"kafka: unknown action {action!r} (up, down, status)", file=sys.stderr)
    return 2
