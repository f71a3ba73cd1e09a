"""Next-attempt metrics (processors/evaluation.py)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from processors.evaluation import auc, evaluate, metrics, predictions
from processors.mastery import DEFAULT_PARAMS, Params, trace
from processors.trace import TraceError


def pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    """P(score of a positive > score of a negative), ties one half."""
    wins = 0.0
    pairs = 0
    for (s, y), (t, z) in itertools.product(zip(scores, labels, strict=True), repeat=2):
        if y and not z:
            pairs += 1
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    return wins / pairs


def test_auc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(300), 1)  # many ties
    labels = rng.random(300) < scores
    assert auc(scores, labels) == pytest.approx(
        pairwise_auc(scores.tolist(), labels.tolist()), abs=1e-12
    )
    assert auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
    assert math.isnan(auc(np.array([0.1, 0.9]), np.array([True, True])))


def test_metrics_by_hand() -> None:
    m = metrics([0.8, 0.4], [True, False])
    assert m.attempts == 2
    assert m.auc == 1.0
    assert m.rmse == pytest.approx(math.sqrt((0.2**2 + 0.4**2) / 2))
    assert m.log_loss == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    with pytest.raises(ValueError, match="2 predictions for 1 answers"):
        metrics([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="no answers"):
        metrics([], [])


def test_predictions_are_the_workers_trace() -> None:
    params = Params(prior=0.4, learn=0.1, guess=0.2, slip=0.1)
    seqs = [[True, False, True], [False]]
    expected = [pc for s in seqs for pc, _ in trace(params, s)]
    assert predictions(params, seqs) == expected


def test_evaluate_per_skill_and_overall() -> None:
    a = Params(prior=0.4, learn=0.1, guess=0.2, slip=0.1)
    data = {"a": [[True, False, True], [False, True]], "b": [[True, True, False]]}
    per_skill, overall = evaluate({"a": a}, data, default=DEFAULT_PARAMS)
    assert per_skill["a"].attempts == 5
    assert per_skill["b"] == metrics(
        predictions(DEFAULT_PARAMS, data["b"]), [True, True, False]
    )
    assert overall.attempts == 8
    with pytest.raises(TraceError, match="skill 'b'"):
        evaluate({"a": a}, data)


def _exact_p_correct(params: Params, seq: list[bool]) -> list[Fraction]:
    """P(correct) before each answer in exact rational arithmetic."""
    learn, forget = Fraction(params.learn), Fraction(params.forget)
    guess, slip = Fraction(params.guess), Fraction(params.slip)
    p = Fraction(params.prior)
    out = []
    for correct in seq:
        out.append(guess + (1 - slip - guess) * p)
        like_m, like_u = (1 - slip, guess) if correct else (slip, 1 - guess)
        post = p * like_m / (p * like_m + (1 - p) * like_u)
        p = post * (1 - forget) + (1 - post) * learn
    return out


def test_ties_near_mastery_are_broken_by_the_exact_value() -> None:
    params = Params(prior=0.5, learn=0.1, guess=0.2, slip=0.1)
    # Long correct streaks: P(mastered) passes 1 - 1e-16, P(correct) stops at
    # 1 - slip in floating point though the exact values still rise.
    rng = np.random.default_rng(22)
    seqs = [[True] * n + [bool(b) for b in rng.random(3) < 0.9] for n in range(8, 60)]
    data = {"s": seqs}
    scores = predictions(params, seqs)
    labels = [a for s in seqs for a in s]
    exact = [v for s in seqs for v in _exact_p_correct(params, s)]
    assert len(set(scores)) < len(set(exact))  # the floats do tie
    wins = pairs = 0.0
    for (s, y), (t, z) in itertools.product(zip(exact, labels, strict=True), repeat=2):
        if y and not z:
            pairs += 1
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    _, overall = evaluate({"s": params}, data)
    assert overall.auc == pytest.approx(wins / pairs, abs=1e-12)
    assert overall.auc != pytest.approx(metrics(scores, labels).auc, abs=1e-6)


def test_exact_ranking_holds_with_forgetting_and_across_skills() -> None:
    a = Params(prior=0.5, learn=0.1, guess=0.2, slip=0.1, forget=1e-4)
    b = Params(prior=0.3, learn=0.2, guess=0.25, slip=0.1)
    rng = np.random.default_rng(5)
    data = {
        "a": [[bool(x) for x in rng.random(40) < 0.85] for _ in range(6)],
        "b": [[True] * 45 + [False], [True] * 50 + [True]],
    }
    exact: list[Fraction] = []
    labels: list[bool] = []
    for skill, params in (("a", a), ("b", b)):
        for seq in data[skill]:
            exact += _exact_p_correct(params, seq)
            labels += seq
    wins = pairs = 0.0
    for (s, y), (t, z) in itertools.product(zip(exact, labels, strict=True), repeat=2):
        if y and not z:
            pairs += 1
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    _, overall = evaluate({"a": a, "b": b}, data)
    assert overall.auc == pytest.approx(wins / pairs, abs=1e-12)
