"""A client that re-sends a whole ``POST /batch-events`` after a timeout, as
docs/ingest.md tells it to, has each attempt counted once, however many
attempts came in between (issue 18, point 1: with a window of the last 128
attempt ids, 200 re-sent after 130 others were all counted twice).
"""

from __future__ import annotations

import pytest

from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from schemas.events import AttemptGraded, RegistrationCreated
from tests.integration.helpers import partner_of, wait_until_rows_match
from tests.oracle import expected_rows
from tests.reliability.cluster import _Client, _item, seed_learners

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_batch_re_sent_after_130_other_attempts_counts_once(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=2, attempts_per_learner=400, seed=9
    )
    learner = next(
        r.registration_id for r in workload.registrations if r.role == "learner"
    )
    # All wrong: the learner stays in progress, where the row's progress and
    # work remaining depend on how many attempts were counted.
    mine = [
        a.model_copy(update={"is_correct": False})
        for a in workload.attempts
        if a.registration_id == learner
    ]
    first, between, sentinel = mine[:200], mine[200:330], mine[330]
    stack.start_worker("worker-1")
    seed_learners(stack, workload)
    client = _Client(
        stack,
        stack.token(
            partner_id=partner_of(workload, workload.learning_instances[0]),
            roles=("ingest",),
        ),
    )

    def send(attempts: list[AttemptGraded]) -> None:
        status, answer = client.post(
            "/batch-events", {"events": [_item(a) for a in attempts]}
        )
        assert status == 207, answer
        assert answer["accepted"] == len(attempts), answer

    send(first)
    send(between)
    send(first)  # the retry after a timeout: the same 200 events again
    send([sentinel])  # on the same partition, after the re-send

    once: list[RegistrationCreated | AttemptGraded] = [
        *workload.registrations,
        *first,
        *between,
        sentinel,
    ]
    oracle = wait_until_rows_match(stack, workload, once)
    # The test can tell: counted twice, the same learner's rows differ.
    twice = expected_rows(
        workload.catalog,
        [
            *once[:-1],
            *(a.model_copy(update={"attempt_id": f"{a.attempt_id}-2"}) for a in first),
            sentinel,
        ],
    )
    assert twice[learner] != oracle[learner]
    print(f"rows counted once: {oracle[learner]}\ncounted twice: {twice[learner]}")
