"""deploy/compose.yaml's mastery services, run as compose would, without Docker.

No Docker engine here, so this test plays compose's part for the services
built from our image: ``topics``, ``worker-1``, ``worker-2``, ``api``,
``notifier`` and the on-demand ``load``. Each runs the image's entry point
(the Dockerfile's ``ENTRYPOINT``, the installed ``mastery``) with the
service's ``command``, and the Dockerfile's ``ENV`` overlaid by the
service's ``environment`` (compose interpolation included). What only a
container network provides is mapped, and nothing else changed:

- the hostnames ``kafka:9092`` and ``redis:6379`` become the loopback
  addresses of an Apache Kafka started with the ``kafka`` service's
  ``KAFKA_*`` settings (auto-creation off, as there) and of a Redis server;
- every volume (named, bind or the Dockerfile's ``VOLUME``) becomes a
  folder, and container paths in the environment and command point into it;
- the ports a service listens on (its ``MASTERY_*_PORT``) become free ports,
  in its healthcheck too, since all services share one loopback.

Then the services start in ``depends_on`` order, the ``load`` service
replays the ASSISTments file, every healthcheck passes, a row is read
through the API with a token minted by the README's ``run --rm api token``,
the notifier's consumer group has committed every status change the workers
sent, and the notifier stops with exit 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.devstack.embedded import EmbeddedRedis, free_port
from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import post_json
from app.devstack.workload import DKT_PARTNER, assistments
from app.notifier.service import notifier_group
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_specs import apply_topic_specs, declared_topics
from tests.integration.helpers import group_behind
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
README = DEPLOY / "README.md"
BIN = Path(sys.executable).parent
#: Settings of the kafka service that describe its container, not the broker's
#: behaviour (node identity, listeners, storage): the embedded broker has its own.
_CONTAINER_ONLY = {
    "node.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "controller.quorum.voters",
    "log.dirs",
}


class ComposeError(Exception):
    """The compose file asks for something this runner does not do."""


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}|\$(\w+)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        found = env.get(name, "")
        if found:
            return found
        if match.group(2) == ":-":
            return match.group(3)
        if match.group(2) == ":?":
            raise ComposeError(f"{name}: {match.group(3)}")
        return ""

    return _VARIABLE.sub(value, text)


def _dockerfile() -> tuple[list[str], dict[str, str], list[str]]:
    """ENTRYPOINT, ENV and VOLUME of the Dockerfile's final stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("#")]
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")) :]
    entrypoint: list[str] = []
    env: dict[str, str] = {}
    volumes: list[str] = []
    for line in final:
        op, _, arg = line.partition(" ")
        if op == "ENTRYPOINT":
            entrypoint = json.loads(arg)
        elif op == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", arg))
        elif op == "VOLUME":
            volumes += json.loads(arg)
    return entrypoint, env, volumes


@dataclass
class Service:
    """One service of the compose file, mapped onto this machine."""

    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: The service's ``restart`` policy (compose's default: "no").
    restart: str = "no"
    #: Exit codes of the runs compose restarted.
    restarted: list[int] = field(default_factory=list)

    def keep_running(self) -> None:
        """What compose does with an exited container: start it again under
        ``restart: unless-stopped`` / ``always`` / ``on-failure`` (a worker
        exits 75 to be restarted, e.g. when the skip guard fires: its log
        says why); under "no" an exit is a failure here."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            return
        # Only "restart me" (75) is expected; any other exit is a bug
        # compose would hide by restarting.
        assert self.restart != "no" and code == 75 and len(self.restarted) < 3, (
            self.name,
            code,
            self.restarted,
            self.log.read_text()[-3000:],
        )
        self.restarted.append(code)
        self.start()

    def start(self) -> Service:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.env["HOME"],
            start_new_session=True,
        )
        return self

    def run(self, timeout_s: float = 60.0) -> str:
        """Run to completion (``service_completed_successfully``); its output."""
        done = subprocess.run(
            self.argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=self.env["HOME"],
            check=False,
        )
        self.log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (self.name, done.returncode, done.stderr[-3000:])
        return done.stdout

    def healthy(self) -> bool:
        """The service's own healthcheck command (``CMD python -c ...``)."""
        assert self.healthcheck is not None and self.healthcheck[0] == "CMD"
        program, *args = self.healthcheck[1:]
        assert program == "python"
        done = subprocess.run(
            [sys.executable, *args], capture_output=True, timeout=10, check=False
        )
        return done.returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class ComposeRunner:
    """Maps the compose file's mastery services onto loopback servers."""

    kafka_bootstrap: str
    redis_address: str
    workdir: Path
    #: The broker's listener for clients on the host (compose's EXTERNAL).
    external_bootstrap: str
    host_env: Mapping[str, str]
    compose: dict[str, Any] = field(
        default_factory=lambda: yaml.safe_load(COMPOSE.read_text())
    )

    def kafka_config(self) -> dict[str, str]:
        env = self.compose["services"]["kafka"]["environment"]
        config = {
            key.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
            for key, value in env.items()
            if key.startswith("KAFKA_")
        }
        return {k: v for k, v in config.items() if k not in _CONTAINER_ONLY}

    def service(self, name: str, command: list[str] | None = None) -> Service:
        svc = self.compose["services"][name]
        if not (svc.get("build") and svc["image"].startswith("mastery-stream:")):
            raise ComposeError(f"{name} is not built from our image")
        entrypoint, image_env, image_volumes = _dockerfile()
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        # Volumes: compose's, then the image's anonymous ones.
        mounts: dict[str, Path] = {}
        for volume in svc.get("volumes", []):
            source, target, *_ = interpolate(volume, self.host_env).split(":")
            if source.startswith((".", "/")):
                host = (DEPLOY / source).resolve()
                assert host.is_dir(), (name, volume)
            else:
                host = self.workdir / "volumes" / source
            host.mkdir(parents=True, exist_ok=True)
            mounts[target] = host
        for target in image_volumes:
            mounts.setdefault(target, home / "anonymous" / target.strip("/"))
            mounts[target].mkdir(parents=True, exist_ok=True)

        def local(value: str) -> str:
            value = value.replace("kafka:9092", self.kafka_bootstrap)
            value = value.replace("redis:6379", self.redis_address)
            for target, host in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == target or value.startswith(target + "/"):
                    return str(host) + value[len(target) :]
            return value

        environment = {k: v for k, v in image_env.items() if k != "PATH"}
        environment.update(
            {
                k: interpolate(str(v), self.host_env)
                for k, v in (svc.get("environment") or {}).items()
            }
        )
        env = {k: local(v) for k, v in environment.items()}
        # Ports it listens on: free ones, shared loopback.
        ports = {}
        for key in ("MASTERY_API_PORT", "MASTERY_METRICS_PORT"):
            if key in env:
                ports[env[key]] = str(free_port())
                env[key] = ports[env[key]]
        healthcheck = None
        if "healthcheck" in svc:
            healthcheck = []
            for part in svc["healthcheck"]["test"]:
                for inside, outside in ports.items():
                    inside_url = f"127.0.0.1:{inside}/"
                    part = part.replace(inside_url, f"127.0.0.1:{outside}/")  # noqa: PLW2901
                healthcheck.append(part)
        # A container inherits nothing from the host but a PATH.
        env.update(PATH=os.environ["PATH"], HOME=str(home))
        args = command if command is not None else svc["command"]
        argv = [str(BIN / entrypoint[0]), *entrypoint[1:]]
        argv += [local(interpolate(a, self.host_env)) for a in args]
        log = self.workdir / (f"{name}.log" if command is None else f"{name}-run.log")
        return Service(
            name, argv, env, healthcheck, log, restart=svc.get("restart", "no")
        )

    def depends_on(self, name: str) -> dict[str, str]:
        deps = self.compose["services"][name].get("depends_on") or {}
        return {dep: spec["condition"] for dep, spec in deps.items()}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRunner]:
    workdir = tmp_path_factory.mktemp("compose")
    plan = ComposeRunner("", "", workdir, "", {})
    kafka = EmbeddedKafka(
        config=plan.kafka_config(), listeners={"EXTERNAL": "PLAINTEXT"}
    ).start()
    redis = EmbeddedRedis().start()
    try:
        yield ComposeRunner(
            kafka.bootstrap_servers,
            f"127.0.0.1:{redis.port}",
            workdir,
            kafka.bootstrap_for("EXTERNAL"),
            # What the README exports on the host before `docker compose up`.
            {"MASTERY_JWT_HS256_SECRET": "compose-test-secret-" + "x" * 32},
        )
    finally:
        redis.stop()
        kafka.stop()


def _run_the_readme_host_tools(runner: ComposeRunner, registrations: int) -> None:
    """deploy/README.md's "Loading data" block, from the host through the
    published ports (compose's localhost:9094 is the broker's EXTERNAL
    listener, localhost:6379 Redis). Its `mastery produce --replay` line is
    what the load service ran; the other commands run here as written."""
    block = README.read_text().split("**Loading data.**", 1)[1]
    lines = block.split("```\n", 2)[1].splitlines()
    assert lines[0].startswith("export ")
    published = {
        "localhost:9094": runner.external_bootstrap,
        "localhost:6379": runner.redis_address,
    }
    env = {"PATH": os.environ["PATH"], "HOME": str(runner.workdir)}
    for assignment in shlex.split(lines[0])[1:]:
        name, value = assignment.split("=", 1)
        for address, local in published.items():
            value = value.replace(address, local)
        env[name] = value
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == runner.external_bootstrap
    commands = [shlex.split(ln) for ln in lines[1:]]
    assert commands[0][:3] == ["mastery", "produce", "--replay"]
    out = ""
    for argv in commands[1:]:
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stderr[-3000:])
        out += done.stdout
    rebuilt = re.search(r"rebuilt the read model: ([\d,]+) registrations", out)
    assert rebuilt is not None, out
    assert int(rebuilt.group(1).replace(",", "")) == registrations


def test_interpolation_as_compose_does_it() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-../x}/$$HOME/$SET", env) == (
        "v/d/../x/$HOME/v"
    )
    with pytest.raises(ComposeError, match="UNSET: say why"):
        interpolate("${UNSET:?say why}", env)


def test_the_compose_services_run_against_apache_kafka(runner: ComposeRunner) -> None:
    started = time.monotonic()
    assert runner.kafka_config()["auto.create.topics.enable"] == "false"
    # depends_on, as compose reads it.
    assert runner.depends_on("topics") == {"kafka": "service_healthy"}
    for name in ("worker-1", "worker-2", "api", "notifier"):
        assert runner.depends_on(name)["topics"] == "service_completed_successfully"
        assert runner.depends_on(name)["redis"] == "service_healthy"
    assert runner.depends_on("load") == {"topics": "service_completed_successfully"}

    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started, 1)

    out = runner.service("topics").run()
    phase("topics")
    env = runner.service("worker-1").env
    settings = Settings(
        topic_prefix=env.get("MASTERY_TOPIC_PREFIX", "mastery"),
        topic_partitions=int(env["MASTERY_TOPIC_PARTITIONS"]),
        topic_replication=int(env["MASTERY_TOPIC_REPLICATION"]),
    )
    assert len(out.splitlines()) == len(declared_topics(settings)), out
    assert out.startswith("created "), out
    asyncio.run(apply_topic_specs(settings, runner.kafka_bootstrap, create=False))

    services = [runner.service(n) for n in ("worker-1", "worker-2", "api", "notifier")]
    notifier = services[3]
    assert notifier.argv[-1] == "notifier" and notifier.healthcheck is not None
    try:
        for service in services:
            service.start()
        # `docker compose run --rm load`, as deploy/README.md says.
        load = runner.service("load")
        replay = Path(load.argv[load.argv.index("--replay") + 1])
        assert replay.is_file(), replay
        assert load.env["MASTERY_SHARED_DIR"] == str(replay.parents[2])
        assert "produced" in load.run(timeout_s=120)
        phase("load")

        waiting = {s.name for s in services if s.healthcheck is not None}

        def still_failing() -> list[str]:
            for service in services:
                service.keep_running()
                if service.name in waiting and service.healthy():
                    waiting.discard(service.name)
            return sorted(waiting)

        wait_for(
            still_failing,
            accept=lambda failing: not failing,
            timeout_s=60,
            interval_s=0.5,
            what="every healthcheck to pass (those still failing)",
        )
        phase("healthy")

        # The README's `docker compose ... run --rm api token --partner ...`.
        (mint,) = [
            ln for ln in README.read_text().splitlines() if "--rm api token" in ln
        ]
        token_args = shlex.split(mint.split("--rm api ", 1)[1].rstrip(")"))
        assert token_args[token_args.index("--partner") + 1] == DKT_PARTNER
        token = runner.service("api", token_args).run().strip()
        workload = assistments(
            replay,
            params_path=replay.parents[2] / "reference" / "bkt" / "params.json",
        )
        li = workload.learning_instances[0]
        goals = workload.goals_of(li)
        learners = {
            r.registration_id
            for r in workload.registrations
            if r.learning_instance_id == li and r.role == "learner"
        }
        api_url = f"http://127.0.0.1:{services[2].env['MASTERY_API_PORT']}"
        body = {"goal_ids": goals, "registrations_per_page": 100}
        status, page = wait_for(
            lambda: post_json(
                f"{api_url}/learning-instances/{li}/metrics/status-and-progress",
                body,
                token=token,
            ),
            accept=lambda answer: (
                answer[0] == 200
                and isinstance(answer[1], dict)
                and {row["registration_id"] for row in answer[1]["data"]} == learners
            ),
            timeout_s=60,
            interval_s=0.5,
            what="a page with a row for every learner",
        )
        assert status == 200, page
        assert isinstance(page, dict)
        row = page["data"][0]
        assert row["registration_id"] in learners
        assert len(row["status_and_progress"]) == len(goals)
        assert {r["registration_id"] for r in page["data"]} == learners
        phase("row read")
        # The notifier read (and committed) every status change the workers
        # sent, through the compose service's own environment.
        status_changes = TopicNames(settings.topic_prefix).status_changes
        group = notifier_group(settings)

        def lag() -> dict[int, int]:
            notifier.keep_running()
            return group_behind(runner.kafka_bootstrap, group, status_changes)

        behind = wait_for(
            lag,
            accept=lambda behind: not any(behind.values()),
            timeout_s=60,
            interval_s=0.5,
            what="the notifier's group caught up (its lag per partition)",
        )
        assert behind, behind  # {}: the group has committed nothing
        phase("notifier caught up")
        _run_the_readme_host_tools(runner, len(workload.registrations))
        phase("host tools")
    finally:
        for service in services:
            service.stop()
    assert notifier.restarted == [] and notifier.proc is not None
    assert notifier.proc.returncode == 0, notifier.log.read_text()[-3000:]
    # The workers started on the topics `topics` made, and left them as declared.
    asyncio.run(apply_topic_specs(settings, runner.kafka_bootstrap, create=False))
    phase("stopped")
    print(f"compose services, seconds since start: {phases}")
