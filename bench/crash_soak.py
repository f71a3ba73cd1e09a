"""Crash soak: the SIGKILL scenario of tests/reliability, repeated over seeds.

Each run starts its own embedded broker, Redis, API and worker; feeds 20,000
attempts at ~1,000/s while the worker is SIGKILLed three times at random
moments (the second restart with its RocksDB folder deleted); then compares
every row with the oracle. ``--cluster`` runs it on three Apache Kafka brokers
(replication factor 3, ``min.insync.replicas=2``; ``make soak-cluster``)
instead of one, slower to fit Kafka's timings: kills 20-25 s apart, the
attempts fed at ~300/s, the worker's group session 10 s. Between kills it
prints the changelog records per partition and the group's committed
offsets; at the end of each run, how often the worker restarted itself (skip
guard). For finding and
re-checking restart bugs, not a unit test:

    .venv/bin/python -m bench.crash_soak --seeds 31-38 [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.devstack.stack import DevStack
from infra.settings import Settings
from tests.integration.helpers import wait_until_rows_match
from tests.reliability.cluster import cluster_stack
from tests.reliability.crashes import committed_offsets, sigkill_three_times

PREFIX = "soak"


async def _inspect(bootstrap: str, partitions: int) -> str:
    changelog = f"{PREFIX}-worker-registration-state-changelog"
    tps = [TopicPartition(changelog, p) for p in range(partitions)]
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    counts = dict.fromkeys(range(partitions), 0)
    try:
        if changelog not in await reader.topics():
            # Not created by the worker yet. Asking for it by name would let
            # a broker with auto.create.topics.enable create it with one
            # partition, and the worker would then die on "Unrecognized
            # partition" (exit 70), as the first cluster soak did.
            return "no changelog yet"
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, 0)
        while batch := await reader.getmany(timeout_ms=700):
            for tp, records in batch.items():
                counts[tp.partition] += len(records)
    finally:
        await reader.stop()
    committed = await committed_offsets(
        bootstrap, f"{PREFIX}-worker", f"{PREFIX}.registration-events.v1", partitions
    )
    return f"changelog records {counts}, committed {committed}"


@contextlib.contextmanager
def _stack(log_dir: Path, *, cluster: bool) -> Iterator[DevStack]:
    if cluster:
        # A SIGKILLed worker stays a group member for its session: 10 s, not
        # the Kafka profile's 30 s, so that the restarted worker is
        # processing again before the next kill.
        with cluster_stack(log_dir, PREFIX, session_timeout_s=10.0) as stack:
            yield stack
        return
    settings = Settings(api_port=0, topic_partitions=4, topic_prefix=PREFIX)
    with DevStack(settings, log_dir=log_dir) as stack:
        stack.start_servers()
        stack.start_api()
        yield stack


def run(seed: int, log_dir: Path, *, cluster: bool = False) -> bool:
    log_dir.mkdir(parents=True, exist_ok=True)
    with _stack(log_dir, cluster=cluster) as stack:
        boot = stack.kafka.bootstrap_servers
        workload = sigkill_three_times(
            stack,
            random.Random(seed),
            # The cluster's workers take ~10 s from start to processing.
            between=(20.0, 25.0) if cluster else (6.0, 9.0),
            per_second=300 if cluster else 1000,
            after_kill=lambda proc: print(
                f"  killed {proc.pid}: {asyncio.run(_inspect(boot, 4))}", flush=True
            ),
        )
        try:
            wait_until_rows_match(
                stack,
                workload,
                [*workload.registrations, *workload.attempts],
                per_page=100,
                # On Kafka a SIGKILLed worker stays a group member until its
                # 60 s session times out, and a restarted one waits for it.
                timeout_s=300 if cluster else 120,
            )
            ok = True
        except AssertionError as exc:
            print(f"  FAIL {str(exc)[:300]}", flush=True)
            ok = False
        print(f"  end: {asyncio.run(_inspect(boot, 4))}", flush=True)
    log = (log_dir / "worker-1.log").read_text(errors="replace")
    guard = log.count("RecordsSkipped")
    print(
        f"seed {seed}: {'PASS' if ok else 'FAIL'}; restarts by the skip guard "
        f"{guard}; logs in {log_dir}",
        flush=True,
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1-5", help="e.g. 1-5 or 3,7,9")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="three Kafka brokers (RF 3, min.insync.replicas=2) instead of one",
    )
    args = parser.parse_args()
    seeds: list[int] = []
    for part in args.seeds.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    base = Path(tempfile.mkdtemp(prefix="crash-soak-"))
    results = [run(seed, base / f"seed-{seed}", cluster=args.cluster) for seed in seeds]
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
