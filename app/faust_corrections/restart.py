"""Why the worker process ends itself, and the one place that ends it.

Crash-only: where exactness is at stake the worker does not try to recover in
process. It raises a :class:`WorkerExit`; the agent or task that catches it
calls :func:`exit_process`, which logs, flushes the logs and exits with the
exception's code without running Faust's shutdown (which would ack and commit
the batch in hand: ``take_ready`` acks in a ``finally``). The supervisor
(``mastery dev``, the deployment's restart policy) restarts code 75.
Code 65 (:class:`BrokerLostData`) is not a restart: the broker lost records
the worker had read, and an operator decides what happens next
(docs/operations.md, "The broker restarted empty").
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

__all__ = [
    "EXIT_BROKER_LOST",
    "EXIT_RESTART",
    "EXIT_SOFTWARE",
    "BatchCancelled",
    "BatchFailed",
    "BrokerLostData",
    "CheckpointFailed",
    "RecordsSkipped",
    "RestartRequired",
    "WorkerExit",
    "exit_process",
]

#: EX_TEMPFAIL: restart me (the supervisor's contract, deploy/README.md).
EXIT_RESTART = 75
#: EX_SOFTWARE: a bug; restarting may not help.
EXIT_SOFTWARE = 70
#: EX_DATAERR: the broker lost records this deployment had read; do not
#: restart until an operator has acted (``mastery dev`` does not).
EXIT_BROKER_LOST = 65

log = logging.getLogger(__name__)


class WorkerExit(Exception):
    """The worker must end now, without committing what it holds."""

    exit_code = EXIT_SOFTWARE


class RestartRequired(WorkerExit):
    """A restart (from the committed offsets and the changelog) fixes this."""

    exit_code = EXIT_RESTART


class RecordsSkipped(RestartRequired):
    """Faust's fetch loop skipped records of a partition (see guards)."""


class CheckpointFailed(RestartRequired):
    """States could not be written to the changelog or the local store."""


class BatchCancelled(RestartRequired):
    """A batch was cancelled mid-way (shutdown or rebalance)."""


class BatchFailed(WorkerExit):
    """A batch raised an unexpected error (a bug)."""


class BrokerLostData(WorkerExit):
    """The broker's log is shorter than the worker had seen (it restarted
    empty, or topics were recreated): an operator must act, a restart would
    only fold new events onto states the log no longer explains."""

    exit_code = EXIT_BROKER_LOST


def exit_process(exc: WorkerExit) -> NoReturn:
    """Log why and end the process with ``exc.exit_code``; nothing is acked."""
    level = logging.WARNING if isinstance(exc, RestartRequired) else logging.CRITICAL
    log.log(
        level,
        "worker exits (code %d, %s): %s",
        exc.exit_code,
        type(exc).__name__,
        exc,
        exc_info=exc.__cause__ is not None,
    )
    logging.shutdown()
    os._exit(exc.exit_code)
