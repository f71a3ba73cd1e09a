"""The numpy forecast tables against the former pure-Python implementation
(tests/unit/forecast_reference.py): same maths, same grid, same boundaries."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.devstack.workload import simulated
from processors.catalog import Catalog
from processors.forecast import TableKey, completion_cdf
from processors.forecaster import Forecast
from processors.goals import evaluate
from processors.mastery import DEFAULT_PARAMS, Params, logit
from processors.registration import apply_attempt, register
from schemas.bkt_params import GUESS, LEARN, PRIOR, SLIP, Bound
from tests.unit import forecast_reference as reference

TOLERANCE = 1e-9


def _within(bound: Bound) -> st.SearchStrategy[float]:
    """Anywhere in the bound, its two ends drawn often."""
    ends = st.sampled_from([bound.low, bound.high])
    return st.one_of(ends, st.floats(bound.low, bound.high))


PARAMS = st.builds(
    Params,
    prior=_within(PRIOR),
    learn=_within(LEARN),
    guess=_within(GUESS),
    slip=_within(SLIP),
)
MASTERY = st.one_of(
    st.sampled_from([1e-9, 0.5, 0.95, 0.999999, 1.0 - 1e-9]),
    st.floats(1e-9, 1.0 - 1e-9),
)
OFFSETS = st.lists(
    st.one_of(st.floats(-80.0, 80.0), st.floats(-0.01, 0.01)),
    min_size=1,
    max_size=12,
)


def _gap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    assert len(a) == len(b)
    return max(abs(u - v) for u, v in zip(a, b, strict=True))


@settings(max_examples=30, deadline=None)
@given(
    params=PARAMS,
    mastery=MASTERY,
    work=st.integers(0, 31),
    offsets=OFFSETS,
    absolute=st.lists(st.floats(-1e3, 1e3), max_size=4),
)
def test_numpy_tables_match_the_reference(
    params: Params,
    mastery: float,
    work: int,
    offsets: list[float],
    absolute: list[float],
) -> None:
    threshold = logit(mastery)
    # Log-odds anywhere: around the threshold (its jump), far away, absolute.
    for x in [threshold + o for o in offsets] + absolute + [threshold]:
        ours = completion_cdf(params, threshold, x, work)
        theirs = reference.completion_cdf(params, threshold, x, work)
        assert _gap(ours, theirs) <= TOLERANCE, (params, threshold, x, work)


def test_worst_bounded_chain_matches_at_every_work() -> None:
    """The slowest case of the former code (2.7 s): whole chain, many points."""
    params = Params(prior=0.5, learn=LEARN.low, guess=GUESS.low, slip=SLIP.low)
    threshold = logit(0.999999)
    xs = [-12.0, -9.3, -9.2, -3.0, 0.0, 5.0, threshold - 1e-9, threshold, 40.0, 60.0]
    for work in (0, 1, 2, 5, 30):
        for x in xs:
            assert (
                _gap(
                    completion_cdf(params, threshold, x, work),
                    reference.completion_cdf(params, threshold, x, work),
                )
                <= TOLERANCE
            )


def test_learn_zero_and_defaults_match() -> None:
    """Outside the bounds (learn = 0, the floor rows) and the defaults."""
    never = Params(prior=0.3, learn=0.0, guess=0.2, slip=0.1)
    threshold = logit(0.95)
    for params in (never, DEFAULT_PARAMS):
        for work in (0, 1, 4):
            for x in (-40.0, -6.0, -0.847, 1.0, threshold - 1e-12, threshold + 3):
                assert (
                    _gap(
                        completion_cdf(params, threshold, x, work),
                        reference.completion_cdf(params, threshold, x, work),
                    )
                    <= TOLERANCE
                )


class _ReferenceForecaster:
    """The former implementation behind the Forecaster protocol."""

    def forecast(
        self, params: Params, threshold: float, log_odds: float, work_needed: int
    ) -> Forecast:
        return Forecast(
            reference.completion_cdf(params, threshold, log_odds, work_needed)
        )

    def take_pending(self) -> frozenset[TableKey]:
        return frozenset()

    def start_batch(self) -> None:
        return None


def test_rows_are_byte_identical_to_the_former_code() -> None:
    """Every row of a simulated workload, after every attempt."""
    workload = simulated(
        learning_instances=1, learners_per_instance=15, attempts_per_learner=30, seed=4
    )
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    states = {}
    for created in workload.registrations:
        registered = register(None, created, catalog).state
        assert registered is not None
        states[created.registration_id] = registered
    former = _ReferenceForecaster()
    compared = 0
    for attempt in workload.attempts:
        state = states[attempt.registration_id]
        view = catalog.for_learning_instance(state.learning_instance_id)
        result = apply_attempt(state, attempt, view)
        assert result.state is not None
        state = states[attempt.registration_id] = result.state
        for goal in view.goals_of(state.learning_instance_id):
            ours = orjson.dumps(evaluate(goal, state, view))
            theirs = orjson.dumps(evaluate(goal, state, view, forecaster=former))
            assert ours == theirs
            compared += 1
    assert compared >= len(workload.attempts)
