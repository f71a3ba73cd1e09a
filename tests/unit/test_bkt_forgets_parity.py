"""BKT with forgetting: parity with pyBKT's forgets model, exactness in
log-odds, and bit-identity with the standard step at forget = 0."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pytest

from processors.mastery import (
    Params,
    apply,
    initial,
    next_log_odds,
    p_mastered,
    sigmoid,
    trace,
)
from tests.unit.test_bkt_parity import TOLERANCE, shared_dir

#: pyBKT's predictions with the forgets parameters, made by the script beside it.
REFERENCE = Path(__file__).parents[1] / "data" / "pybkt_forgets"


def load_forgets() -> dict[str, Params]:
    raw = json.loads(
        (shared_dir() / "reference" / "bkt" / "params-forgets.json").read_text()
    )
    return {name: Params(**values) for name, values in raw.items()}


def test_matches_pybkt_forgets_on_every_test_attempt() -> None:
    params = load_forgets()
    assert all(p.forget > 0 for p in params.values())
    with (REFERENCE / "predictions-forgets.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    sequences: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: int(r["order_id"])):
        sequences[(row["user_id"], row["skill_name"])].append(row)
    compared = saturated = 0
    worst = 0.0
    for (_, skill), seq in sequences.items():
        predicted = trace(params[skill], (r["correct"] == "1" for r in seq))
        for row, (pc, pm) in zip(seq, predicted, strict=True):
            if row["saturated"] != "0":
                saturated += 1
                continue
            worst = max(
                worst,
                abs(pc - float(row["p_correct"])),
                abs(pm - float(row["p_mastered"])),
            )
            compared += 1
    # With forgetting pyBKT never saturates on these skills (P(mastered) stays
    # below 1 - forget <= 0.9983): every one of the 47,577 attempts compares.
    assert saturated == 0
    assert compared == 47_577
    assert worst <= TOLERANCE, worst


def exact_step(params: Params, p: Fraction, correct: bool) -> Fraction:
    learn, forget = Fraction(params.learn), Fraction(params.forget)
    guess, slip = Fraction(params.guess), Fraction(params.slip)
    like_m, like_u = (1 - slip, guess) if correct else (slip, 1 - guess)
    post = p * like_m / (p * like_m + (1 - p) * like_u)
    return post * (1 - forget) + (1 - post) * learn


def _log_odds(p: Fraction) -> float:
    odds = p / (1 - p)
    return math.log(odds.numerator) - math.log(odds.denominator)


@pytest.mark.parametrize("forget", [1e-4, 0.003, 0.05, 0.4])
def test_forget_step_follows_exact_maths(forget: float) -> None:
    params = Params(prior=0.3, learn=0.05, guess=0.25, slip=0.08, forget=forget)
    rng = random.Random(22)
    state = initial(params)
    exact = Fraction(params.prior)
    for n in range(300):
        correct = n < 150 or rng.random() < 0.5  # a long streak, then noise
        state = apply(state, params, correct)
        exact = exact_step(params, exact, correct)
        exact_lo = _log_odds(exact)
        # Rounding of the four constants adds up over 300 steps (~5e-12 here,
        # as for the standard step): 100x below the parity bar.
        assert abs(state.log_odds - exact_lo) <= 1e-11
        # Bounded by the transition: never above max(learn, 1 - forget).
        assert p_mastered(state) <= 1.0 - forget + 1e-15


def former_next_log_odds(params: Params, log_odds: float, correct: bool) -> float:
    """processors.mastery.next_log_odds before forgetting (451b513), verbatim."""
    lo = log_odds + (params.step_correct if correct else params.step_wrong)
    a = params.log_learn
    if a == -math.inf:
        return lo
    if lo > a:
        return lo + math.log1p(math.exp(a - lo)) + params.learn_shift
    return a + math.log1p(math.exp(lo - a)) + params.learn_shift


def test_forget_zero_is_bit_identical_to_the_standard_step() -> None:
    rng = random.Random(7)
    for n in range(200):
        values = dict(
            prior=rng.uniform(1e-4, 0.9999),
            learn=0.0 if n % 10 == 0 else rng.uniform(1e-4, 0.9999),
            guess=rng.uniform(1e-4, 0.4999),
            slip=rng.uniform(1e-4, 0.4999),
        )
        for params in (Params(**values), Params(**values, forget=0.0)):
            for lo in (-30.0, -3.0, 0.0, 0.7, 9.0, 40.0, 800.0, rng.gauss(0, 5)):
                for correct in (True, False):
                    ours = next_log_odds(params, lo, correct)
                    assert ours.hex() == former_next_log_odds(params, lo, correct).hex()


def test_forget_lowers_mastery_and_sets_its_ceiling() -> None:
    base = dict(prior=0.5, learn=0.1, guess=0.2, slip=0.1)
    without = Params(**base)
    with_forget = Params(**base, forget=0.02)
    a = b = 0.0
    for _ in range(60):
        a = next_log_odds(without, a, True)
        b = next_log_odds(with_forget, b, True)
    assert sigmoid(a) == 1.0  # standard BKT saturates in double precision
    # With forgetting the long streak settles at the correct-answer fixed point.
    fixed = b
    assert next_log_odds(with_forget, fixed, True) == pytest.approx(fixed, abs=1e-12)
    assert sigmoid(b) < 1.0 - 0.02


def test_parameters_refuse_learn_plus_forget_of_one() -> None:
    with pytest.raises(ValueError, match="learn \\+ forget"):
        Params(prior=0.5, learn=0.6, guess=0.2, slip=0.1, forget=0.4)
    with pytest.raises(ValueError):
        Params(prior=0.5, learn=0.1, guess=0.2, slip=0.1, forget=-0.1)
