"""Per-event cost of the worker's domain code alone: no Kafka, Faust, RocksDB, Redis.

Replays the ASSISTments training file in the worker's batch shape (records of
one partition at a time, ``--batch`` per batch, partitioned as the producer
does) through exactly what the worker calls per batch: ``processors.batch``
``decode`` + ``fold`` over a dict standing in for the state cache, then,
every ``--checkpoint-every`` batches, ``to_bytes`` of every changed state (the
checkpoint's encoding). Prints the median over ``--repeat`` runs of µs/event
for each part and in total.

In the same runs, every batch is also decoded with pydantic's ``decode_event``
alone (``decode(records, decoder=decode_event)``, in alternating order with
the worker's decode), to show what the fast path of schemas/event_codec.py
saves; that reference is not part of the total.

    .venv/bin/python -m bench.domain [--max-learners N] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections import defaultdict
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from app.devstack.workload import assistments
from processors.batch import Record, decode, fold, registration_ids
from processors.catalog import Catalog
from processors.registration import RegistrationState
from schemas.event_codec import fast_attempt
from schemas.events import decode_event, encode_event

__all__ = ["main", "measure"]

TOPIC = "bench.registration-events.v1"
#: timed in the same runs, not part of the worker's total
REFERENCE = "decode, pydantic only"


def _records(args: argparse.Namespace) -> tuple[Catalog, list[list[Record]], int]:
    w = assistments(args.data, params_path=args.params, max_learners=args.max_learners)
    catalog = Catalog()
    for event in w.catalog:
        catalog.apply(event)
    partitioner, parts = DefaultPartitioner(), list(range(args.partitions))
    logs: dict[int, list[Record]] = defaultdict(list)
    for event in [*w.registrations, *w.attempts]:
        key = event.registration_id.encode()
        p = partitioner(key, parts, parts)
        logs[p].append(Record(TOPIC, p, len(logs[p]), key, encode_event(event)))
    batches = [
        recs[i : i + args.batch]
        for recs in logs.values()
        for i in range(0, len(recs), args.batch)
    ]
    return catalog, batches, sum(len(b) for b in batches)


def measure(
    catalog: Catalog, batches: list[list[Record]], checkpoint_every: int
) -> dict[str, float]:
    """Seconds spent in each part over one replay."""
    pc = time.perf_counter
    spent: dict[str, float] = defaultdict(float)
    states: dict[str, RegistrationState] = {}
    dirty: dict[str, RegistrationState] = {}
    for i, records in enumerate(batches, 1):
        # Alternate which decode meets the batch first (and pays its cache
        # misses); only the worker's decode result is folded.
        if i % 2:
            r0 = pc()
            decode(records, decoder=decode_event)
            spent[REFERENCE] += pc() - r0
        t0 = pc()
        decoded, _ = decode(records)
        t1 = pc()
        if not i % 2:
            r0 = pc()
            decode(records, decoder=decode_event)
            spent[REFERENCE] += pc() - r0
        lookup = {r: states.get(r) for r in registration_ids(decoded)}
        plan = fold(decoded, lookup, catalog)
        states.update(plan.states)
        dirty.update(plan.states)
        t2 = pc()
        spent["decode"] += t1 - t0
        spent["fold (apply, positions, rows)"] += t2 - t1
        if i % checkpoint_every == 0 or i == len(batches):
            t3 = pc()
            for state in dirty.values():
                state.to_bytes()
            dirty.clear()
            spent["checkpoint encoding"] += pc() - t3
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/assistments2009/builder_train.csv"),
    )
    ap.add_argument(
        "--params", type=Path, default=Path("../shared/reference/bkt/params.json")
    )
    ap.add_argument("--max-learners", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--checkpoint-every", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    catalog, batches, n = _records(args)
    # The replay's 400k records stay alive here, unlike in the worker (which
    # holds one batch at a time): keep them out of the garbage collector's
    # generations, or every collection would walk them and bill the domain.
    gc.collect()
    gc.freeze()
    runs = [
        measure(catalog, batches, args.checkpoint_every) for _ in range(args.repeat)
    ]
    fast = sum(fast_attempt(r.value or b"") is not None for b in batches for r in b)
    print(f"{n:,} events in {len(batches)} batches; median of {args.repeat} runs")
    parts = [part for part in runs[0] if part != REFERENCE]

    def per_event(values: list[float]) -> str:
        return f"{statistics.median(values) / n * 1e6:6.2f} µs/event"

    for part in parts:
        print(f"  {part:32s} {per_event([r[part] for r in runs])}")
    total = [sum(r[p] for p in parts) for r in runs]
    print(f"  {'total':32s} {per_event(total)}")
    print(f"without the fast path ({fast:,} of {n:,} records took it):")
    print(f"  {REFERENCE:32s} {per_event([r[REFERENCE] for r in runs])}")
    slow_total = [
        t - r["decode"] + r[REFERENCE] for t, r in zip(total, runs, strict=True)
    ]
    print(f"  {'total':32s} {per_event(slow_total)}")


if __name__ == "__main__":
    main()
