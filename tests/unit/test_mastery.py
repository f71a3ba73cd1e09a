"""BKT in log-odds: parameters, updates, serialization."""

from __future__ import annotations

import math

import orjson
import pytest

from processors.mastery import (
    DEFAULT_PARAMS,
    ObjectiveState,
    Params,
    apply,
    initial,
    logit,
    next_log_odds,
    p_correct,
    p_mastered,
    sigmoid,
    trace,
)
from schemas.events import BKTParameters

P = Params(prior=0.3, learn=0.1, guess=0.2, slip=0.1)


def test_params_reject_degenerate_values() -> None:
    with pytest.raises(ValueError, match="guess \\+ slip"):
        Params(prior=0.3, learn=0.1, guess=0.6, slip=0.4)
    with pytest.raises(ValueError):
        Params(prior=1.0, learn=0.1, guess=0.2, slip=0.1)
    with pytest.raises(ValueError):
        Params(prior=0.3, learn=1.0, guess=0.2, slip=0.1)


def test_params_from_schema_and_equality_ignore_derived_fields() -> None:
    schema = BKTParameters(prior=0.3, learn=0.1, guess=0.2, slip=0.1)
    assert Params.from_schema(schema) == P
    assert hash(Params.from_schema(schema)) == hash(P)
    assert DEFAULT_PARAMS.guess + DEFAULT_PARAMS.slip < 1


def test_initial_state_is_the_prior() -> None:
    s = initial(P)
    assert abs(p_mastered(s) - 0.3) < 1e-15
    assert (s.attempts, s.correct, s.stuck_llr) == (0, 0, 0.0)
    assert abs(p_correct(s, P) - (0.3 * 0.9 + 0.7 * 0.2)) < 1e-15


def test_apply_matches_textbook_bkt() -> None:
    s = apply(initial(P), P, True)
    post = 0.3 * 0.9 / (0.3 * 0.9 + 0.7 * 0.2)
    assert abs(p_mastered(s) - (post + (1 - post) * 0.1)) < 1e-15
    assert (s.attempts, s.correct) == (1, 1)
    w = apply(initial(P), P, False)
    post = 0.3 * 0.1 / (0.3 * 0.1 + 0.7 * 0.8)
    assert abs(p_mastered(w) - (post + (1 - post) * 0.1)) < 1e-15
    assert (w.attempts, w.correct) == (1, 0)


def test_without_learning_only_evidence_moves_the_estimate() -> None:
    p = Params(prior=0.5, learn=0.0, guess=0.2, slip=0.1)
    x = next_log_odds(p, 0.0, True)
    assert abs(x - math.log(0.9 / 0.2)) < 1e-15
    assert abs(next_log_odds(p, x, False) - (x + math.log(0.1 / 0.8))) < 1e-15


def test_stuck_llr_rises_for_guessing_and_falls_for_knowing() -> None:
    guessing = initial(P)
    knowing = initial(P)
    for i in range(15):
        guessing = apply(guessing, P, i % 5 == 0)
        knowing = apply(knowing, P, True)
    assert guessing.stuck_llr > 1.0
    assert knowing.stuck_llr < -10.0


def test_json_round_trip_is_exact() -> None:
    s = initial(P)
    for c in [True, False, True, True, False, True]:
        s = apply(s, P, c)
    back = ObjectiveState.from_json(orjson.loads(orjson.dumps(s.to_json())))
    assert back == s
    assert back.log_odds == s.log_odds


def test_trace_is_before_each_answer() -> None:
    rows = trace(P, [True, True, False])
    assert len(rows) == 3
    assert rows[0][1] == p_mastered(initial(P))
    assert rows[1][1] == p_mastered(apply(initial(P), P, True))


def test_sigmoid_and_logit_are_inverse_and_stable() -> None:
    for p in (1e-12, 0.3, 0.5, 0.99999):
        assert abs(sigmoid(logit(p)) - p) <= 1e-15 * max(1.0, p / 1e-12) * p + 1e-27
    assert sigmoid(-1000.0) == 0.0
    assert sigmoid(1000.0) == 1.0
