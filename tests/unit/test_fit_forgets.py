"""EM with a forget rate (processors/fit.py, ``forgets=True``): the E-step
against brute force and the forward algorithm, monotone bounded EM, parameter
recovery, and issue 22's bars on pyBKT's eight reference skills."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest

from app.devstack.workload import dkt_by_skill
from processors.evaluation import evaluate
from processors.fit import Sequences, _Chains, _m_step_forgets, fit, log_likelihood
from processors.mastery import Params
from schemas.bkt_params import BOUNDS, FORGET
from tests.unit.test_fit import SHARED, forward_log_likelihood, simulate

NAMES = ("prior", "learn", "guess", "slip", "forget")


def brute_force(params: Params, seq: list[bool]) -> tuple[float, list[float]]:
    """log P(seq) and the expected counts of _Chains, over all 2^T paths."""
    like = 0.0
    counts = [0.0] * 10
    for states in itertools.product((False, True), repeat=len(seq)):
        p = params.prior if states[0] else 1.0 - params.prior
        c = [0.0] * 10
        c[0 if states[0] else 1] += 1
        for before, after in itertools.pairwise(states):
            if before:
                p *= params.forget if not after else 1.0 - params.forget
                c[8] += 1
                c[9] += not after
            else:
                p *= params.learn if after else 1.0 - params.learn
                c[2] += 1
                c[3] += after
        for mastered, correct in zip(states, seq, strict=True):
            if mastered:
                p *= 1.0 - params.slip if correct else params.slip
                c[6 if correct else 7] += 1
            else:
                p *= params.guess if correct else 1.0 - params.guess
                c[4 if correct else 5] += 1
        like += p
        counts = [a + p * b for a, b in zip(counts, c, strict=True)]
    return math.log(like), [x / like for x in counts]


def columns(params: Params) -> np.ndarray:
    return np.array([[getattr(params, n)] for n in NAMES])


def test_e_step_matches_brute_force_over_all_state_paths() -> None:
    params = Params(prior=0.35, learn=0.2, guess=0.25, slip=0.15, forget=0.1)
    rng = np.random.default_rng(3)
    sequences = [list(rng.random(n) < 0.6) for n in (1, 2, 3, 5, 7, 8, 3)]
    ll, counts = _Chains(Sequences.of(sequences)).e_step(columns(params))
    expected_ll = 0.0
    expected = np.zeros(10)
    for seq in sequences:
        one_ll, one = brute_force(params, [bool(a) for a in seq])
        expected_ll += one_ll
        expected += one
    assert ll[0] == pytest.approx(expected_ll, rel=1e-12)
    np.testing.assert_allclose(counts[:, 0], expected, rtol=1e-10)


def test_log_likelihood_is_the_forward_algorithms() -> None:
    rng = np.random.default_rng(5)
    truth = Params(prior=0.3, learn=0.1, guess=0.2, slip=0.1, forget=0.05)
    sequences = simulate(truth, 200, rng)
    for params in (truth, Params(0.9, 0.001, 0.45, 0.0001, 0.4)):
        ours = log_likelihood(params, Sequences.of(sequences))
        assert ours == pytest.approx(
            forward_log_likelihood(params, sequences), rel=1e-12
        )


def test_em_never_lowers_the_likelihood_and_stays_in_bounds() -> None:
    rng = np.random.default_rng(9)
    data = Sequences.of(simulate(Params(0.4, 0.15, 0.3, 0.2, 0.08), 100, rng))
    chains = _Chains(data)
    every = {**BOUNDS, "forget": FORGET}
    low = np.array([[every[n].low] for n in NAMES])
    high = np.array([[every[n].high] for n in NAMES])
    theta = np.array(
        [[0.9, 0.1], [0.4, 0.01], [0.05, 0.45], [0.45, 0.05], [0.3, 0.001]]
    )
    previous = np.full(2, -np.inf)
    for _ in range(50):
        ll, counts = chains.e_step(theta)
        assert np.all(ll >= previous - 1e-9)
        previous = ll
        theta = _m_step_forgets(counts, theta, low, high)
        assert np.all((theta >= low) & (theta <= high))
        assert np.all(theta[1] + theta[4] < 1.0)


# ------------------------------------------------------- parameter recovery

TRUTHS = [
    Params(prior=0.3, learn=0.12, guess=0.2, slip=0.1, forget=0.05),
    Params(prior=0.6, learn=0.05, guess=0.3, slip=0.15, forget=0.02),
    Params(prior=0.1, learn=0.2, guess=0.1, slip=0.2, forget=0.1),
]
#: Issue 13's tolerances for learn, guess and slip (none for the prior); the
#: forget rate's is ours: 0.03, i.e. a learner's chance of keeping mastery
#: over ten attempts (1-forget)^10 known within about a quarter.
TOLERANCE = {"learn": 0.04, "guess": 0.06, "slip": 0.06, "forget": 0.03}
LEARNERS = 400  # 10 to 40 answers each: ~10,000 attempts per skill
BOOTSTRAP = 20


@pytest.mark.parametrize("truth", TRUTHS, ids=lambda p: f"{p.prior}-{p.forget}")
def test_parameters_are_recovered_within_tolerances_worth_2_5_bootstrap_sds(
    truth: Params,
) -> None:
    rng = np.random.default_rng(20261222)
    sequences = simulate(truth, LEARNERS, rng, longest=40)
    data = Sequences.of(sequences)
    fitted = fit(data, seed=7, forgets=True).params
    for name, tol in TOLERANCE.items():
        assert abs(getattr(fitted, name) - getattr(truth, name)) <= tol, name
    boots = []
    for b in range(BOOTSTRAP):
        pick = rng.integers(0, LEARNERS, LEARNERS)
        resampled = Sequences.of([sequences[i] for i in pick])
        boots.append(fit(resampled, seed=b, forgets=True).params)
    for name, tol in TOLERANCE.items():
        sd = float(np.std([getattr(p, name) for p in boots], ddof=1))
        assert tol >= 2.5 * sd, (name, sd)


# --------------------------------------------- pyBKT's eight reference skills


def test_forgets_fits_of_the_reference_skills_beat_pybkt() -> None:
    raw = json.loads((SHARED / "reference" / "bkt" / "params-forgets.json").read_text())
    reference = {name: Params(**values) for name, values in raw.items()}
    assistments = SHARED / "data" / "assistments2009"
    train = dkt_by_skill(assistments / "builder_train.csv")
    fitted: dict[str, Params] = {}
    started = time.perf_counter()
    for skill, theirs in reference.items():
        result = fit(Sequences.of(train[skill]), restarts=5, seed=0, forgets=True)
        fitted[skill] = result.params
        assert result.converged, skill
        assert result.params.forget > 0.0
        ours_ll = forward_log_likelihood(result.params, train[skill])
        assert ours_ll == pytest.approx(result.log_likelihood, rel=1e-12)
        assert ours_ll >= forward_log_likelihood(theirs, train[skill]) - 1e-6
    assert time.perf_counter() - started < 60
    test = dkt_by_skill(assistments / "builder_test.csv")
    data = {s: test[s] for s in reference}
    _, ours = evaluate(fitted, data)
    _, theirs_metrics = evaluate(reference, data)
    assert ours.attempts == theirs_metrics.attempts == 47_577
    # pyBKT's forgets fit, ranked exactly: 0.841370 (0.8414 in the issue;
    # 0.841366 before the ranking was exact; the same at 8,000 digits).
    assert theirs_metrics.auc == pytest.approx(0.841370, abs=1e-6)
    # Ours has the higher training likelihood on every skill and a test AUC
    # within 1e-4 of pyBKT's (0.84128): not above it (docs/model-calibration.md).
    assert ours.auc >= theirs_metrics.auc - 1e-4
    assert ours.log_loss <= theirs_metrics.log_loss
