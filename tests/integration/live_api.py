"""The API as its own process (uvicorn, as in production) over a given Redis,
for the tests that need real sockets: SSE streams, slow clients, the browser."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.devstack.embedded import free_port
from tests.waiting import wait_for

__all__ = ["ApiProcess", "api_process", "children_of", "rss_kib"]


@dataclass
class ApiProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)


def children_of(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def rss_kib(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def api_process(
    redis_url: str,
    jwt_secret: str,
    log_dir: Path,
    *,
    args: tuple[str, ...] = (),
    **env: str,
) -> Iterator[ApiProcess]:
    """Start ``mastery api`` (with ``args``) on a free port; stop it (SIGTERM)
    on exit."""
    port = free_port()
    log = log_dir / f"api-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
    child_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    child_env.update(
        REDIS_URL=redis_url,
        MASTERY_AUTH_MODE="jwt",
        MASTERY_JWT_HS256_SECRET=jwt_secret,
        PYTHONUNBUFFERED="1",
        **env,
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "api", "--port", str(port), *args],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited: {log.read_text()[-2000:]}")
        urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
        return True

    try:
        wait_for(
            healthy,
            retry_on=(OSError, urllib.error.URLError),
            timeout_s=30,
            interval_s=0.1,
            what="the API to become healthy",
        )
        yield ApiProcess(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
