"""A second, private Kafka broker for scenarios that restart it (other tests keep theirs).

Same jars, JVM options and configuration as `langerhans kafka up` (services/runtime/
local_kafka.py), but its own ports and data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from services.runtime import local_kafka
from services.runtime.local_kafka import KafkaPaths, broker_reachable

__all__ = ["PrivateBroker"]


class PrivateBroker:
    """One KRaft node on 127.0.0.1:`port` (controller `port`+1) with data under `root`."""

    def __init__(self, root: Path, port: int = 29092) -> None:
        self.paths = KafkaPaths(root)
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.pid: int | None = None
        self.restarts = 0

    def _properties(self) -> str:
        text = local_kafka.server_properties(self.paths)
        text = text.replace(f":{local_kafka.BROKER_PORT}", f":{self.port}")
        return text.replace(f":{local_kafka.CONTROLLER_PORT}", f":{self.port + 1}")

    def start(self, timeout_s: float = 90.0) -> None:
        if self.pid is None and not (self.paths.data / "meta.properties").exists():
            shutil.rmtree(self.paths.root, ignore_errors=True)
            self.paths.root.mkdir(parents=True)
            local_kafka._ensure_jars(self.paths)
            self.paths.properties.write_text(self._properties())
            local_kafka._format_storage(self.paths)
        self.pid = local_kafka._start_process(self.paths)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if broker_reachable(self.bootstrap, timeout_s=2.0):
                return
            time.sleep(0.3)
        raise RuntimeError(f"private broker on {self.bootstrap} did not start")

    def stop(self, *, hard: bool, timeout_s: float = 30.0) -> None:
        """SIGKILL (`hard`) or SIGTERM (controlled shutdown); waits until the process is gone."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                finished = self.pid
            if finished == self.pid:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self.pid = None

    def restart(self, *, hard: bool) -> float:
        """Stop and start again; returns the seconds the broker was unavailable."""
        started = time.monotonic()
        self.stop(hard=hard)
        self.start()
        self.restarts += 1
        return time.monotonic() - started

    def destroy(self) -> None:
        self.stop(hard=True)
        shutil.rmtree(self.paths.root, ignore_errors=True)
