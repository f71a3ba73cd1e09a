"""Swap corrections of app/worker/faust_corrections for Faust's own behaviour, to
show that their tests fail without them.

Used only by tests: ``pytest --without NAME`` applies it in the test process
and, through ``sitecustomize`` (this folder on ``PYTHONPATH`` and
``MASTERY_TEST_WITHOUT``), in every worker process the test starts;
``tests.integration.faust_member --without NAME`` in that member.
"""

from __future__ import annotations

from typing import Any

#: Name -> what is swapped back to Faust's (faust-streaming 0.15.3).
NAMES = {
    "ack-after-checkpoint": "Checkpoint.applied: events acked as soon as their "
    "batch is handled (as Faust's take_events does), not after the checkpoint "
    "stored their states",
    "flow-stop-checkpoint": "_Consumer.stop_flow: Faust's (the worker is not "
    "told that a rebalance or a shutdown waits for its acks)",
    "inline": "_Consumer.wait_first: mode's Service.wait_first",
    "monitor": "LeanMonitor: faust.sensors.Monitor",
    "take-ready": "take_ready: Stream.take_events",
    "consistency": "on_consistency_error: Faust's crash (exit 1)",
    "skip-guard": "SkipGuard.check: nothing checked",
    "fetch-wait": "_Consumer._new_consumer_thread: Faust's (fetch wait 1500 ms)",
    "buffered-wait": "_Consumer._getmany: Faust's (a 1 s wait while partitions "
    "are held back)",
    "stale-fetch": "_Consumer.getmany: Faust's (records fetched before a seek "
    "are delivered after it; read offsets and gaps decide delivery and acks)",
    "offset-fetch": "GroupCoordinator._do_fetch_commit_offsets: aiokafka's "
    "(a group-level error reads as no committed offset)",
}


def apply(names: list[str] | tuple[str, ...]) -> None:
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(
            f"unknown corrections {sorted(unknown)}; known: {sorted(NAMES)}"
        )
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.sensors import Monitor
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from app.worker import checkpoint
    from app.worker.faust_corrections import (
        guards,
        offsets,
        recovery,
        streams,
        transport,
    )

    # Each swap replaces a method or name on purpose (mypy: method-assign,
    # assignment): the point is to run Faust's original in its place.
    consumer = transport._Consumer
    if "ack-after-checkpoint" in names:

        def ack_at_once(self: Any, events: Any) -> None:
            for event in events:
                event.ack()

        checkpoint.Checkpoint.applied = ack_at_once  # type: ignore[method-assign]
    if "flow-stop-checkpoint" in names:
        consumer.stop_flow = faust_aiokafka.Consumer.stop_flow  # type: ignore[method-assign]
    if "inline" in names:
        consumer.wait_first = faust_aiokafka.Consumer.wait_first  # type: ignore[method-assign]
    if "monitor" in names:
        transport.LeanMonitor = Monitor  # type: ignore[misc, assignment]
    if "take-ready" in names:

        def take_events(stream: Any, max_: int, within: float) -> Any:
            return stream.take_events(max_, within)

        streams.take_ready = take_events
    if "fetch-wait" in names:
        consumer._new_consumer_thread = (  # type: ignore[method-assign]
            faust_aiokafka.Consumer._new_consumer_thread
        )
    if "stale-fetch" in names:
        consumer.getmany = faust_aiokafka.Consumer.getmany  # type: ignore[method-assign]
    if "buffered-wait" in names:
        consumer._getmany = faust_aiokafka.Consumer._getmany  # type: ignore[method-assign]
    if "offset-fetch" in names:
        GroupCoordinator._do_fetch_commit_offsets = offsets.ORIGINAL  # type: ignore[method-assign]
    if "skip-guard" in names:

        async def unchecked(self: Any, positions: Any) -> None:
            return None

        guards.SkipGuard.check = unchecked  # type: ignore[method-assign]
    if "consistency" in names:

        def faust_crash(app: Any, handler: Any) -> None:
            return None

        recovery.on_consistency_error = faust_crash
