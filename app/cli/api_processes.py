"""``mastery api --workers N``: N API processes on one listening socket.

The parent binds the socket, forks N children and supervises them; each child
builds its own app (its own Redis connections and event loop) and serves the
inherited socket, so the kernel spreads connections across the children and
the API uses N cores. One process is the default and needs none of this.

- **Stop.** SIGTERM or SIGINT to the parent is passed to every child as
  SIGTERM (uvicorn finishes the requests in flight); the parent exits 0 once
  all have ended (a child's non-zero code is passed on).
- **Crash.** A child that ends on its own is started again, with a warning
  naming its exit code or signal. One that ends within
  :data:`FAST_FAIL_S` of its start is not: a child that cannot start (a bad
  setting, an import error) would otherwise loop; every child is stopped and
  the parent exits with that child's code.
- **Metrics.** ``GET /metrics`` is answered by whichever child the kernel
  picks, so the children keep their counters in a shared folder (prometheus
  client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) and every child
  reports the sum of all of them; the ``process_*`` figures are those of the
  child that answered. The folder is made by the parent and removed at exit.
- **Per-process limits.** The shares of api/shares.py and the stream slots
  are per process: with N processes a partner may hold N times as many
  (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

__all__ = ["FAST_FAIL_S", "MULTIPROC_ENV", "multiprocess_metrics", "serve_forked"]

log = logging.getLogger("mastery.api")

#: A child that ends within this many seconds of its start is not restarted.
FAST_FAIL_S = 5.0
#: prometheus_client's switch to its multiprocess mode (read at its import).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[str]:
    """A fresh folder for the children's metrics, set in the environment
    before prometheus_client is imported; removed on exit."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the multiprocess metrics "
            "folder was set: the children's metrics would not add up"
        )
    folder = tempfile.mkdtemp(prefix="mastery-api-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _described(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def serve_forked(workers: int, serve: Callable[[], None]) -> int:
    """Run ``serve`` in ``workers`` forked children until stopped; the exit
    code for the parent (see the module's docstring)."""
    children: dict[int, float] = {}  # pid -> when it started
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve, never return into the parent's code
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = 0
            try:
                serve()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children[pid] = time.monotonic()

    def stop_all(signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for _ in range(workers):
        spawn()
    previous = {
        sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    code = 0
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = children.pop(pid, None)
            if started is None:
                continue
            ended = os.waitstatus_to_exitcode(status)
            if stopping:
                if ended > 0 and code == 0:
                    code = ended
                continue
            if time.monotonic() - started < FAST_FAIL_S:
                log.error(
                    "API process %d ended %.1f s after its start (%s): stopping "
                    "the others",
                    pid,
                    time.monotonic() - started,
                    _described(status),
                )
                code = ended if ended > 0 else 1
                stop_all()
                continue
            log.warning(
                "API process %d ended (%s); starting another", pid, _described(status)
            )
            spawn()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
