"""Next-attempt metrics (processors/evaluation.py)."""

from __future__ import annotations

import itertools
import math

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
