"""Why the worker process ends itself, and the one place that ends it.

Crash-only: where exactness is at stake the worker does not try to recover in
process. It raises a :class:`WorkerExit`; the agent or task that catches it
calls :func:`exit_process`, which logs, flushes the logs and exits with the
exception's code without running Faust's shutdown (whose checkpoint would
store what a half-failed batch left in the state cache). app/worker/failures.py
says which failure gets which exit. The supervisor
(``mastery dev``, the deployment's restart policy) restarts code 75.
Code 77 (:class:`AccessDenied`) is not fixed by a restart: the broker
denied the worker's principal an operation, and an operator must grant the
ACL (deploy/README.md, "Kafka ACLs").
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
    "EXIT_NOPERM",
    "EXIT_RESTART",
    "EXIT_SOFTWARE",
    "AccessDenied",
    "BatchCancelled",
    "BatchFailed",
    "BrokerLostData",
    "CheckpointFailed",
    "RecordsSkipped",
    "RestartRequired",
    "WorkerExit",
    "access_denied",
    "exit_process",
]

#: EX_TEMPFAIL: restart me (the supervisor's contract, deploy/README.md).
EXIT_RESTART = 75
#: EX_SOFTWARE: a bug; restarting may not help.
EXIT_SOFTWARE = 70
#: EX_DATAERR: the broker lost records this deployment had read; do not
#: restart until an operator has acted (``mastery dev`` does not).
EXIT_BROKER_LOST = 65
#: EX_NOPERM: the broker denied this worker's principal an operation.
EXIT_NOPERM = 77

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


class AccessDenied(WorkerExit):
    """The broker denied the worker's principal an operation: an ACL is
    missing, and every restart would fail the same way until it is granted."""

    exit_code = EXIT_NOPERM


def access_denied(exc: BaseException) -> AccessDenied | None:
    """An :class:`AccessDenied` for a broker authorization error (also one
    wrapped by Faust), else ``None``."""
    from infra.kafka_security import is_authorization_failure

    if not is_authorization_failure(exc):
        return None
    denied: BaseException = exc
    while denied.__cause__ is not None:
        denied = denied.__cause__
    return AccessDenied(
        f"the Kafka broker denied an operation ({denied}); grant the ACLs that "
        'deploy/README.md lists ("Kafka ACLs") for the worker'
    )


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
