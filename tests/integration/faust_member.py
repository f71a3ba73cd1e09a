"""A Faust consumer-group member built as the worker builds its app, for the
tests of app/worker/faust_corrections on the real broker.

``python -m tests.integration.faust_member BOOTSTRAP TOPIC GROUP OUT DATADIR
[--without NAME ...]`` consumes ``TOPIC`` with ``take_ready`` (as the worker's
registration agent), keeps a table with a changelog (so each assignment runs
Faust's recovery), commits every second, and appends ``partition offset`` to
``OUT`` for every record it hands to its batch handler (flushed per batch, so
a killed member leaves what it processed), after the worker's skip guard
checked the batch (a skip ends the process with code 75, as in the worker).
``--without`` swaps a correction for Faust's own behaviour; ``--slow-ms``
makes each batch take that long.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import faust

from infra.broker import KAFKA
from tests.switches.without import NAMES, apply


def build(args: argparse.Namespace) -> Any:
    # Imported after the swaps of --without, as the worker is.
    from app.worker.faust_corrections import streams, transport

    app = transport.MasteryApp(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=args.datadir,
        web_enabled=False,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        broker_commit_interval=1.0,
        profile=KAFKA,
        **KAFKA.faust_settings(),
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    app.Table(
        "state",
        partitions=args.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    out = Path(args.out).open("a")  # noqa: SIM115 (open for the process's life)
    stats = Path(args.out + ".stats")
    partial = Path(args.out + ".stats.partial")
    slow = args.slow_ms / 1000
    records = 0
    tasks = 0
    loop = asyncio.get_event_loop()
    factory = loop.get_task_factory()

    def counting_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
        nonlocal tasks
        tasks += 1
        if factory is None:
            return asyncio.Task(coro, loop=loop, **kwargs)
        return factory(loop, coro, **kwargs)

    loop.set_task_factory(counting_factory)

    async def handle(stream: Any) -> None:
        nonlocal records
        within = args.within_ms / 1000
        check = _guarded(app, args)
        async for events in streams.take_ready(stream, 500, within):
            await check(events)
            now = time.time()
            out.write(
                "".join(
                    f"{e.message.partition} {e.message.offset} "
                    f"{(now - e.message.timestamp) * 1000:.1f}\n"
                    for e in events
                )
            )
            out.flush()
            records += len(events)
            for event in events:  # take_ready leaves the acks to its caller
                event.ack()
            monitor = app.monitor
            partial.write_text(
                json.dumps(
                    {
                        "records": records,
                        "tasks": tasks,
                        "monitor_messages": monitor.messages_received_total,
                        "monitor": type(monitor).__name__,
                        "stale_dropped": getattr(
                            app.consumer, "stale_records_dropped", 0
                        ),
                    }
                )
            )
            partial.replace(stats)  # whole, for the test that reads it
            if slow:
                await asyncio.sleep(slow)

    app.agent(topic, name="member")(handle)
    return app


def _guarded(app: Any, args: argparse.Namespace) -> Any:
    """The worker's skip guard around the batch handler (unless --without
    skip-guard): a skipped record ends the process with code 75."""
    from app.worker.faust_corrections.exit_policy import WorkerExit, exit_process
    from app.worker.faust_corrections.guards import GroupProbes, SkipGuard

    guard = SkipGuard(GroupProbes(args.bootstrap, args.group, KAFKA))

    async def reset(*_: Any, **__: Any) -> None:
        guard.reset()

    app.on_rebalance_complete.connect(reset)

    async def check(events: list[Any]) -> None:
        try:
            await guard.check(
                (e.message.topic, e.message.partition, e.message.offset) for e in events
            )
        except WorkerExit as exc:
            exit_process(exc)

    return check


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("bootstrap", "topic", "group", "out", "datadir"):
        parser.add_argument(name)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--within-ms", type=float, default=5.0)
    parser.add_argument("--without", action="append", default=[], choices=NAMES)
    args = parser.parse_args()
    apply(args.without)
    logging.basicConfig(level=logging.INFO)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build(args)
    faust.Worker(app, loglevel="info", loop=loop, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
