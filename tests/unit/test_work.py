"""Work-remaining dynamic programme against exact enumeration."""

from __future__ import annotations

import itertools
import random

from processors.forecast import (
    HORIZON,
    best_case_items,
    completion_cdf,
    expected_items,
)
from processors.mastery import (
    DEFAULT_PARAMS,
    Params,
    logit,
    next_log_odds,
    p_correct_at,
)

SMALL = 11  # exact enumeration visits 2**SMALL paths


def exact_cdf(p: Params, threshold: float, x: float, work: int, k: int) -> list[float]:
    if work == 0 and x >= threshold:
        return [1.0] * (k + 1)
    if k == 0:
        return [0.0]
    pc = p_correct_at(p, x)
    up = exact_cdf(p, threshold, next_log_odds(p, x, True), max(work - 1, 0), k - 1)
    down = exact_cdf(p, threshold, next_log_odds(p, x, False), max(work - 1, 0), k - 1)
    return [0.0] + [pc * u + (1 - pc) * d for u, d in zip(up, down, strict=True)]


PARAMS = [
    DEFAULT_PARAMS,
    Params(prior=0.65, learn=0.012, guess=0.39, slip=0.2),
    Params(prior=0.06, learn=0.011, guess=0.54, slip=0.0005),
    Params(prior=0.2, learn=0.3, guess=0.25, slip=0.1),
    Params(prior=0.3, learn=0.0, guess=0.2, slip=0.1),
]


def test_grid_matches_exact_enumeration() -> None:
    rng = random.Random(5)
    errors = []
    for p in PARAMS:
        for mastery in (0.8, 0.95):
            threshold = logit(mastery)
            for _ in range(12):
                x = rng.uniform(logit(0.01), threshold + 1.0)
                work = rng.choice([0, 0, 1, 3])
                grid = expected_items(
                    completion_cdf(p, threshold, x, work, horizon=SMALL)
                )
                exact = expected_items(exact_cdf(p, threshold, x, work, SMALL))
                errors.append(abs(grid - exact))
    assert sum(errors) / len(errors) < 0.01
    assert max(errors) < 0.25


def test_cdf_is_a_distribution_function() -> None:
    threshold = logit(0.95)
    for p in PARAMS:
        for x in (-8.0, -1.0, 0.5, threshold - 1e-9, threshold + 3):
            for work in (0, 1, 4):
                cdf = completion_cdf(p, threshold, x, work)
                assert len(cdf) == HORIZON + 1
                assert all(0.0 <= v <= 1.0 + 1e-12 for v in cdf)
                assert all(b >= a - 1e-12 for a, b in itertools.pairwise(cdf))
                assert all(v == 0.0 for v in cdf[:work])


def test_boundaries_are_exact() -> None:
    threshold = logit(0.95)
    p = DEFAULT_PARAMS
    assert expected_items(completion_cdf(p, threshold, threshold, 0)) == 0.0
    assert expected_items(completion_cdf(p, threshold, threshold + 50, 3)) == 3.0
    assert expected_items(completion_cdf(p, threshold, 0.0, HORIZON + 1)) == HORIZON
    never = Params(prior=0.3, learn=0.0, guess=0.2, slip=0.1)
    far = threshold - HORIZON * never.step_correct - 1.0
    assert expected_items(completion_cdf(never, threshold, far, 0)) == HORIZON


def test_expected_is_at_least_the_work_still_needed() -> None:
    threshold = logit(0.9)
    for work in range(0, 8):
        e = expected_items(completion_cdf(DEFAULT_PARAMS, threshold, 1.0, work))
        assert e >= work - 1e-9


def test_best_case_never_exceeds_a_simulated_run() -> None:
    rng = random.Random(11)
    threshold = logit(0.95)
    for p in PARAMS[:4]:
        for _ in range(200):
            x = rng.uniform(-4.0, threshold)
            work = rng.choice([0, 2])
            best = best_case_items(p, threshold, x, work)
            y, n = x, 0
            while not (n >= work and y >= threshold) and n < 500:
                y = next_log_odds(p, y, rng.random() < p_correct_at(p, y))
                n += 1
            assert best <= n


def test_best_case_counts_correct_answers_needed() -> None:
    p = Params(prior=0.5, learn=0.0, guess=0.2, slip=0.1)
    threshold = 2.5 * p.step_correct
    assert best_case_items(p, threshold, 0.0, 0) == 3
    assert best_case_items(p, threshold, 0.0, 5) == 5
    assert best_case_items(p, threshold, threshold, 0) == 0
