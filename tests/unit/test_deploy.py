"""The deploy artefacts, checked offline (no Docker, no cluster here):

- deploy/compose.yaml against the compose specification's JSON schema, as
  vendored by check-jsonschema (``--builtin-schema vendor.compose-spec``);
- every manifest of deploy/k8s/ against the Kubernetes schemas that
  kubernetes-validate ships (strict: unknown fields are errors);
- every ``MASTERY_*`` variable an artefact sets or reads is a setting, and the
  values they set are valid Settings;
- topic names, ports and metric names agree with the code.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics
from app.cli.help import COMMAND_SETTINGS, env_name
from app.devstack.embedded_kafka import KAFKA_VERSION
from app.notifier.service import notifier_group
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_specs import declared_topics
from tests.reliability.kafka_secure import documented_acls

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
README = DEPLOY / "README.md"
#: The Kubernetes objects (kustomization.yaml only names them and the image).
K8S = sorted(
    p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"
)
KUSTOMIZATION = DEPLOY / "k8s" / "kustomization.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mastery-stream.json"
K8S_VERSION = "1.30.0"
BIN = Path(sys.executable).parent

#: The worker's metric names (implemented by the worker; the dashboard uses them).
WORKER_METRICS = {
    "mastery_worker_consumer_lag",
    "mastery_worker_events_total",
    "mastery_worker_batch_seconds",
    "mastery_worker_commit_seconds",
    "mastery_worker_dead_letters_total",
    "mastery_worker_status_changes_total",
    "mastery_worker_freshness_seconds",
    "mastery_worker_state_cache_entries",
    "mastery_worker_rebalances_total",
    "mastery_worker_redis_write_seconds",
}
#: Every variable Settings reads, by the names the artefacts may use.
SETTING_VARIABLES = {
    env_name(name, field) for name, field in Settings.model_fields.items()
} | {f"MASTERY_{name.upper()}" for name in Settings.model_fields}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in K8S
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _kind(kind) if d["metadata"]["name"] == name]
    return doc


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


# -- compose -------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    done = _check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = _compose()
    broken["services"]["api"]["restart"] = ["always"]  # must be a string
    broken["services"]["api"]["no_such_key"] = True
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = _check_jsonschema(path)
    assert done.returncode == 1
    assert "no_such_key" in done.stdout or "restart" in done.stdout


def test_compose_has_the_services_the_issue_asks_for() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "worker-1", "worker-2", "api", "prometheus"} <= set(
        services
    )
    assert "grafana" in services
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["command"] == ["worker"]
        assert services[worker]["restart"] in {"unless-stopped", "always"}
        mounts = services[worker]["volumes"]
        assert any(str(m).endswith(":/var/lib/mastery") for m in mounts)
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "./grafana/provisioning:" in grafana_mounts
    assert "./grafana/dashboards:" in grafana_mounts


def test_compose_runs_the_notifier_like_a_worker() -> None:
    """Same broker, Redis, topics and start order as the workers; restarted
    like them (any failure ends it); no volume (its state is in Redis)."""
    services = _compose()["services"]
    notifier, worker = services["notifier"], services["worker-1"]
    assert notifier["command"] == ["notifier"]
    assert notifier["restart"] == worker["restart"]
    assert notifier["depends_on"] == worker["depends_on"]
    assert "volumes" not in notifier
    env, worker_env = notifier["environment"], worker["environment"]
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "REDIS_URL",
        "MASTERY_TOPIC_PARTITIONS",
        "MASTERY_TOPIC_REPLICATION",
    ):
        assert env[name] == worker_env[name], name
    assert env.get("MASTERY_TOPIC_PREFIX") == worker_env.get("MASTERY_TOPIC_PREFIX")
    assert env.get("MASTERY_APP_ID") == worker_env.get("MASTERY_APP_ID")
    # Webhooks to private addresses are for development only.
    assert "MASTERY_WEBHOOKS_ALLOW_PRIVATE_URLS" not in env


def _read_by(command: str) -> set[str]:
    fields = Settings.model_fields
    return {env_name(name, fields[name]) for name in COMMAND_SETTINGS[command]}


@pytest.mark.parametrize(
    ("service", "command"),
    [("worker-1", "worker"), ("worker-2", "worker"), ("notifier", "notifier")],
)
def test_compose_sets_only_what_the_command_reads(service: str, command: str) -> None:
    env = set(_compose()["services"][service]["environment"])
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"} <= env
    assert env <= _read_by(command), env - _read_by(command)


def test_the_read_by_check_sees_a_variable_the_command_ignores() -> None:
    assert "MASTERY_DATA_DIR" in _read_by("worker")
    assert "MASTERY_DATA_DIR" not in _read_by("notifier")
    assert "MASTERY_NOTIFIER_LEASE_S" in _read_by("notifier")
    assert "MASTERY_NOTIFIER_OUTBOX_MAX" in _read_by("notifier")
    assert "MASTERY_METRICS_PORT" in _read_by("notifier")


def test_compose_checks_the_notifier_like_a_worker() -> None:
    """Its metrics port and its healthcheck (``/readyz``) are the workers'."""
    services = _compose()["services"]
    notifier, worker = services["notifier"], services["worker-1"]
    port = notifier["environment"]["MASTERY_METRICS_PORT"]
    assert port == worker["environment"]["MASTERY_METRICS_PORT"]
    assert notifier["healthcheck"]["test"] == worker["healthcheck"]["test"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(notifier["healthcheck"]["test"])


def _compose_environments() -> list[dict[str, str]]:
    return [
        {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        for name, svc in _compose()["services"].items()
        if name.startswith(("worker", "api", "notifier"))
    ]


# -- Kubernetes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in _manifests()],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in _manifests()],
)
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_check_catches_a_broken_manifest() -> None:
    (worker,) = _kind("StatefulSet")
    broken = copy.deepcopy(worker)
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = copy.deepcopy(worker)
    unknown["spec"]["template"]["spec"]["containers"][0]["readinessPorbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def test_the_manifests_have_what_the_issue_asks_for() -> None:
    kinds = {doc["kind"] for _, doc in _manifests()}
    assert {
        "ConfigMap",
        "Secret",
        "Job",
        "StatefulSet",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds
    (worker,) = _kind("StatefulSet")
    assert worker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/var/lib/mastery"}
    (hpa,) = _kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mastery-api"
    assert _named("Deployment", "mastery-api")
    assert len(_kind("PodDisruptionBudget")) == 2


def test_the_notifier_deployment() -> None:
    """Two replicas (they share the work), the settings every process gets,
    the pods' security of the others, and the workers' probes on its
    metrics port (app/notifier/metrics.py), scraped by annotation."""
    notifier = _named("Deployment", "mastery-notifier")
    api = _named("Deployment", "mastery-api")
    (worker,) = _kind("StatefulSet")
    assert notifier["spec"]["replicas"] == 2
    labels = notifier["spec"]["template"]["metadata"]["labels"]
    assert notifier["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = notifier["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["notifier"]
    worker_pod = worker["spec"]["template"]["spec"]
    assert container["envFrom"] == worker_pod["containers"][0]["envFrom"]
    assert pod["securityContext"] == api["spec"]["template"]["spec"]["securityContext"]
    assert (
        container["securityContext"]
        == api["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    )
    assert pod.get("restartPolicy", "Always") == "Always"
    worker_container = worker_pod["containers"][0]
    assert container["ports"] == worker_container["ports"]
    assert container["readinessProbe"] == worker_container["readinessProbe"]
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "metrics",
    }
    annotations = notifier["spec"]["template"]["metadata"]["annotations"]
    assert annotations == worker["spec"]["template"]["metadata"]["annotations"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # What it needs from the shared ConfigMap and Secret.
    env = _config_env()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"} <= set(env)
    assert "MASTERY_WEBHOOKS_ALLOW_PRIVATE_URLS" not in env


def _config_env() -> dict[str, str]:
    (config,) = _kind("ConfigMap")
    (secret,) = _kind("Secret")
    return {**config["data"], **secret["stringData"]}


def test_probes_use_the_configured_ports() -> None:
    env = _config_env()
    (worker,) = _kind("StatefulSet")
    api = _named("Deployment", "mastery-api")
    notifier = _named("Deployment", "mastery-notifier")
    for workload, variable in (
        (worker, "MASTERY_METRICS_PORT"),
        (api, "MASTERY_API_PORT"),
        (notifier, "MASTERY_METRICS_PORT"),
    ):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        port = container["readinessProbe"]["httpGet"]["port"]
        assert named[port] == int(env[variable])


def test_no_more_workers_than_partitions() -> None:
    (worker,) = _kind("StatefulSet")
    assert worker["spec"]["replicas"] <= int(_config_env()["MASTERY_TOPIC_PARTITIONS"])


# -- settings -----------------------------------------------------------------


def _variables_in_text(text: str) -> set[str]:
    return set(re.findall(r"\bMASTERY_[A-Z0-9_]+\b", text))


def test_every_variable_the_artefacts_use_is_a_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in [COMPOSE, *K8S, ROOT / "Dockerfile"]:
        names = _variables_in_text(path.read_text())
        # Compose's own interpolation of the host's variable, same name.
        used[path.name] = names
    assert used["compose.yaml"] and used["Dockerfile"]
    unknown = {
        name: sorted(names - SETTING_VARIABLES)
        for name, names in used.items()
        if names - SETTING_VARIABLES
    }
    assert not unknown, unknown


def test_the_variable_check_sees_a_typo() -> None:
    assert "MASTERY_METRIC_PORT" not in SETTING_VARIABLES
    assert "MASTERY_METRICS_PORT" in SETTING_VARIABLES
    assert "KAFKA_BOOTSTRAP_SERVERS" in SETTING_VARIABLES


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_kubernetes_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(_config_env(), monkeypatch)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password is not None
    assert settings.metrics_port == 9180
    assert settings.log_format == "json"


def test_the_placeholder_jwt_secret_cannot_go_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.tokens import AuthConfigError, verifier_from_settings

    settings = _settings_from(_config_env(), monkeypatch)
    with pytest.raises(AuthConfigError, match="at least 32 bytes"):
        verifier_from_settings(settings)


def test_compose_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in _compose_environments():
        env = {
            k: ("x" * 40 if v.startswith("${") else v)  # interpolated from the host
            for k, v in raw.items()
        }
        settings = _settings_from(env, monkeypatch)
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.log_format == "json"


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_with_the_mastery_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instructions = _dockerfile()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) >= 2
    final = instructions[stages[-1] :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    entry = [arg for op, arg in final if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["mastery"]
    assert any(op == "COPY" and "--from=build" in arg for op, arg in final)
    # Every package of the wheel is copied into the build stage.
    copied = {shlex.split(arg)[0] for op, arg in instructions if op == "COPY"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"packages = \[([^\]]*)\]", pyproject)
    assert packages is not None
    for package in re.findall(r'"(\w+)"', packages.group(1)):
        assert package in copied
        assert (ROOT / package).is_dir()
    # ENV values are valid settings too.
    env = {}
    for op, arg in final:
        if op == "ENV":
            for key, value in re.findall(r"(MASTERY_\w+)=(\S+)", arg):
                env[key] = value
    settings = _settings_from(env, monkeypatch)
    assert settings.api_host == "0.0.0.0"


# -- topics, ports, metrics ---------------------------------------------------


def _version() -> str:
    found = re.search(
        r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M
    )
    assert found is not None
    return found.group(1)


#: The one name of the project's image, tagged with the package's version.
IMAGE = f"mastery-stream:{_version()}"


def _k8s_containers() -> list[dict[str, Any]]:
    return [
        c
        for _, doc in _manifests()
        if doc["kind"] in {"Job", "StatefulSet", "Deployment"}
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_one_image_name_everywhere() -> None:
    services = _compose()["services"]
    ours = {
        name: svc
        for name, svc in services.items()
        if "build" in svc or "mastery-stream" in str(svc.get("image"))
    }
    assert {"topics", "load", "worker-1", "worker-2", "api", "notifier"} <= set(ours)
    for name, svc in ours.items():
        assert svc["image"] == IMAGE, name
        assert svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
    assert {c["image"] for c in _k8s_containers()} == {IMAGE}
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["resources"] == [p.name for p in K8S]
    (image,) = kustomization["images"]
    assert f"{image['name']}:{image['newTag']}" == IMAGE
    # Every mention of the image in the artefacts and docs uses the one name.
    texts = [ROOT / "Dockerfile", ROOT / "README.md", DEPLOY / "README.md"]
    texts += [COMPOSE, KUSTOMIZATION, *K8S, *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:
        for tag in re.findall(r"\bmastery-stream:[\w.${}-]+", path.read_text()):
            assert tag == IMAGE, (path.name, tag)
    assert f"docker build -t {IMAGE} ." in (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {IMAGE} ." in (DEPLOY / "README.md").read_text()


def test_compose_runs_the_kafka_release_the_tests_run() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_compose_publishes_kafka_and_redis_to_the_host() -> None:
    """So `mastery produce --replay` can load data from the host."""
    services = _compose()["services"]
    kafka = services["kafka"]["environment"]
    listeners = dict(
        item.split("://", 1) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert listeners["PLAINTEXT"] == "kafka:9092"  # what the containers use
    external_port = listeners["EXTERNAL"].rsplit(":", 1)[1]
    assert listeners["EXTERNAL"] == f"localhost:{external_port}"
    assert f"EXTERNAL://:{external_port}" in kafka["KAFKA_LISTENERS"]
    assert "EXTERNAL:PLAINTEXT" in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert f"{external_port}:{external_port}" in services["kafka"]["ports"]
    assert "6379:6379" in services["redis"]["ports"]
    load = services["load"]
    (mount,) = load["volumes"]
    source, target, mode = mount.rsplit(":", 2)
    assert mode == "ro"
    assert source.endswith("../../shared}")  # the repository's ../shared
    assert (DEPLOY / "../../shared").resolve() == (ROOT.parent / "shared").resolve()
    assert load["environment"]["MASTERY_SHARED_DIR"] == target
    replay = load["command"][load["command"].index("--replay") + 1]
    assert replay.startswith(target + "/")
    assert (ROOT.parent / "shared" / replay.removeprefix(target + "/")).is_file()


def test_topic_creation_runs_the_declared_specs() -> None:
    """deploy/ creates topics with `mastery topics` (infra/topic_specs.py),
    with the settings every worker gets: no second list of topic settings."""
    services = _compose()["services"]
    worker_env = services["worker-1"]["environment"]
    topics = services["topics"]
    assert topics["command"] == ["topics"]
    for name in ("MASTERY_TOPIC_PARTITIONS", "MASTERY_TOPIC_REPLICATION"):
        assert topics["environment"][name] == worker_env[name]
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == (
        "false"
    )
    (job,) = _kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics"]
    (worker,) = _kind("StatefulSet")
    assert (
        container["envFrom"]
        == worker["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    )


def _markdown_table(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return rows[2:]  # after the header and its --- line


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        (DEPLOY / "README.md", "## Topics"),
        (ROOT / "docs" / "operations.md", "## Topics"),
    ],
)
def test_the_topic_tables_say_what_is_declared(path: Path, heading: str) -> None:
    settings = Settings(topic_prefix="mastery", topic_partitions=4, app_id=None)
    specs = {s.name: s for s in declared_topics(settings)}
    rows = _markdown_table(path.read_text(), heading)
    assert len(rows) >= len(specs)
    seen = set()
    for row in rows[: len(specs)]:
        name = row[0].strip("`")
        spec = specs[name]
        seen.add(name)
        partitions = row[1]
        assert partitions.split()[0] == str(spec.partitions), row
        configs = " ".join(row[2:])
        for key, value in spec.configs.items():
            if key in {"min.insync.replicas", "unclean.leader.election.enable"}:
                continue  # the same for every topic, said once under the table
            assert f"{key}={value}" in configs, (name, key)
    assert seen == set(specs)


def test_prometheus_scrapes_the_configured_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: set(job["static_configs"][0]["targets"])
        for job in config["scrape_configs"]
    }
    services = _compose()["services"]
    worker_port = services["worker-1"]["environment"]["MASTERY_METRICS_PORT"]
    assert targets["mastery-worker"] == {
        f"worker-1:{worker_port}",
        f"worker-2:{worker_port}",
    }
    assert targets["mastery-api"] == {
        f"api:{services['api']['environment']['MASTERY_API_PORT']}"
    }
    notifier_port = services["notifier"]["environment"]["MASTERY_METRICS_PORT"]
    assert targets["mastery-notifier"] == {f"notifier:{notifier_port}"}


def _dashboard_metrics() -> tuple[dict[str, Any], set[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(
        t["expr"] for panel in dashboard["panels"] for t in panel["targets"]
    )
    names = set(re.findall(r"\bmastery_[a-z_]+", exprs))
    return dashboard, {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_dashboard_uses_only_metrics_that_exist() -> None:
    api_metrics = {
        family.name
        for family in text_string_to_metric_families(ApiMetrics().render().decode())
    }
    # Counters are exposed as <name>_total; their family name drops it.
    api_metrics |= {f"{name}_total" for name in api_metrics}
    _, used = _dashboard_metrics()
    assert used <= WORKER_METRICS | api_metrics, used - WORKER_METRICS - api_metrics


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    dashboard, used = _dashboard_metrics()
    assert {
        "mastery_worker_consumer_lag",
        "mastery_worker_events_total",
        "mastery_worker_freshness_seconds",
        "mastery_worker_dead_letters_total",
        "mastery_api_request_seconds",
    } <= used
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    freshness = [e for e in exprs if "freshness" in e]
    assert any("histogram_quantile(0.5," in e for e in freshness)
    assert any("histogram_quantile(0.99," in e for e in freshness)
    provider = yaml.safe_load(
        (
            DEPLOY / "grafana" / "provisioning" / "dashboards" / "mastery.yaml"
        ).read_text()
    )
    mounted = _compose()["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in mounted)


def test_the_readme_check_commands_run_here() -> None:
    """deploy/README.md's "Check the artefacts" block, executed as written."""
    text = (DEPLOY / "README.md").read_text()
    block = text.split("## Check the artefacts", 1)[1].split("```sh\n", 1)[1]
    commands = [c for c in block.split("```", 1)[0].splitlines() if c.strip()]
    assert len(commands) == 4
    validated = shlex.split(commands[1])
    assert validated[:2] == ["kubernetes-validate", "--strict"]
    assert validated[2:] == [str(p.relative_to(ROOT)) for p in K8S]
    for command in commands:
        argv = shlex.split(command)
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert "MASTERY_METRICS_PORT" in done.stdout  # `mastery worker --help`


# -- Kafka ACLs ---------------------------------------------------------------

#: Operations that let a principal see (Describe) a topic (Kafka's implication).
_SEES = {"describe", "read", "write", "delete", "alter"}


def _verifies_all(role: str, readme: Path) -> None:
    """``role``'s ACLs in ``readme`` allow Describe and DescribeConfigs on
    every declared topic; AssertionError naming the first that lacks one."""
    settings = Settings(topic_prefix="mastery", app_id=None)
    acls = documented_acls(
        role, user=role, prefix="mastery", app_id=settings.worker_id, readme=readme
    )
    for spec in declared_topics(settings):
        ops = {
            a.operation
            for a in acls
            if a.resource == "topic"
            and (
                a.name == spec.name
                if a.pattern == "literal"
                else spec.name.startswith(a.name)
            )
        }
        assert "describeconfigs" in ops and ops & _SEES, (role, spec.name, ops)


@pytest.mark.parametrize("role", ["worker", "notifier", "cli"])
def test_who_verifies_the_topics_may_describe_every_one(role: str) -> None:
    """`mastery worker`, `mastery notifier` and `mastery produce` verify every
    declared topic at start (metadata and DescribeConfigs, exit 78 without):
    deploy/README.md's ACLs of their role must allow both on each."""
    _verifies_all(role, README)


def test_the_describe_check_sees_a_missing_row(tmp_path: Path) -> None:
    text = README.read_text()
    row = "| cli | Topic | literal | `<prefix>.status-changes.v1` |"
    assert row in text
    broken = tmp_path / "README.md"
    broken.write_text(
        "\n".join(ln for ln in text.splitlines() if not ln.startswith(row))
    )
    with pytest.raises(AssertionError, match="status-changes"):
        _verifies_all("cli", broken)


def test_the_notifier_acls_name_its_topic_and_group() -> None:
    settings = Settings(topic_prefix="mastery", app_id="school-7")
    acls = documented_acls(
        "notifier", user="n", prefix="mastery", app_id="school-7", readme=README
    )
    granted = {(a.resource, a.pattern, a.name, a.operation) for a in acls}
    topic = TopicNames("mastery").status_changes
    assert ("topic", "literal", topic, "read") in granted
    assert ("group", "literal", notifier_group(settings), "read") in granted
    # Read on the one topic it consumes, nothing written anywhere.
    assert {(a.resource, a.name) for a in acls if a.operation == "read"} == {
        ("topic", topic),
        ("group", "school-7-notifier"),
    }
    assert not {"write", "create", "all"} & {a.operation for a in acls}
