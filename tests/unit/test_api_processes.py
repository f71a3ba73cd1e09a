"""The supervisor of ``mastery api --workers N`` (app/cli/api_processes.py): real
forked processes and signals, no server in them."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from app.cli import api_processes
from app.cli.api_processes import serve_forked


def _signal_self_after(seconds: float, sig: int = signal.SIGTERM) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def _serving(folder: Path) -> None:
    """A child: note its pid, then serve until SIGTERM."""
    (folder / str(os.getpid())).touch()
    while True:
        time.sleep(0.05)


def test_a_stop_reaches_every_process_and_ends_in_0(tmp_path: Path) -> None:
    timer = _signal_self_after(1.0)
    try:
        code = serve_forked(3, lambda: _serving(tmp_path))
    finally:
        timer.cancel()
    assert code == 0
    pids = [int(p.name) for p in tmp_path.iterdir()]
    assert len(pids) == 3
    assert _alive(pids) == []  # waited for, none left behind


def test_a_process_that_cannot_start_stops_the_others_with_its_code(
    tmp_path: Path,
) -> None:
    def failing() -> None:
        if not (tmp_path / "first").exists():
            (tmp_path / "first").touch()
            raise SystemExit(3)
        _serving(tmp_path)

    started = time.monotonic()
    timer = _signal_self_after(20.0)  # only if the supervisor hung
    try:
        code = serve_forked(2, failing)
    finally:
        timer.cancel()
    assert code == 3
    assert time.monotonic() - started < 10
    assert _alive([int(p.name) for p in tmp_path.iterdir() if p.name != "first"]) == []


def test_a_crashed_process_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_processes, "FAST_FAIL_S", 0.2)

    def crashing_once() -> None:
        marker = tmp_path / "crashed"
        if not marker.exists():
            marker.touch()
            time.sleep(0.5)  # past FAST_FAIL_S: a crash, not a failed start
            os.kill(os.getpid(), signal.SIGKILL)
        _serving(tmp_path)

    timer = _signal_self_after(2.5)
    try:
        code = serve_forked(2, crashing_once)
    finally:
        timer.cancel()
    assert code == 0
    served = [int(p.name) for p in tmp_path.iterdir() if p.name != "crashed"]
    # The child that did not crash, and the one started in the crashed one's place.
    assert len(served) == 2
    assert _alive(served) == []


def test_request_ids_stay_unique_in_forked_processes(tmp_path: Path) -> None:
    from api.request_id import _ids

    mine = {_ids.next() for _ in range(1000)}
    assert len(mine) == 1000 and all(len(i) == 16 for i in mine)
    pid = os.fork()
    if pid == 0:  # the child writes its ids and leaves at once
        (tmp_path / "child").write_text("\n".join(_ids.next() for _ in range(1000)))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    theirs = set((tmp_path / "child").read_text().split("\n"))
    assert len(theirs) == 1000 and not mine & theirs
    assert {i[:8] for i in theirs} != {i[:8] for i in mine}  # a prefix of its own
