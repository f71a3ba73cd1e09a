"""What starting the embedded Apache Kafka costs: seconds and resident memory.

Starts a one-node and a three-node KRaft cluster ``--runs`` times each (the
jars already fetched), and prints the median seconds from the first JVM
launch (storage formatted first) to metadata answering, and the resident
memory of the JVMs right after the start and after ``--settle`` seconds idle.

    .venv/bin/python -m bench.broker_start --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from app.devstack.embedded_kafka import KAFKA_VERSION, KafkaCluster, KafkaDistribution


def measure(nodes: int, runs: int, settle_s: float) -> dict[str, float]:
    seconds: list[float] = []
    rss_start: list[float] = []
    rss_idle: list[float] = []
    for _ in range(runs):
        began = time.monotonic()
        cluster = KafkaCluster(nodes).start()
        try:
            seconds.append(time.monotonic() - began)
            rss_start.append(cluster.rss_bytes() / 2**20)
            time.sleep(settle_s)
            rss_idle.append(cluster.rss_bytes() / 2**20)
        finally:
            cluster.stop()
    return {
        "seconds": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "rss_start_mb": statistics.median(rss_start),
        "rss_idle_mb": statistics.median(rss_idle),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    KafkaDistribution().fetch()
    print(f"Apache Kafka {KAFKA_VERSION}, {args.runs} runs each")
    print("| nodes | start s (median, min-max) | RSS at start | RSS idle |")
    print("| --- | --- | --- | --- |")
    for nodes in (1, 3):
        m = measure(nodes, args.runs, args.settle)
        print(
            f"| {nodes} | {m['seconds']:.1f} ({m['seconds_min']:.1f}-"
            f"{m['seconds_max']:.1f}) | {m['rss_start_mb']:.0f} MB | "
            f"{m['rss_idle_mb']:.0f} MB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
