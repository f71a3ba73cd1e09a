"""Changelog recovery on Apache Kafka, with table standby replicas 0 and 1.

On a 3-broker cluster (RF 3), two workers fold a bulk load (``--learners``
learners, 5 attempts each) until every offset is committed. Then worker-1 is
SIGKILLed and started again at once with its data folder deleted, so its
table partitions must come back from the changelog alone (``--failover``:
it is not started again, and worker-2 takes its partitions over, from its
standby copy or from the changelog). Measured:

- **restore**: in either worker, each partition assignment after the kill,
  from the assignment to Faust's ``Worker ready``, and the part of it spent
  reading the changelog (their logs);
- **fresh**: from the kill until an attempt sent to *every* partition after
  it shows in its row (probe learners, one per partition, through the API).

Every row is compared with the oracle at the end. Not a test: numbers for
docs/performance.md ("Recovery on Apache Kafka")::

    .venv/bin/python -m bench.recovery --standby 0,1 --learners 20000 \\
        [--session-timeout 10] [--failover]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from app.devstack.stack import DevStack
from app.devstack.workload import Workload, simulated
from infra.topic_names import TopicNames
from schemas.events import AttemptGraded, RegistrationCreated
from tests.integration.helpers import produce, wait_until_rows_match
from tests.reliability.cluster import Prober, cluster_stack, exit_summary
from tests.reliability.crashes import committed_offsets

PARTITIONS = 4
_STAMP = re.compile(r"^(\S+) ")


def _partition(registration_id: str) -> int:
    """aiokafka's default partitioner, as our producers use it."""
    hashed: int = murmur2(registration_id.encode())
    return (hashed & 0x7FFFFFFF) % PARTITIONS


async def _ends(bootstrap: str, topic: str) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


def _wait_committed(stack: DevStack, timeout_s: float = 600.0) -> float:
    """Until the group committed every record of the input; seconds taken."""
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    boot = stack.kafka.bootstrap_servers
    began = time.monotonic()
    ends = asyncio.run(_ends(boot, topic))
    while time.monotonic() - began < timeout_s:
        done = asyncio.run(
            committed_offsets(boot, stack.settings.worker_id, topic, PARTITIONS)
        )
        if done == ends:
            return time.monotonic() - began
        time.sleep(1.0)
    raise SystemExit(f"the load was not committed within {timeout_s:.0f} s")


def _recoveries(log: Path, after: datetime) -> list[tuple[float, float]]:
    """Each partition assignment logged after ``after``: (seconds from the
    assignment to Faust's ``Worker ready``, seconds of it spent reading the
    changelog: ``Restoring state from changelog topics...`` to ``Done
    reading from changelog topics``, 0 when nothing was read)."""
    out: list[tuple[float, float]] = []
    assigned: datetime | None = None
    reading: datetime | None = None
    read = 0.0
    for line in log.read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        try:
            when = datetime.fromisoformat(stamp.group(1)) if stamp else None
        except ValueError:
            when = None
        if when is None or when < after:
            continue
        if "Executing _on_partitions_assigned" in line:
            assigned, reading, read = when, None, 0.0
        elif "Restoring state from changelog topics" in line:
            reading = when
        elif "Done reading from changelog topics" in line and reading is not None:
            read += (when - reading).total_seconds()
            reading = None
        elif "[^---Recovery]: Worker ready" in line and assigned is not None:
            out.append((round((when - assigned).total_seconds(), 2), round(read, 2)))
            assigned = None
    return out


def _changelog_records(stack: DevStack) -> int:
    topic = f"{stack.settings.worker_id}-registration-state-changelog"
    return sum(asyncio.run(_ends(stack.kafka.bootstrap_servers, topic)))


def run(
    standby: int,
    learners: int,
    base: Path,
    session_timeout_s: float | None,
    *,
    restart: bool = True,
) -> str:
    log_dir = base / f"standby-{standby}-{'restart' if restart else 'failover'}"
    log_dir.mkdir(parents=True)
    workload = simulated(
        learning_instances=4,
        learners_per_instance=learners // 4,
        attempts_per_learner=5,
        seed=71,
    )
    probe_regs: dict[int, str] = {}
    for reg in workload.registrations:
        if reg.role == "learner":
            probe_regs.setdefault(_partition(reg.registration_id), reg.registration_id)
    probes = set(probe_regs.values())
    bulk = [a for a in workload.attempts if a.registration_id not in probes]
    # Probe learners get many more attempts than the bulk's five.
    extra = simulated(
        learning_instances=1, learners_per_instance=1, attempts_per_learner=400, seed=3
    ).attempts
    probe_attempts = [
        AttemptGraded.model_validate(
            a.model_dump()
            | {
                "registration_id": reg,
                "attempt_id": f"probe-{reg}-{i}",
                "goal_id": None,
            }
        )
        for reg in sorted(probes)
        for i, a in enumerate(extra)
    ]
    env = {"MASTERY_TABLE_STANDBY_REPLICAS": str(standby)}
    with cluster_stack(
        log_dir,
        f"recovery{standby}",
        partitions=PARTITIONS,
        session_timeout_s=session_timeout_s,
    ) as stack:
        stack.start_worker("worker-1", extra_env=env)
        stack.start_worker("worker-2", extra_env=env)
        produce(stack, [*workload.catalog, *workload.registrations, *bulk])
        loaded = _wait_committed(stack)
        changelog = _changelog_records(stack)
        print(
            f"standby {standby}: {len(bulk):,} attempts of {learners:,} learners "
            f"committed in {loaded:.0f} s; changelog {changelog:,} records",
            flush=True,
        )
        probers = [
            Prober(
                stack,
                workload,
                [a for a in probe_attempts if a.registration_id == reg],
                interval_s=0.5,
                patience_s=240.0,
            ).start()
            for reg in sorted(probes)
        ]
        time.sleep(5)  # probes fresh before the fault
        victim = stack.workers[0]
        killed_at = datetime.now().astimezone()
        t_kill = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        if restart:
            stack.start_worker("worker-1", wipe_data=True, extra_env=env)
        fresh = []
        deadline = time.monotonic() + 300
        for prober in probers:
            while time.monotonic() < deadline:
                shown = [
                    p.sent + p.latency_s
                    for p in prober.probes
                    if p.sent >= t_kill and p.latency_s is not None
                ]
                if shown:
                    fresh.append(min(shown) - t_kill)
                    break
                time.sleep(0.5)
        time.sleep(3)
        for prober in probers:
            prober.stop()
        accepted = {a.attempt_id for p in probers for a in p.accepted()}
        events: list[RegistrationCreated | AttemptGraded] = [
            *workload.registrations,
            *bulk,
            *(a for a in probe_attempts if a.attempt_id in accepted),
        ]
        _match(stack, workload, events)
        restored = [_recoveries(log_dir / f"worker-{n}.log", killed_at) for n in (1, 2)]
        codes = [p.poll() for p in stack.workers]
    all_fresh = f"{max(fresh):.1f}" if len(fresh) == len(probers) else "never"
    line = (
        f"standby {standby}, worker-1 {'restarted' if restart else 'gone'}: "
        f"{learners:,} learners, changelog {changelog:,} records; "
        f"after the kill, (assignment to ready, of which reading the changelog) "
        f"in s: restarted worker-1 {restored[0]}, worker-2 {restored[1]}; "
        "every partition "
        f"fresh {all_fresh} s after the "
        f"kill (per partition {[round(f, 1) for f in fresh]}); rows exact; "
        f"workers {exit_summary(codes)}"
    )
    print(line, flush=True)
    return line


def _match(
    stack: DevStack,
    workload: Workload,
    events: list[RegistrationCreated | AttemptGraded],
) -> None:
    wait_until_rows_match(stack, workload, events, per_page=100, timeout_s=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standby", default="0,1", help="e.g. 0,1")
    parser.add_argument("--learners", type=int, default=20_000)
    parser.add_argument(
        "--failover",
        action="store_true",
        help="worker-1 is not started again: worker-2 takes its partitions over",
    )
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=None,
        help="the workers' group session in s (default: the Kafka profile's 60)",
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="recovery-"))
    lines = [
        run(
            int(s),
            args.learners,
            base,
            args.session_timeout,
            restart=not args.failover,
        )
        for s in args.standby.split(",")
    ]
    print("\n".join(lines))
    print(f"logs in {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
