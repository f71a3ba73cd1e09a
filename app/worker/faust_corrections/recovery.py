"""Faust's table recovery ending the process with code 1 on a consistency error.

faust-streaming 0.15.3 (``tables/recovery.py``, ``Recovery._restart_recovery``):
when a table's local store has read further than its changelog now reaches
(the persisted offset is above the changelog's end: the broker lost records,
or the data folder belongs to another cluster), recovery raises
``ConsistencyError`` and crashes its service; mode then stops the worker and
the process exits with code 1, which a supervisor restarts into the same
error. :func:`on_consistency_error` hands that error to the caller instead
(the worker reports a broker loss and exits with code 65, app/worker/broker_watch.py);
every other reason still goes to Faust's ``crash``. Faust offers no hook for
it, so the recovery service's ``crash`` method is wrapped on the instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faust.exceptions import ConsistencyError

__all__ = ["on_consistency_error"]


def on_consistency_error(
    app: Any, handler: Callable[[BaseException], Awaitable[None]]
) -> None:
    """Call ``handler`` (which should end the process) when ``app``'s table
    recovery crashes with a ``ConsistencyError``."""
    recovery = app.tables.recovery
    crash = recovery.crash

    async def crash_or_handle(reason: BaseException) -> None:
        if isinstance(reason, ConsistencyError):
            await handler(reason)
        await crash(reason)

    recovery.crash = crash_or_handle
