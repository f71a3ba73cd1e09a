"""An attempt id is applied once, whatever happened in between (issue 18,
point 1): a property test over the worker's pure fold.

A learner's attempts are sent in order; a random subset of them is sent
again, each re-send at a random distance after its original (a client's
retry after a timeout, an xAPI statement re-sent days later), with a
possibly different payload. Every record has its own offset, and the stream
is folded in batches of random sizes, as the worker does. The final state
must equal the fold of the originals alone, and every re-send must be a
duplicate.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.registration import RegistrationState
from tests.unit.test_batch import attempt, created, records, run
from tests.unit.test_registration import make_catalog

CATALOG = make_catalog()
MODULES = ("m-a", "m-ab")


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[int]]:
    """(originals, the sent stream, batch sizes)."""
    n = draw(st.integers(min_value=1, max_value=400))
    specs = draw(
        st.lists(
            st.tuples(st.sampled_from(MODULES), st.booleans()), min_size=n, max_size=n
        )
    )
    originals = [
        attempt(attempt_id=f"a{i}", module=module, correct=correct)
        for i, (module, correct) in enumerate(specs)
    ]
    sent: list[tuple[int, bytes]] = [(i, a) for i, a in enumerate(originals)]
    resent = draw(st.lists(st.integers(0, n - 1), max_size=2 * n))
    for i in resent:
        # Anywhere after the original's (current) place, however far.
        first = next(k for k, (j, _) in enumerate(sent) if j == i)
        at = draw(st.integers(first + 1, len(sent)))
        module, correct = specs[i]
        flipped = draw(st.booleans())  # the re-send may differ in payload
        again = attempt(attempt_id=f"a{i}", module=module, correct=correct != flipped)
        sent.insert(at, (i, again))
    stream = [a for _, a in sent]
    sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=40))
    return originals, stream, sizes


def _fold(
    values: list[bytes], sizes: list[int]
) -> tuple[RegistrationState, dict[str, int]]:
    """Fold ``created + values`` at consecutive offsets, in batches of the
    given sizes (cycled), the state carried from batch to batch."""
    stream = records(created(), *values)
    state: RegistrationState | None = None
    outcomes: dict[str, int] = {}
    at, k = 0, 0
    while at < len(stream):
        size = sizes[k % len(sizes)]
        plan, rejected = run(stream[at : at + size], {"r1": state}, CATALOG)
        assert rejected == [] and plan.dead == []
        state = plan.states["r1"]
        for outcome, count in plan.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        at, k = at + size, k + 1
    assert state is not None
    return state, outcomes


@settings(max_examples=60, deadline=None)
@given(_streams())
def test_re_sent_attempts_never_count_twice(
    stream: tuple[list[bytes], list[bytes], list[int]],
) -> None:
    originals, sent, sizes = stream
    expected, _ = _fold(originals, [len(originals) + 1])
    got, outcomes = _fold(sent, sizes)

    assert got.objectives == expected.objectives
    assert got.untagged_work == expected.untagged_work
    assert outcomes == {
        "applied": 1 + len(originals),  # the creation and each original once
        **(
            {"duplicate": len(sent) - len(originals)}
            if len(sent) > len(originals)
            else {}
        ),
    }
    assert got.attempts_remembered == len(originals)
