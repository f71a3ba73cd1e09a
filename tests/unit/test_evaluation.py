"""Next-attempt metrics (processors/evaluation.py)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from processors.evaluation import (
    Histories,
    auc,
    evaluate,
    exact_predictions,
    exact_ranks,
    metrics,
    predictions,
)
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


def _exact_auc(exact: list[Fraction], labels: list[bool]) -> float:
    wins = pairs = 0.0
    for (s, y), (t, z) in itertools.product(zip(exact, labels, strict=True), repeat=2):
        if y and not z:
            pairs += 1
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    return wins / pairs


# learn + forget near 1: P(mastered) forgets the past fast, so histories that
# differ only in their first answer converge (by ~10x per answer).
_MIXING = Params(prior=0.5, learn=0.4, guess=0.2, slip=0.1, forget=0.4)


def test_histories_that_converge_are_ranked_by_their_exact_values() -> None:
    tail = [True] * 30
    data = {"s": [[True, *tail, True], [False, *tail, False]]}
    scores, keys, _, nodes = exact_predictions(_MIXING, data["s"])
    labels = [a for seq in data["s"] for a in seq]
    exact = [v for seq in data["s"] for v in _exact_p_correct(_MIXING, seq)]
    last_a, last_b = len(tail) + 1, 2 * len(tail) + 3
    # The float and its key coincide, the exact predictions do not (the
    # first answer was correct in a: it is still ahead by ~1e-30).
    assert (scores[last_a], keys[last_a]) == (scores[last_b], keys[last_b])
    assert exact[last_a] > exact[last_b]
    assert nodes[last_a] != nodes[last_b]
    _, overall = evaluate({"s": _MIXING}, data)
    assert overall.auc == pytest.approx(_exact_auc(exact, labels), abs=1e-12)
    # Ranked by (float, key) the last two tie and the figure differs.
    by_key = [(s, k) for s, k in zip(scores, keys, strict=True)]
    wins = pairs = 0.0
    for (s, y), (t, z) in itertools.product(zip(by_key, labels, strict=True), repeat=2):
        if y and not z:
            pairs += 1
            wins += 1.0 if s > t else 0.5 if s == t else 0.0
    assert overall.auc != pytest.approx(wins / pairs, abs=1e-6)


def test_exact_ranks_follow_exact_values_to_hundreds_of_digits() -> None:
    rng = np.random.default_rng(9)
    seqs = [[bool(x) for x in rng.random(150) < 0.7] for _ in range(5)]
    # Shared tails after different starts: gaps down to ~1e-150.
    seqs += [[not seqs[0][0], *seqs[0][1:]], [True, False, *seqs[1][2:]]]
    histories = Histories()
    scores, keys, errors, nodes = exact_predictions(_MIXING, seqs, histories)
    ranks = exact_ranks(scores, keys, errors, nodes, histories)
    exact = [v for seq in seqs for v in _exact_p_correct(_MIXING, seq)]
    assert len(set(scores)) < len(set(exact))
    # Ties exactly where the histories are the same, order as the exact one.
    assert len(set(ranks.tolist())) == len(set(nodes)) == len(set(exact))
    by_exact = sorted(range(len(exact)), key=exact.__getitem__)
    for i, j in itertools.pairwise(by_exact):
        assert ranks[i] <= ranks[j]
        assert (
            (ranks[i] == ranks[j]) == (exact[i] == exact[j]) == (nodes[i] == nodes[j])
        )


def test_identical_histories_still_tie() -> None:
    tail = [True, False] * 20
    # The last predictions are the same history, answered right and wrong:
    # one half, however far ahead the decision is pushed.
    data = {"s": [[*tail, True], [*tail, False]]}
    _, overall = evaluate({"s": _MIXING}, data)
    labels = [a for seq in data["s"] for a in seq]
    exact = [v for seq in data["s"] for v in _exact_p_correct(_MIXING, seq)]
    assert overall.auc == pytest.approx(_exact_auc(exact, labels), abs=1e-12)
    _, single = evaluate({"s": _MIXING}, {"s": [[True], [False]]})
    assert single.auc == 0.5


def test_distinct_histories_with_equal_exact_values_tie() -> None:
    # No transition and guess = slip: a right and a wrong answer cancel in
    # either order, so different histories have the same exact prediction
    # (decided in exact rational arithmetic, not by the decimal bounds).
    params = Params(prior=0.3, learn=0.0, guess=0.2, slip=0.2)
    seqs = [[True, False, True], [False, True, False]]
    histories = Histories()
    scores, keys, errors, nodes = exact_predictions(params, seqs, histories)
    ranks = exact_ranks(scores, keys, errors, nodes, histories)
    assert nodes[2] != nodes[5]
    assert ranks[2] == ranks[5] == ranks[0] == ranks[3]
    exact = [v for seq in seqs for v in _exact_p_correct(params, seq)]
    _, overall = evaluate({"s": params}, {"s": seqs})
    assert overall.auc == pytest.approx(
        _exact_auc(exact, [a for seq in seqs for a in seq]), abs=1e-12
    )
