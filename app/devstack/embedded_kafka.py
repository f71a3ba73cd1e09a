"""Apache Kafka on loopback: the broker that dev, tests, CI and benchmarks run.

The broker is the real one: ``org.apache.kafka:kafka_2.13`` from Maven
Central, resolved once by ``mvn`` from ``app/devstack/kafka-pom.xml`` into
``~/.cache/mastery/kafka-<version>/`` (:class:`KafkaDistribution`), then run
offline as JVM processes in KRaft mode (:class:`KafkaCluster`): one combined
broker+controller for the demo and the tests, three for the fault tests
(replication factor 3, ``min.insync.replicas=2``). Storage is formatted in a
temporary folder and survives a restart of a node, as on a real server; the
folder goes when the cluster is stopped, except after a failed start, whose
log is kept and named in the error.

Production never uses this module: it sets ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.devstack.embedded import EmbeddedServiceError, free_port

__all__ = [
    "KAFKA_VERSION",
    "EmbeddedKafka",
    "KafkaCluster",
    "KafkaDistribution",
    "KafkaNode",
]

#: The Apache Kafka release we run, test and measure on (docs/operations.md,
#: "Running on Kafka"). The newest 4.x served that aiokafka 0.14 and
#: faust-streaming 0.15 work with.
KAFKA_VERSION = "4.4.0"
#: Java the broker needs (Kafka 4 brokers require 17).
JAVA_MAJOR = 17
_POM = Path(__file__).with_name("kafka-pom.xml")
#: How long a node may take to answer metadata after its JVM started.
START_TIMEOUT_S = 60.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class KafkaDistribution:
    """The broker's jars in a cache outside the work tree, fetched once."""

    version: str = KAFKA_VERSION
    cache_root: Path = field(default_factory=lambda: Path.home() / ".cache" / "mastery")

    @property
    def home(self) -> Path:
        return self.cache_root / f"kafka-{self.version}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    def is_fetched(self) -> bool:
        return (self.home / "complete").is_file()

    @property
    def class_archive(self) -> Path:
        """A class-data-sharing archive of the broker's classes (AppCDS):
        a node starts in about 60 % of the time with it (docs/performance.md,
        "Starting Apache Kafka"), and the nodes of a cluster share its pages.
        A JVM that cannot use it (another JDK build) ignores it."""
        return self.home / "broker-classes.jsa"

    def build_class_archive(self) -> None:
        """Start and stop a node once with ``-XX:ArchiveClassesAtExit``."""
        if self.class_archive.exists():
            return
        staging = self.home / f".broker-classes-{os.getpid()}.jsa"
        _say("  recording the broker's classes for faster starts (once) ...")
        cluster = KafkaCluster(
            1, distribution=self, jvm_args=[f"-XX:ArchiveClassesAtExit={staging}"]
        )
        try:
            cluster.start()
        finally:
            cluster.stop()  # the archive is written as the JVM exits
        if staging.exists():
            staging.replace(self.class_archive)

    @staticmethod
    def java() -> str:
        """The ``java`` to run the broker with, or one clear error."""
        java = shutil.which("java")
        if java is None:
            raise EmbeddedServiceError(
                f"the embedded Apache Kafka broker needs Java {JAVA_MAJOR}+ and no "
                "`java` is on PATH: install a JDK or JRE (Debian: apt-get install "
                f"openjdk-{JAVA_MAJOR}-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS "
                "to a running Kafka"
            )
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, check=False
        )
        found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
        major = 0
        if found:
            major = int(found.group(1))
            if major == 1 and found.group(2):  # "1.8.0_x" is Java 8
                major = int(found.group(2))
        if major < JAVA_MAJOR:
            raise EmbeddedServiceError(
                f"the embedded Apache Kafka broker needs Java {JAVA_MAJOR}+, and "
                f"`{java}` is Java {major or 'of unknown version'}: install "
                f"openjdk-{JAVA_MAJOR}-jre-headless (Debian) or put a newer java "
                "first on PATH"
            )
        return java

    def fetch(self) -> KafkaDistribution:
        """Resolve the jars with Maven unless they are cached (offline then)."""
        if self.is_fetched():
            return self
        mvn = shutil.which("mvn")
        if mvn is None:
            raise EmbeddedServiceError(
                f"Apache Kafka {self.version} is not in {self.home} yet and fetching "
                "it needs Maven: install it (Debian: apt-get install maven), or set "
                "KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
            )
        self.cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".kafka-{self.version}-", dir=self.cache_root)
        )
        _say(
            f"fetching Apache Kafka {self.version} from Maven Central into "
            f"{self.home} (once; ~45 MB) ..."
        )
        started = time.monotonic()
        argv = [
            mvn,
            "--batch-mode",
            "--quiet",
            "--file",
            str(_POM),
            f"-Dkafka.version={self.version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging / 'libs'}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise EmbeddedServiceError(
                f"`mvn` could not fetch Apache Kafka {self.version} (exit "
                f"{done.returncode}): {' | '.join(tail) or 'no output'}"
            )
        (staging / "complete").write_text(self.version + "\n")
        with contextlib.suppress(FileExistsError, OSError):
            # Another process may have finished first: keep its copy.
            staging.rename(self.home)
        shutil.rmtree(staging, ignore_errors=True)
        if not self.is_fetched():
            raise EmbeddedServiceError(
                f"could not install Apache Kafka into {self.home}"
            )
        jars = len(list(self.libs.glob("*.jar")))
        _say(
            f"  Apache Kafka {self.version}: {jars} jars in "
            f"{time.monotonic() - started:.0f} s"
        )
        with contextlib.suppress(EmbeddedServiceError):
            self.build_class_archive()  # an optimisation: never fatal
        return self


_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaConfig
        level: WARN
      - name: org.apache.kafka.common.config.AbstractConfig
        level: WARN
      - name: org.apache.kafka.clients
        level: WARN
"""


def _cluster_id() -> str:
    """A random Kafka Uuid in its base64 form, as ``kafka-storage
    random-uuid`` makes one: never starting with '-', which the storage
    tool's argument parser would take for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class KafkaNode:
    """One combined broker+controller JVM of a :class:`KafkaCluster`."""

    node_id: int
    port: int
    controller_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Listeners beyond the plaintext one: name -> port (e.g. SASL_SSL).
    extra_ports: dict[str, int] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """``kill -9``: no controlled shutdown, as after a machine failure."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self, timeout_s: float = 20.0) -> None:
        """A controlled shutdown (SIGTERM), SIGKILL after ``timeout_s``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused node cannot stop
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


class KafkaCluster:
    """``nodes`` Apache Kafka processes in KRaft mode on loopback.

    Every node is a combined broker and controller (the controllers form the
    quorum). With three nodes, topics default to replication factor 3 and
    ``min.insync.replicas=2``. ``config`` adds or overrides broker settings;
    ``listeners`` adds listeners (name -> (security protocol, extra
    settings)), each on a free port per node; ``format_args`` is passed to
    ``kafka-storage format`` (e.g. SCRAM credentials).
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        heap_mb: int = 512,
        config: Mapping[str, str] | None = None,
        listeners: Mapping[str, str] | None = None,
        format_args: list[str] | None = None,
        distribution: KafkaDistribution | None = None,
        port: int = 0,
        jvm_args: list[str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.distribution = distribution or KafkaDistribution()
        self.heap_mb = heap_mb
        self.config = dict(config or {})
        self.listeners = dict(listeners or {})
        self.format_args = list(format_args or [])
        self.jvm_args = list(jvm_args or [])
        self.workdir = Path(tempfile.mkdtemp(prefix="mastery-kafka-"))
        self.cluster_id = _cluster_id()
        self.nodes = [
            KafkaNode(
                node_id=i + 1,
                port=(port if i == 0 and port else free_port()),
                controller_port=free_port(),
                workdir=self.workdir / f"node-{i + 1}",
                extra_ports={name: free_port() for name in self.listeners},
            )
            for i in range(nodes)
        ]
        self._java: str | None = None
        #: Seconds the last start() took, JVM launch to metadata answering.
        self.start_seconds = 0.0

    # -- properties --------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def bootstrap_for(self, listener: str) -> str:
        """Bootstrap servers of an extra listener (``listeners``)."""
        return ",".join(f"127.0.0.1:{n.extra_ports[listener]}" for n in self.nodes)

    @property
    def port(self) -> int:
        """The first node's plaintext port."""
        return self.nodes[0].port

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The first node's process."""
        return self.nodes[0].proc

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def server_properties(self, node: KafkaNode) -> dict[str, str]:
        voters = ",".join(
            f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes
        )
        replicas = min(3, len(self.nodes))
        listeners = [
            f"PLAINTEXT://127.0.0.1:{node.port}",
            f"CONTROLLER://127.0.0.1:{node.controller_port}",
        ]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, protocol in self.listeners.items():
            listeners.append(f"{name}://127.0.0.1:{node.extra_ports[name]}")
            advertised.append(f"{name}://127.0.0.1:{node.extra_ports[name]}")
            protocols.append(f"{name}:{protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(node.data_dir),
            # Kafka's default: tests that produce before any worker created
            # the topics rely on it. deploy/ turns it off;
            # `mastery` creates the system's topics explicitly either way.
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(2 if replicas >= 3 else 1),
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(2 if replicas >= 3 else 1),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(2 if replicas >= 3 else 1),
            # tests and the demo start consumers at once: no 3 s join delay
            "group.initial.rebalance.delay.ms": "0",
            # a 2-core machine: fewer threads than the defaults (3 and 8)
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        props.update(self.config)
        return props

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> KafkaCluster:
        """Fetch the broker if needed, format storage, start every node, and
        return when all of them answer metadata."""
        self.distribution.fetch()
        self._java = self.distribution.java()
        started = time.monotonic()
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            self._write_config(node)
        self._format(self.nodes)
        for node in self.nodes:
            self._launch(node)
        self.wait_ready()
        self.start_seconds = time.monotonic() - started
        return self

    def _write_config(self, node: KafkaNode) -> None:
        node.config_path.write_text(
            "".join(f"{k}={v}\n" for k, v in self.server_properties(node).items())
        )
        (self.workdir / "log4j2.yaml").write_text(_LOG4J2)

    def _format(self, nodes: list[KafkaNode]) -> None:
        """Format every node's storage, the nodes' JVMs side by side."""
        running = []
        for node in nodes:
            argv = [
                self._java or self.distribution.java(),
                "-Xmx256m",
                *self._class_sharing(),
                "-cp",
                self.distribution.classpath,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                self.cluster_id,
                "-c",
                str(node.config_path),
                *self.format_args,
            ]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((node, proc))
        for node, proc in running:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise EmbeddedServiceError(
                    f"formatting Kafka storage of node {node.node_id} failed "
                    f"(exit {proc.returncode}): {out[-1500:]}"
                )

    def _launch(self, node: KafkaNode) -> None:
        argv = [
            self._java or self.distribution.java(),
            f"-Xms{min(128, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExitOnOutOfMemoryError",
            *self._class_sharing(),
            *self.jvm_args,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}",
            "-cp",
            self.distribution.classpath,
            "kafka.Kafka",
            str(node.config_path),
        ]
        with node.log_path.open("ab") as out:
            node.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node.workdir,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not it
                # async-signal-safe enough: one prctl call, no locks taken
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    def _class_sharing(self) -> list[str]:
        archive = self.distribution.class_archive
        if archive.exists() and not any("ArchiveClasses" in a for a in self.jvm_args):
            return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off"]
        return []

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every running node is registered and metadata lists it."""
        deadline = time.monotonic() + timeout_s
        want = {n.node_id for n in self.nodes if n.proc is not None}
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    self._failed(
                        f"Apache Kafka node {node.node_id} exited with code "
                        f"{node.proc.returncode}",
                        node,
                    )
            running = [n for n in self.nodes if n.proc is not None]
            if not all(_listens(n.port) for n in running):
                time.sleep(0.1)
                continue
            try:
                with _quiet("aiokafka"):
                    seen = _run_async(_broker_ids(self.bootstrap_servers))
            except Exception as exc:  # any failure here means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if want <= seen:
                    return
                last_error = f"metadata lists nodes {sorted(seen)}, want {sorted(want)}"
            time.sleep(0.2)
        self._failed(
            f"Apache Kafka did not answer metadata within {timeout_s:.0f} s "
            f"({last_error})",
            self.nodes[0],
        )

    def _failed(self, what: str, node: KafkaNode) -> None:
        """Stop every node, keep the folder with the logs, and raise."""
        for other in self.nodes:
            other.kill()
        tail = ""
        with contextlib.suppress(OSError):
            tail = node.log_path.read_text(errors="replace")[-2000:]
        raise EmbeddedServiceError(
            f"{what}; its log is kept in {node.log_path}:\n{tail}"
        )

    def stop(self) -> None:
        """Stop every node (controlled shutdown) and drop the folder."""
        # All at once: a controller quorum stopped one by one loses its
        # majority and the last nodes wait out their shutdown timeout.
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout_s=20.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill_node(self, node_id: int) -> None:
        self.node(node_id).kill()

    def start_node(self, node_id: int, *, wait: bool = True) -> None:
        """Start a stopped or killed node again on its ports and storage."""
        node = self.node(node_id)
        if node.running:
            return
        self._launch(node)
        if wait:
            self.wait_ready()

    def restart_node(self, node_id: int) -> None:
        """Controlled shutdown, then start again with the same storage."""
        self.node(node_id).stop()
        self.start_node(node_id)

    def pause_node(self, node_id: int) -> None:
        self.node(node_id).signal(signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        self.node(node_id).signal(signal.SIGCONT)

    def restart(self, *, lose_data: bool = False) -> None:
        """``kill -9`` every node and start them again on the same ports.

        ``lose_data`` starts them on freshly formatted storage, as after a
        broker whose disks were lost: every topic and offset is gone
        (docs/operations.md, "The broker restarted empty").
        """
        for node in self.nodes:
            node.kill()
        if lose_data:
            self.cluster_id = _cluster_id()
            for node in self.nodes:
                shutil.rmtree(node.data_dir, ignore_errors=True)
            self._format(self.nodes)
        for node in self.nodes:
            self._launch(node)
        self.wait_ready()

    def rss_bytes(self) -> int:
        """Resident memory of every running node, summed."""
        total = 0
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            with contextlib.suppress(OSError, ValueError):
                for line in (
                    Path(f"/proc/{node.proc.pid}/status").read_text().splitlines()
                ):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: SIGKILL it when the process that started it dies.

    A broker outliving a killed test run or ``mastery dev`` would hold half
    a gigabyte and a core's worth of background threads until someone finds
    it. (Linux: ``PR_SET_PDEATHSIG``; the signal comes when the *thread*
    that started the child ends, so nodes are started from long-lived
    threads.)
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _listens(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=0.2),
    ):
        return True
    return False


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger: a broker that is still starting is no error."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _broker_ids(bootstrap: str) -> set[int]:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(client.bootstrap(), 3.0)
        return {b.nodeId for b in client.cluster.brokers()}
    finally:
        await client.close()


def _run_async(coro: Any) -> Any:
    """Run ``coro`` to completion, also when called from a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class EmbeddedKafka(KafkaCluster):
    """One Apache Kafka node: the broker of ``mastery dev`` and the tests."""

    def __init__(self, *, port: int = 0, **kwargs: Any) -> None:
        super().__init__(1, port=port, **kwargs)


@contextlib.contextmanager
def kafka_cluster(nodes: int = 1, **kwargs: Any) -> Iterator[KafkaCluster]:
    """A started cluster, stopped on exit."""
    cluster = KafkaCluster(nodes, **kwargs).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m app.devstack.embedded_kafka fetch`` fetches the broker (``make
    kafka``); ``... run [NODES]`` runs a cluster until Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args or args[0] == "fetch":
            dist = KafkaDistribution().fetch()
            KafkaDistribution.java()
            print(f"Apache Kafka {dist.version}: {dist.home}", flush=True)
            return 0
        if args[0] == "run":
            with kafka_cluster(int(args[1]) if len(args) > 1 else 1) as cluster:
                print(
                    f"{cluster.bootstrap_servers} (started in "
                    f"{cluster.start_seconds:.1f} s; Ctrl-C stops)",
                    flush=True,
                )
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
            return 0
    except EmbeddedServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 69
    print(
        "usage: python -m app.devstack.embedded_kafka [fetch | run [NODES]]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
