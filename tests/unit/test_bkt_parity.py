"""Parity with pyBKT's reference predictions and exactness near P(mastered)=1."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from processors.mastery import (
    Params,
    apply,
    initial,
    p_correct,
    p_mastered,
    sigmoid,
    trace,
)

TOLERANCE = 1e-9


def shared_dir() -> Path:
    env = os.environ.get("MASTERY_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


def load_reference() -> tuple[dict[str, Params], list[dict[str, str]]]:
    # Missing files raise (FileNotFoundError): the test fails, it never skips.
    bkt = shared_dir() / "reference" / "bkt"
    raw = json.loads((bkt / "params.json").read_text())
    params = {name: Params(**values) for name, values in raw.items()}
    with (bkt / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return params, rows


def test_matches_pybkt_on_every_unsaturated_row() -> None:
    params, rows = load_reference()
    sequences: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: int(r["order_id"])):
        sequences[(row["user_id"], row["skill_name"])].append(row)
    compared = 0
    worst = 0.0
    for (_, skill), seq in sequences.items():
        predicted = trace(params[skill], (r["correct"] == "1" for r in seq))
        for row, (pc, pm) in zip(seq, predicted, strict=True):
            if row["saturated"] != "0":
                continue
            worst = max(
                worst,
                abs(pc - float(row["p_correct"])),
                abs(pm - float(row["p_mastered"])),
            )
            compared += 1
    assert compared > 20_000
    assert worst <= TOLERANCE, worst


def exact_step(params: Params, p: Fraction, correct: bool) -> Fraction:
    learn = Fraction(params.learn)
    guess, slip = Fraction(params.guess), Fraction(params.slip)
    if correct:
        like_m, like_u = 1 - slip, guess
    else:
        like_m, like_u = slip, 1 - guess
    post = p * like_m / (p * like_m + (1 - p) * like_u)
    return post + (1 - post) * learn


def test_wrong_answers_after_saturation_follow_exact_maths() -> None:
    params = Params(prior=0.3, learn=0.05, guess=0.25, slip=0.08)
    state = initial(params)
    exact = Fraction(params.prior)
    while p_mastered(state) < 0.99999:
        state = apply(state, params, True)
        exact = exact_step(params, exact, True)
    previous = p_mastered(state)
    for _ in range(10):
        state = apply(state, params, False)
        exact = exact_step(params, exact, False)
        now = p_mastered(state)
        assert now < previous
        previous = now
        # Compare the complement, where the information is: relative 1e-12.
        assert abs(sigmoid(-state.log_odds) - float(1 - exact)) <= 1e-12 * float(
            1 - exact
        )
        assert abs(now - float(exact)) <= 1e-14


def test_deep_saturation_is_not_stuck_at_one() -> None:
    params = Params(prior=0.5, learn=0.1, guess=0.2, slip=0.1)
    state = initial(params)
    exact = Fraction(params.prior)
    for _ in range(40):
        state = apply(state, params, True)
        exact = exact_step(params, exact, True)
    assert p_mastered(state) == 1.0  # beyond double precision ...
    levels = [state.log_odds]
    for _ in range(10):
        state = apply(state, params, False)
        exact = exact_step(params, exact, False)
        levels.append(state.log_odds)
        # ... but the log-odds still carry it exactly.
        odds = exact / (1 - exact)
        exact_lo = _log_fraction(odds)
        assert abs(state.log_odds - exact_lo) <= 1e-12 * abs(exact_lo)
    assert all(b < a for a, b in itertools.pairwise(levels))


def _log_fraction(x: Fraction) -> float:
    return math.log(x.numerator) - math.log(x.denominator)


def test_trace_reports_state_before_each_attempt() -> None:
    params = Params(prior=0.4, learn=0.1, guess=0.2, slip=0.1)
    rows = trace(params, [True, False])
    assert rows[0] == (0.4 * 0.9 + 0.6 * 0.2, 0.4)
    post = 0.4 * 0.9 / (0.4 * 0.9 + 0.6 * 0.2)
    assert abs(rows[1][1] - (post + (1 - post) * 0.1)) < 1e-15
    assert (
        abs(rows[1][0] - p_correct(apply(initial(params), params, True), params)) == 0
    )
