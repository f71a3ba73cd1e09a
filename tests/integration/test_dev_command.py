"""``mastery dev``: a free API port, an env file other terminals can use, --empty."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MASTERY = str(Path(sys.executable).with_name("mastery"))


def _stop(dev: subprocess.Popen[str]) -> None:
    """End a `mastery dev` the way that stops its children too (SIGTERM)."""
    if dev.poll() is None:
        dev.terminate()
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()


def _environment() -> dict[str, str]:
    """This process's environment without settings: the embedded defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("REDIS_URL", None)
    return env


def _start_empty_dev(
    cwd: Path, env: dict[str, str], *, exit_after: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MASTERY, "dev", "--empty", "--workers", "1", "--exit-after", str(exit_after)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _metrics_once_up(url: str, timeout_s: float = 60.0) -> str:
    """The metrics a process serves at ``url``, once it has started."""

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    return wait_for(
        scrape,
        timeout_s=timeout_s,
        interval_s=0.5,
        retry_on=(OSError,),
        what=f"{url} to answer",
    )


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line)
    return dict(pairs)


def _env_file_once_written(
    path: Path, dev: subprocess.Popen[str], *, timeout_s: float
) -> dict[str, str]:
    """The values of the env file `mastery dev` writes once it has started.
    It makes the file private only after writing it whole
    (app/devstack/stack.py, ``_write_env_file``): that mode is the sign to read."""

    def mode() -> int | None:
        assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
        return path.stat().st_mode & 0o777 if path.exists() else None

    wait_for(
        mode,
        accept=lambda m: m == 0o600,
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{path} written whole (its mode 0o600)",
    )
    return _env_file(path)


def test_dev_empty_writes_an_env_file_other_commands_use(tmp_path: Path) -> None:
    env = _environment()
    dev = _start_empty_dev(tmp_path, env, exit_after=30)
    env_file = tmp_path / "var" / "dev.env"
    try:
        values = _env_file_once_written(env_file, dev, timeout_s=60)
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # holds the secret
        assert values["API_URL"] != "http://127.0.0.1:8080"  # a free port
        # "another terminal": the env file is all `mastery token` needs
        minted = subprocess.run(
            [MASTERY, "token", "--partner", "partner-demo", "--role", "partner_admin"],
            env={**env, **values},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        api = values["API_URL"]
        url = f"{api}/learning-instances/nope/metrics/status-and-progress"
        request = urllib.request.Request(
            url,
            data=orjson.dumps({"goal_ids": ["g"]}),
            headers={
                "Authorization": f"Bearer {minted}",
                "Content-Type": "application/json",
            },
            method="POST",
        )

        def answer() -> int:
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0  # the API is still starting
            return 200

        status = wait_for(
            answer,
            # 503 until a worker has materialized the (empty) read model
            accept=lambda status: status not in (0, 503),
            timeout_s=30,
            interval_s=0.5,
            what="the demo's API to answer, with other than 503",
        )
        # The demo's API accepted the token (an unknown LI is a 404, not a 401).
        assert status == 404
        out, _ = dev.communicate(timeout=90)
        assert dev.returncode == 0, out
        assert "--empty: no workload" in out
        assert not env_file.exists()  # removed when the stack stops
    finally:
        _stop(dev)


def test_dev_keeps_its_logs_when_a_process_failed(tmp_path: Path) -> None:
    env = _environment()
    dev = _start_empty_dev(tmp_path, env, exit_after=60)

    def written() -> bool:
        exists = (tmp_path / "var" / "dev.env").exists()
        assert exists or dev.poll() is None
        return exists

    try:
        wait_for(written, timeout_s=60, interval_s=0.2, what="`mastery dev`'s env file")
        children = subprocess.run(
            ["pgrep", "-P", str(dev.pid), "-f", "app.cli worker"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert children, "no worker process found"
        os.kill(int(children[0]), 9)  # a crash, not a restart request
        out, _ = dev.communicate(timeout=60)
        assert dev.returncode == 1, out
        kept = next(
            line.split("logs kept in ", 1)[1].strip()
            for line in out.splitlines()
            if "logs kept in " in line
        )
        assert (Path(kept) / "worker-1.log").exists()
    finally:
        _stop(dev)


def test_dev_prints_and_writes_each_worker_s_metrics_address(tmp_path: Path) -> None:
    env = _environment()
    dev = subprocess.Popen(
        [MASTERY, "dev", "--empty", "--workers", "2", "--exit-after", "20"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env_file = tmp_path / "var" / "dev.env"
    try:
        values = _env_file_once_written(env_file, dev, timeout_s=90)
        urls = [values.get(f"WORKER_{n}_METRICS_URL") for n in (1, 2)]
        assert all(urls) and len(set(urls)) == 2, values
        for url in urls:
            assert url is not None
            assert "mastery_worker_" in _metrics_once_up(url)
        notifier = values.get("NOTIFIER_METRICS_URL")
        assert notifier is not None and notifier not in urls, values
        assert "mastery_notifier_" in _metrics_once_up(notifier)
        out, _ = dev.communicate(timeout=90)
        assert dev.returncode == 0, out
        for n, url in enumerate(urls, start=1):
            assert f"worker-{n} metrics {url}" in out, out
        assert f"notifier metrics {notifier}" in out, out
    finally:
        _stop(dev)
