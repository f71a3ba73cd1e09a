"""Security against a real broker: SASL_SSL (SCRAM-SHA-512 over TLS, a CA
made by the test), then KRaft's StandardAuthorizer with exactly the ACLs that
deploy/README.md lists.

The worker, the API, the notifier, ``mastery produce`` and ``mastery dlq`` run
as their own processes and reach the broker only through the SASL_SSL listener
(tests/reliability/kafka_secure.py). A wrong password or a broker certificate
the client does not trust ends a command in one line (exit 78) and leaves
``/readyz`` not ready; under the authorizer each principal gets the ACLs of
its role in the README's table and nothing else, and a principal without one
of them fails clearly (exit 77 for the worker, a 503 naming the denial for an
ingest).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.devstack.embedded import free_port
from app.devstack.stack import post_json
from app.devstack.workload import Workload, simulated
from app.notifier.service import notifier_group
from infra.broker import profile_for
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_reader import read_topic
from schemas.events import AttemptGraded
from schemas.transitions import StatusChanged
from schemas.webhooks import STATUS_CHANGED_TYPE
from tests.integration.helpers import group_behind, partner_of, wait_until_rows_match
from tests.reliability.kafka_secure import (
    DEPLOY_README,
    SecureStack,
    apply_acls,
    denials,
    documented_acls,
    make_pki,
    secure_cluster,
)
from tests.waiting import wait_for
from tests.webhook_receiver import Hook, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: ``mastery produce --instances 1 --learners 3`` produces this workload.
PRODUCE_ARGS = ("--instances", "1", "--learners", "3")
ROLES = {
    "worker": "mastery-worker",
    "notifier": "mastery-notifier",
    "api": "mastery-api",
    "cli": "mastery-cli",
}


def _workload() -> Workload:
    return simulated(learning_instances=1, learners_per_instance=3)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def _mastery(
    stack: SecureStack, user: str, *argv: str, **security: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *argv],
        env=stack.env(**stack.security_env(user, **security)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_error_line(stderr: str) -> str:
    """The command's last line, checked to be its only ``error:`` line and
    not preceded by a traceback (INFO log lines may come before it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _documented(line: str, doc: Path) -> None:
    """The line's advice (after its parenthesized cause) is what ``doc`` shows."""
    advice = line.rsplit("); ", 1)[1]
    assert advice in " ".join(doc.read_text().split()), advice


def _wait_ready(url: str, timeout_s: float = 90.0) -> Any:
    _, body = wait_for(
        lambda: _get(url),
        accept=lambda answer: answer[0] == 200,
        retry_on=(OSError,),
        timeout_s=timeout_s,
        interval_s=0.5,
        what=f"{url} to answer 200",
    )
    return body


@pytest.fixture
def secure_stack(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[SecureStack]:
    """Broker (authorizer per the test's ``authorizer`` param) and Redis
    started, topics created; no worker or API yet."""
    authorizer: bool = request.param
    pki = make_pki(tmp_path / "pki")
    settings = Settings(api_port=0, topic_partitions=2, topic_prefix="sec")
    stack = SecureStack(
        settings,
        log_dir=tmp_path,
        kafka=secure_cluster(pki, authorizer=authorizer),
        pki=pki,
    )
    try:
        stack.start_servers()
        yield stack
    finally:
        broker_log = stack.kafka.nodes[0].log_path
        if broker_log.exists():  # shown when a test fails
            print(f"==== broker\n{broker_log.read_text(errors='replace')[-3000:]}")
        stack.stop(keep_logs=True)
        for log in sorted(tmp_path.glob("*.log")):
            print(f"==== {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def _start_worker(stack: SecureStack, name: str, **security: Any) -> tuple[Any, int]:
    port = free_port()
    env = stack.security_env(ROLES["worker"], **security)
    proc = stack.start_worker(name, extra_env=env | {"MASTERY_METRICS_PORT": str(port)})
    return proc, port


def _status_change_ids(stack: SecureStack) -> set[str]:
    """The transition ids in the status-changes topic (admin listener)."""

    async def go() -> set[str]:
        return {
            StatusChanged.from_bytes(r.value or b"").transition_id
            async for r in read_topic(
                stack.kafka.bootstrap_servers,
                TopicNames(stack.settings.topic_prefix).status_changes,
                profile_for(Settings(broker_profile="kafka")),
            )
        }

    return asyncio.run(go())


def _run_pipeline(stack: SecureStack) -> None:
    """Worker + notifier + API + ``mastery produce`` + ``mastery dlq`` end to
    end, each as its own principal, through SASL_SSL only."""
    receiver = Receiver()
    try:
        _run_pipeline_to(stack, receiver)
    finally:
        receiver.close()


def _run_pipeline_to(stack: SecureStack, receiver: Receiver) -> None:
    _, worker_port = _start_worker(stack, "worker-1")
    notifier = stack.start_notifier(extra_env=stack.security_env(ROLES["notifier"]))
    stack.principal = ROLES["api"]
    stack.start_api()
    # The workload's partner subscribes before anything is produced.
    partner = partner_of(_workload(), _workload().learning_instances[0])
    hook = receiver.hooks["/hook"] = Hook()
    status, body = post_json(
        f"{stack.api_url}/webhooks",
        {"url": receiver.url("/hook"), "event_types": [STATUS_CHANGED_TYPE]},
        token=stack.token(partner_id=partner),
    )
    assert status == 201, body
    assert isinstance(body, dict)
    hook.secret = body["secret"]

    produced = _mastery(stack, ROLES["cli"], "produce", *PRODUCE_ARGS)
    assert produced.returncode == 0, produced.stderr
    assert "produced 134 events" in produced.stdout
    workload = _workload()
    events: list[Any] = [*workload.registrations, *workload.attempts]
    wait_until_rows_match(stack, workload, events, timeout_s=120)

    # An attempt ingested by the API shows up in its learner's row.
    li = workload.learning_instances[0]
    last = workload.attempts[-1]
    attempt = last.model_copy(
        update={
            "event_id": "ev-secure-1",
            "attempt_id": "att-secure-1",
            "is_correct": not last.is_correct,
            "interaction_end_time": last.interaction_end_time + timedelta(minutes=1),
        }
    )
    token = stack.token(partner_id=partner_of(workload, li))
    status, body = post_json(
        f"{stack.api_url}/registrations/{attempt.registration_id}/graded-events",
        _graded(attempt),
        token=token,
    )
    assert status == 202, body
    wait_until_rows_match(stack, workload, [*events, attempt], timeout_s=60)

    # An attempt at a module never tagged is dead-lettered by the worker;
    # `mastery dlq` lists it and re-drives it.
    untagged = attempt.model_copy(
        update={
            "attempt_id": "att-secure-2",
            "module_id": "https://example.org/items/never-tagged",
        }
    )
    status, body = post_json(
        f"{stack.api_url}/registrations/{untagged.registration_id}/graded-events",
        _graded(untagged),
        token=token,
    )
    assert status == 202, body

    def dlq_list() -> subprocess.CompletedProcess[str]:
        listed = _mastery(stack, ROLES["cli"], "dlq", "list")
        assert listed.returncode == 0, listed.stderr
        return listed

    listed = wait_for(
        dlq_list,
        accept=lambda listed: "never-tagged" in listed.stdout,
        timeout_s=60,
        interval_s=1,
        what="`mastery dlq list` to list the untagged attempt",
    )
    assert listed.stdout.count("never-tagged") == 1, listed.stdout
    assert "1 pending" in listed.stderr
    redriven = _mastery(stack, ROLES["cli"], "dlq", "redrive")
    assert redriven.returncode == 0, redriven.stderr
    assert "re-drove 1 records" in redriven.stdout

    assert _wait_ready(f"http://127.0.0.1:{worker_port}/readyz") == {"status": "ready"}
    ready = _wait_ready(f"{stack.api_url}/readyz")
    assert ready["checks"]["broker"] == "ok"

    # The notifier read every status change in its group (offsets committed)
    # and delivered each one to the partner's endpoint.
    topic = TopicNames(stack.settings.topic_prefix).status_changes
    group = notifier_group(stack.settings)

    def notified() -> tuple[set[str], set[str], dict[int, int]]:
        assert notifier.poll() is None, f"notifier exited with {notifier.returncode}"
        sent = _status_change_ids(stack)
        behind = group_behind(stack.kafka.bootstrap_servers, group, topic)
        return sent, {msg_id for msg_id, _ in hook.delivered}, behind

    def done(got: tuple[set[str], set[str], dict[int, int]]) -> bool:
        sent, delivered, behind = got
        caught_up = bool(behind) and not any(behind.values())
        return bool(sent) and delivered == sent and caught_up

    wait_for(
        notified,
        accept=done,
        timeout_s=60,
        interval_s=1,
        what="every status change delivered (sent, delivered, lag per partition)",
    )
    # Through SASL_SSL too, every request is signed with the secret.
    assert hook.bad_signatures == 0


def _graded(attempt: AttemptGraded) -> dict[str, Any]:
    return {
        "module_id": attempt.module_id,
        "is_correct": attempt.is_correct,
        "interaction_end_time": attempt.interaction_end_time.isoformat(),
        "goal_id": attempt.goal_id,
        "attempt_id": attempt.attempt_id,
    }


def _start_api(stack: SecureStack, name: str, **security: Any) -> tuple[Any, str]:
    port = free_port()
    log = (stack.log_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api", "--port", str(port)],
        env=stack.env(**stack.security_env(ROLES["api"], **security)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _not_ready_api(stack: SecureStack, name: str, **security: Any) -> str:
    """Start an API with ``security``; its /readyz answers 503 with the
    broker check's reason, which is returned. The API stays up."""
    proc, url = _start_api(stack, name, **security)

    def readyz() -> tuple[int, Any]:
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        return _get(f"{url}/readyz")

    body: Any
    try:
        status, body = wait_for(
            readyz,
            accept=lambda _: True,  # any answer: the API is up
            retry_on=(OSError,),
            timeout_s=60,
            interval_s=0.3,
            what=f"{name}'s /readyz to answer",
        )
        assert status == 503, body
        assert "broker" in body["error"]["details"]["failing"], body
        reason: str = body["error"]["details"]["checks"]["broker"]
        assert _get(f"{url}/healthz")[0] == 200
        # Its ingest answers 503 with the same reason.
        workload = _workload()
        attempt = workload.attempts[0]
        status, body = post_json(
            f"{url}/registrations/{attempt.registration_id}/graded-events",
            _graded(attempt),
            token=stack.token(
                partner_id=partner_of(workload, workload.learning_instances[0])
            ),
            timeout=30,
        )
        assert status == 503, body
        assert reason in body["error"]["details"]["reason"], body
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    log = (stack.log_dir / f"{name}.log").read_text()
    assert "Traceback" not in log, log
    return reason


def _failed_worker(stack: SecureStack, name: str, **security: Any) -> tuple[int, str]:
    """Start a worker with ``security``; it must end at start-up with one
    error line, its /readyz never answering; (exit code, line)."""
    proc, port = _start_worker(stack, name, **security)
    try:
        code = proc.wait(timeout=90)
    finally:
        stack.stop_worker(proc)
    with pytest.raises(OSError):  # nothing listens: a readiness probe fails
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
    return code, _one_error_line((stack.log_dir / f"{name}.log").read_text())


@pytest.mark.parametrize("secure_stack", [False], indirect=True)
def test_sasl_ssl_pipeline_and_refused_credentials(secure_stack: SecureStack) -> None:
    stack = secure_stack
    _run_pipeline(stack)

    bad_password = {"password": "not-the-password"}
    other_ca = {"ca": stack.pki.other_ca}
    for security, says in (
        (bad_password, "refused the SASL login"),
        (other_ca, "CERTIFICATE_VERIFY_FAILED"),
    ):
        done = _mastery(stack, ROLES["cli"], "produce", *PRODUCE_ARGS, **security)
        assert done.returncode == 78, done.stderr
        line = _one_error_line(done.stderr)
        assert says in line, line
        _documented(line, OPERATIONS)
        if security is bad_password:
            assert (
                "check MASTERY_KAFKA_SASL_USERNAME, MASTERY_KAFKA_SASL_PASSWORD" in line
            )
            assert "not-the-password" not in done.stderr
        else:
            assert "MASTERY_KAFKA_SSL_CAFILE" in line

        done = _mastery(stack, ROLES["cli"], "dlq", "list", **security)
        assert done.returncode == 78 and says in _one_error_line(done.stderr)

        code, line = _failed_worker(
            stack, f"worker-{'pw' if security is bad_password else 'ca'}", **security
        )
        assert code == 78 and says in line, line

        done = _mastery(stack, ROLES["notifier"], "notifier", **security)
        assert done.returncode == 78 and says in _one_error_line(done.stderr)

        reason = _not_ready_api(
            stack, f"api-{'pw' if security is bad_password else 'ca'}", **security
        )
        assert says in reason, reason
        assert (
            "MASTERY_KAFKA_SASL_PASSWORD"
            if security is bad_password
            else "MASTERY_KAFKA_SSL_CAFILE"
        ) in reason

    # The stack with the right credentials was never disturbed.
    assert _get(f"{stack.api_url}/readyz")[0] == 200


@pytest.mark.parametrize("secure_stack", [True], indirect=True)
def test_documented_acls_are_all_each_principal_needs(
    secure_stack: SecureStack,
) -> None:
    stack = secure_stack
    acls = {
        role: documented_acls(role, user=user, prefix="sec", app_id="sec-worker")
        for role, user in ROLES.items()
    }
    for granted in acls.values():
        apply_acls(stack.kafka, granted)
    _run_pipeline(stack)
    # Nothing was denied and retried behind the scenes either.
    for user in ROLES.values():
        assert denials(stack.kafka, f"User:{user}") == []

    # Without Write on the events topic, the API's ingest answers 503 naming
    # the denial (and nothing is half-written).
    write_events = next(
        a
        for a in acls["api"]
        if a.name == "sec.registration-events.v1" and a.operation == "write"
    )
    apply_acls(stack.kafka, [write_events], delete=True)
    workload = _workload()
    attempt = workload.attempts[0].model_copy(update={"attempt_id": "att-denied"})
    token = stack.token(partner_id=partner_of(workload, workload.learning_instances[0]))
    body: Any
    status, body = wait_for(  # the broker applies the ACL change asynchronously
        lambda: post_json(
            f"{stack.api_url}/registrations/{attempt.registration_id}/graded-events",
            _graded(attempt),
            token=token,
            timeout=30,
        ),
        accept=lambda answer: answer[0] != 202,
        timeout_s=30,
        interval_s=1,
        what="the API to refuse an event once Write on the events topic is removed",
    )
    assert status == 503, body
    assert body["error"]["code"] == "broker_unavailable", body
    assert "TopicAuthorizationFailedError" in body["error"]["details"]["reason"]
    assert body["error"]["details"]["stored"] == []

    # Without Read on the dead-letter topic, `mastery dlq list` ends in one
    # line (77), not in "0 pending".
    read_letters = next(
        a
        for a in acls["cli"]
        if a.name == "sec.dead-letter.v1" and a.operation == "read"
    )
    apply_acls(stack.kafka, [read_letters], delete=True)
    done = _wait_denied(stack, "dlq", "list")
    line = _one_error_line(done.stderr)
    assert "as 'mastery-cli'" in line and "sec.dead-letter.v1" in line, line
    _documented(line, DEPLOY_README)
    _documented(line, OPERATIONS)

    for proc in list(stack.workers):
        stack.stop_worker(proc)
    # Without Write on the dead-letter topic (still described, so the start-up
    # checks pass), a worker that must dead-letter a record ends with one
    # line (77) instead of a bug's traceback (70).
    write_letters = next(
        a
        for a in acls["worker"]
        if a.name == "sec.dead-letter.v1" and a.operation == "write"
    )
    apply_acls(stack.kafka, [replace(write_letters, operation="describe")])
    apply_acls(stack.kafka, [write_letters], delete=True)
    _send_garbage(stack)
    proc, _ = _start_worker(stack, "worker-noletters")
    assert proc.wait(timeout=90) == 77
    log = (stack.log_dir / "worker-noletters.log").read_text()
    assert "Traceback" not in log, log
    exits = [line for line in log.splitlines() if "worker exits" in line]
    assert len(exits) == 1, log
    assert "AccessDenied" in exits[0] and "sec.dead-letter.v1" in exits[0]
    assert 'deploy/README.md lists ("Kafka ACLs")' in exits[0]

    # Without its group ACL, a worker ends at start-up with one line (77),
    # instead of Faust waiting silently for an assignment; so does a notifier.
    group = next(a for a in acls["worker"] if a.resource == "group")
    notifier_group_acl = next(a for a in acls["notifier"] if a.resource == "group")
    apply_acls(stack.kafka, [group, notifier_group_acl], delete=True)
    code, line = _failed_worker(stack, "worker-nogroup")
    assert code == 77, line
    assert "denied SASL_SSL SCRAM-SHA-512 as 'mastery-worker'" in line
    assert "GroupAuthorizationFailedError: sec-worker" in line
    assert 'deploy/README.md lists ("Kafka ACLs")' in line
    _documented(line, DEPLOY_README)
    done = _mastery(stack, ROLES["notifier"], "notifier")
    assert done.returncode == 77, done.stderr
    line = _one_error_line(done.stderr)
    assert "as 'mastery-notifier'" in line, line
    assert "GroupAuthorizationFailedError: sec-worker-notifier" in line, line
    _documented(line, DEPLOY_README)


def _wait_denied(stack: SecureStack, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a CLI command until the broker applied an ACL deletion (exit 77)."""
    return wait_for(
        lambda: _mastery(stack, ROLES["cli"], *argv),
        accept=lambda done: done.returncode == 77,
        timeout_s=30,
        interval_s=1,
        what=f"`mastery {' '.join(argv)}` to be denied (exit 77)",
    )


def _send_garbage(stack: SecureStack) -> None:
    """One undecodable record, written over the plaintext (admin) listener."""

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                "sec.registration-events.v1", b"not an event", key=b"garbage"
            )
        finally:
            await producer.stop()

    asyncio.run(go())
