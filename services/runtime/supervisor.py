"""`langerhans run`: the whole platform on one machine.

Starts the local Kafka broker (unless `KAFKA_BOOTSTRAP_SERVERS` points elsewhere), reconciles
the topics, then runs every service, the gateway and a fleet of simulated people, each as its
own process. A crashed process is restarted with backoff. Ctrl-C (or SIGTERM) stops the fleet
first, then the gateway, then the services, then the broker it started: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from services.runtime.settings import DEFAULT_KAFKA_BOOTSTRAP, var_dir

__all__ = ["PLATFORM_PORTS", "ProcessSpec", "Supervisor", "platform_ports", "run_platform"]

# Fixed loopback ports for the one-machine platform: (gRPC, metrics).
PLATFORM_PORTS: dict[str, tuple[int, int]] = {
    "device-gateway": (50051, 9101),
    "cgm-ingestion": (50052, 9102),
    "dosing-engine": (50053, 9103),
    "alerts": (50054, 9104),
    "gateway": (8000, 9105),
}
# Device gateway's hub-facing listeners (mutual-TLS stream, enrolment).
HUB_PORTS: tuple[int, int] = (50061, 50062)
STOP_GRACE_S = 10.0
MAX_RESTART_BACKOFF_S = 30.0


@dataclass
class ProcessSpec:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_order: int = 0  # lower stops first


@dataclass
class _Child:
    spec: ProcessSpec
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    next_start_monotonic_s: float = 0.0


class Supervisor:
    """Starts, watches and stops a set of child processes, each in its own session."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path) -> None:
        self._children = [_Child(spec) for spec in specs]
        self._log_dir = log_dir
        self._stopping = threading.Event()
        log_dir.mkdir(parents=True, exist_ok=True)

    def _start(self, child: _Child) -> None:
        if child.log_file is None:
            child.log_file = (self._log_dir / f"{child.spec.name}.log").open("ab")
        env = {**os.environ, **child.spec.env}
        # Own session: a terminal Ctrl-C reaches only the supervisor, which then stops the
        # children in a safe order instead of all at once.
        child.process = subprocess.Popen(
            child.spec.argv,
            env=env,
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_all(self) -> None:
        for child in self._children:
            self._start(child)
            _say(f"started {child.spec.name:<16} pid {child.process.pid if child.process else '?'}")

    def watch(self) -> None:
        """Restart crashed children with exponential backoff until asked to stop."""
        while not self._stopping.wait(0.5):
            now = time.monotonic()
            for child in self._children:
                process = child.process
                if process is None or process.poll() is None:
                    if process is None and now >= child.next_start_monotonic_s:
                        self._start(child)
                    continue
                child.restarts += 1
                backoff_s = min(MAX_RESTART_BACKOFF_S, 2.0 ** min(child.restarts, 5))
                _say(
                    f"{child.spec.name} exited with {process.returncode}; restart "
                    f"#{child.restarts} in {backoff_s:.0f} s (log: {self._log_dir}/"
                    f"{child.spec.name}.log)"
                )
                child.process = None
                child.next_start_monotonic_s = now + backoff_s

    def request_stop(self) -> None:
        self._stopping.set()

    def stop_all(self) -> None:
        for order in sorted({child.spec.stop_order for child in self._children}):
            group = [c for c in self._children if c.spec.stop_order == order and c.process]
            for child in group:
                if child.process and child.process.poll() is None:
                    _signal_group(child.process, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for child in group:
                assert child.process is not None
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _say(f"{child.spec.name} did not stop in {STOP_GRACE_S:.0f} s; killing it")
                    _signal_group(child.process, signal.SIGKILL)
                    child.process.wait(timeout=5)
                # Anything the child left in its session goes too.
                _signal_group(child.process, signal.SIGKILL)
                _say(f"stopped {child.spec.name}")
        for child in self._children:
            if child.log_file:
                child.log_file.close()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _say(message: str) -> None:
    print(f"[langerhans run] {message}", flush=True)


def platform_ports(
    port_base: int | None = None,
) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    """(gRPC/HTTP, metrics) per process and the hub ports; `port_base` moves them all (a second
    platform on the same machine, e.g. the smoke test): gateway at base, services base+1…4,
    hub ports base+11/12, metrics base+101…105."""
    if port_base is None:
        return dict(PLATFORM_PORTS), HUB_PORTS
    ports = {
        name: (port_base + offset, port_base + 101 + i)
        for i, (name, offset) in enumerate(
            (
                ("device-gateway", 1),
                ("cgm-ingestion", 2),
                ("dosing-engine", 3),
                ("alerts", 4),
                ("gateway", 0),
            )
        )
    }
    return ports, (port_base + 11, port_base + 12)


def _last_simulated_instant(clock_file: Path) -> datetime:
    """Where the previous run's simulated clock stopped (the epoch if unknown or unreadable)."""
    try:
        saved = json.loads(clock_file.read_text())["last_simulated_instant"]
        instant = datetime.fromisoformat(saved)
    except (OSError, ValueError, KeyError, TypeError):
        return datetime.fromtimestamp(0, UTC)
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def platform_specs(
    people: int,
    speed: float,
    kafka_bootstrap: str,
    *,
    demo_password: str | None = None,
    port_base: int | None = None,
    sim_start: datetime | None = None,
    real_start_epoch_s: float | None = None,
) -> list[ProcessSpec]:
    """The processes of the one-machine platform."""
    ports, (hub_port, enroll_port) = platform_ports(port_base)
    cli = [sys.executable, "-m", "services.cli"]
    clock_env = {
        "LANGERHANS_CLOCK_SPEED": str(speed),
        "LANGERHANS_CLOCK_SIM_START": (sim_start or datetime.now(UTC)).isoformat(),
        "LANGERHANS_CLOCK_REAL_START_EPOCH_S": repr(
            time.time() if real_start_epoch_s is None else real_start_epoch_s
        ),
    }
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        **clock_env,
        **{
            f"LANGERHANS_{name.upper().replace('-', '_')}_ADDR": f"127.0.0.1:{grpc_port}"
            for name, (grpc_port, _) in ports.items()
        },
        "LANGERHANS_HUB_ADDR": f"127.0.0.1:{hub_port}",
        "LANGERHANS_ENROLL_ADDR": f"127.0.0.1:{enroll_port}",
    }
    specs: list[ProcessSpec] = []
    for name, (port, metrics_port) in ports.items():
        env = {
            **common,
            "LANGERHANS_SERVICE_NAME": name,
            "LANGERHANS_GRPC_PORT": str(port),
            "LANGERHANS_HTTP_PORT": str(port),
            "LANGERHANS_METRICS_PORT": str(metrics_port),
        }
        if name == "device-gateway":
            env |= {
                "LANGERHANS_HUB_PORT": str(hub_port),
                "LANGERHANS_ENROLL_PORT": str(enroll_port),
            }
        if port_base is not None and name in ("cgm-ingestion", "dosing-engine", "alerts"):
            # a second platform on the same broker reads the topics in groups of its own
            env["LANGERHANS_CONSUMER_GROUP"] = f"{name}-p{port_base}"
        if name == "gateway" and demo_password is not None:
            # development only: demo accounts for the fleet's people (gateway/demo.py)
            env |= {
                "LANGERHANS_DEMO": "1",
                "LANGERHANS_DEMO_PEOPLE": str(people),
                "LANGERHANS_DEMO_PASSWORD": demo_password,
            }
        specs.append(
            ProcessSpec(name, [*cli, "serve", name], env, stop_order=1 if name == "gateway" else 2)
        )
    specs.append(
        ProcessSpec(
            "fleet",
            [*cli, "edge", "--fleet", str(people)],
            {**common, "LANGERHANS_SERVICE_NAME": "edge-fleet"},
            stop_order=0,
        )
    )
    return specs


def run_platform(people: int | None = None, speed: float | None = None) -> int:
    """Run everything until Ctrl-C; returns the exit code."""
    from services.runtime.local_kafka import broker_reachable, kafka_command
    from services.runtime.topics import reconcile_topics_command

    people = people if people is not None else int(os.environ.get("LANGERHANS_PEOPLE", "5"))
    speed = speed if speed is not None else float(os.environ.get("LANGERHANS_SPEED", "1"))
    external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka_bootstrap = external_kafka or DEFAULT_KAFKA_BOOTSTRAP
    started_kafka = False
    if not external_kafka:
        # A broker that was already running (a test session, another `make run`) is left
        # running on exit; only one started here is stopped.
        started_kafka = not broker_reachable(kafka_bootstrap, timeout_s=2.0)
        if started_kafka:
            _say("starting the local Kafka broker")
        if kafka_command("up") != 0:
            _say("Kafka did not start; see var/kafka/kafka.log")
            return 1
    if reconcile_topics_command() != 0:
        _say("topic reconciliation failed")
        return 1

    log_dir = var_dir() / "log"
    base = os.environ.get("LANGERHANS_PORT_BASE")
    port_base = int(base) if base else None
    ports, _ = platform_ports(port_base)
    # one password for every demo account, new each run unless given (development only)
    demo_password = os.environ.get("LANGERHANS_DEMO_PASSWORD") or secrets.token_urlsafe(12)
    # Simulated time never goes backwards across runs: services keep their state in var/, and
    # an accelerated run that ended hours "ahead" would otherwise make the next run's readings
    # look stale to them.
    clock_file = var_dir() / "run-clock.json"
    sim_start = max(datetime.now(UTC), _last_simulated_instant(clock_file))
    real_start_epoch_s = time.time()
    supervisor = Supervisor(
        platform_specs(
            people,
            speed,
            kafka_bootstrap,
            demo_password=demo_password,
            port_base=port_base,
            sim_start=sim_start,
            real_start_epoch_s=real_start_epoch_s,
        ),
        log_dir,
    )

    def on_signal(signum: int, _frame: object) -> None:
        _say(f"received {signal.Signals(signum).name}; stopping")
        supervisor.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start_all()
        gateway_port = ports["gateway"][0]
        _say(
            "\n"
            f"  web UI and apps API   http://127.0.0.1:{gateway_port}/\n"
            f"  API documentation     http://127.0.0.1:{gateway_port}/docs\n"
            f"  Nightscout API        http://127.0.0.1:{gateway_port}/api/v1/status\n"
            f"  gRPC services         "
            + ", ".join(f"{n} :{p}" for n, (p, _) in ports.items() if n != "gateway")
            + "\n"
            "  Prometheus metrics    " + ", ".join(f":{m}" for _, (_, m) in ports.items()) + "\n"
            f"  Kafka                 {kafka_bootstrap}\n"
            f"  logs                  {log_dir}/\n"
            f"  simulated people      {people} (clock speed ×{speed:g}): "
            f"sim-person-0000 … sim-person-{max(people - 1, 0):04d}\n"
            "  demo accounts         (development only; all with the password below)\n"
            "    person              sim-person-0000@demo.langerhans (one per simulated person)\n"
            "    caregiver           caregiver@demo.langerhans (follows everyone: view, alerts)\n"
            "    clinician           clinician@demo.langerhans (Demo clinic: view, settings)\n"
            f"    password            {demo_password}\n"
            "  Ctrl-C stops everything."
        )
        supervisor.watch()
    finally:
        supervisor.stop_all()
        reached = sim_start + timedelta(seconds=(time.time() - real_start_epoch_s) * speed)
        clock_file.write_text(json.dumps({"last_simulated_instant": reached.isoformat()}))
        if started_kafka:
            _say("stopping the local Kafka broker")
            kafka_command("down")
    _say("all stopped")
    return 0
