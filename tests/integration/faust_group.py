"""Helpers of the tests that run :mod:`tests.integration.faust_member`
processes as one consumer group on the real broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from app.worker.faust_corrections.exit_policy import EXIT_RESTART
from infra.broker import create_topics
from tests.waiting import wait_for


async def _produce(
    bootstrap: str, topic: str, per_partition: int, partitions: int
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"%d" % i, key=b"k%d" % i, partition=p)
            for i in range(per_partition)
            for p in range(partitions)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, per_partition: int, partitions: int) -> None:
    """Append ``per_partition`` records to each partition of ``topic``."""
    asyncio.run(_produce(bootstrap, topic, per_partition, partitions))


def new_topic(bootstrap: str, partitions: int, prefix: str = "member") -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(bootstrap, [NewTopic(topic, partitions, 1)]))
    return topic


async def _ends_and_committed(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[list[int], list[int | None]]:
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await probe.end_offsets(tps)
        return [ends[tp] for tp in tps], [await probe.committed(tp) for tp in tps]
    finally:
        await probe.stop()


@dataclass
class Group:
    """Members of one consumer group on one topic; each member's processed
    records in its own file."""

    bootstrap: str
    topic: str
    workdir: Path
    partitions: int = 4
    group: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:8]}")
    members: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Members that exited with 75 (the skip guard) and were started again.
    restarts: int = 0
    _count: int = 0
    _stopped: set[int] = field(default_factory=set)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self._count += 1
        n = self._count
        log = (self.workdir / f"member-{n}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.faust_member",
                self.bootstrap,
                self.topic,
                self.group,
                str(self.workdir / f"member-{n}.out"),
                str(self.workdir / f"data-{n}"),
                "--partitions",
                str(self.partitions),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.members.append(proc)
        threading.Thread(target=self._supervise, args=(proc, args), daemon=True).start()
        return proc

    def _supervise(self, proc: subprocess.Popen[bytes], args: tuple[str, ...]) -> None:
        """Start a member that asks for it (exit code 75) again, as the
        worker's supervisor would."""
        if proc.wait() == EXIT_RESTART and proc.pid not in self._stopped:
            self.restarts += 1
            self.start(*args)

    @property
    def started(self) -> int:
        """How many members were started (their numbers run from 1)."""
        return self._count

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        self._stopped.add(proc.pid)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in list(self.members):
            self.stop(proc, signal.SIGKILL)

    def processed(self) -> dict[int, list[int]]:
        """Offsets handed to the batch handler, per partition, in file order
        (member by member)."""
        seen: dict[int, list[int]] = {p: [] for p in range(self.partitions)}
        for out in sorted(self.workdir.glob("member-*.out")):
            for line in out.read_text().splitlines():
                p, o = line.split()[:2]
                seen[int(p)].append(int(o))
        return seen

    def first_offsets(self, member: int) -> dict[int, int]:
        """The first offset member ``member`` (1-based) processed per partition."""
        first: dict[int, int] = {}
        out = self.workdir / f"member-{member}.out"
        for line in out.read_text().splitlines() if out.exists() else ():
            p, o = (int(x) for x in line.split()[:2])
            first.setdefault(p, o)
        return first

    def ends_and_committed(self) -> tuple[list[int], list[int | None]]:
        return asyncio.run(
            _ends_and_committed(self.bootstrap, self.group, self.topic, self.partitions)
        )

    def missing(self) -> dict[int, list[int]]:
        """Offsets below the end of the log that no member processed."""
        ends, _ = self.ends_and_committed()
        seen = self.processed()
        return {
            p: sorted(set(range(ends[p])) - set(seen[p]))[:20]
            for p in range(self.partitions)
            if set(range(ends[p])) - set(seen[p])
        }

    def wait_committed_to_end(self, timeout_s: float) -> None:
        """Until every partition's committed offset is its end offset."""
        wait_for(
            self.ends_and_committed,
            accept=lambda got: all(c == e for e, c in zip(*got, strict=True)),
            timeout_s=timeout_s,
            interval_s=1.0,
            what="every partition committed to its end (ends, committed)",
        )


def summary(values: Iterable[object], sep: str = ", ") -> str:
    return sep.join(str(v) for v in values)


def alive(procs: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    return [p.pid for p in procs if p.poll() is None]
