"""Work remaining with forgetting: the same chain, the forgetting transition."""

from __future__ import annotations

import itertools
import math
import random

from processors.forecast import (
    HORIZON,
    best_case_items,
    completion_cdf,
    expected_items,
)
from processors.mastery import Params, logit, next_log_odds, p_correct_at
from tests.unit.test_work import SMALL, exact_cdf

FORGETS = [
    Params(prior=0.3, learn=0.1, guess=0.2, slip=0.1, forget=0.01),
    Params(prior=0.77, learn=0.064, guess=0.158, slip=0.111, forget=0.033),
    Params(prior=0.5, learn=0.3, guess=0.25, slip=0.1, forget=0.2),
    Params(prior=0.6, learn=0.02, guess=0.001, slip=0.002, forget=1e-4),
]


def test_grid_matches_exact_enumeration() -> None:
    rng = random.Random(22)
    errors = []
    for p in FORGETS:
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
    for p in FORGETS:
        for x in (-8.0, -1.0, 0.5, threshold - 1e-9, threshold + 3):
            for work in (0, 1, 4):
                cdf = completion_cdf(p, threshold, x, work)
                assert len(cdf) == HORIZON + 1
                assert all(0.0 <= v <= 1.0 + 1e-12 for v in cdf)
                assert all(b >= a - 1e-12 for a, b in itertools.pairwise(cdf))
                assert all(v == 0.0 for v in cdf[:work])


def test_a_threshold_above_the_ceiling_is_never_reached() -> None:
    # forget = 0.033: after any attempt P(mastered) < 0.967, so 0.98 is out of reach
    p = FORGETS[1]
    threshold = logit(0.98)
    for x in (-2.0, 3.0, threshold + 1.0):
        for work in (1, 3):
            assert expected_items(completion_cdf(p, threshold, x, work)) == HORIZON
            assert best_case_items(p, threshold, x, work) == HORIZON


def test_the_complete_region_is_exact() -> None:
    # Where `work` wrong answers still end above the threshold, completion is
    # certain at `work` items; just below it, it is not.
    p = FORGETS[0]
    threshold = logit(0.9)
    ceiling = math.log((1 - p.forget) / p.forget)
    checked = 0
    for work in (1, 2, 3):
        for x in (
            threshold + 0.01 * i for i in range(int(100 * (ceiling - threshold)))
        ):
            y = x
            for _ in range(work):
                y = next_log_odds(p, y, False)
            cdf = completion_cdf(p, threshold, x, work)
            if y >= threshold + 1e-9:
                assert expected_items(cdf) == work
                checked += 1
            elif y < threshold - 1e-9:
                assert cdf[work] < 1.0
    assert checked > 20
    # Three wrong answers from anywhere end below logit(0.9): never certain.
    assert completion_cdf(p, threshold, ceiling, 3)[3] < 1.0


def test_best_case_never_exceeds_a_simulated_run() -> None:
    # learn + forget < 1 keeps the transition increasing, so an all-correct
    # run is still the fastest: the topics' minimum is never above the actual.
    rng = random.Random(11)
    threshold = logit(0.9)
    for p in FORGETS:
        for _ in range(200):
            x = rng.uniform(-4.0, threshold)
            work = rng.choice([0, 2])
            best = best_case_items(p, threshold, x, work)
            y, n = x, 0
            while not (n >= work and y >= threshold) and n < 500:
                y = next_log_odds(p, y, rng.random() < p_correct_at(p, y))
                n += 1
            assert best <= n
