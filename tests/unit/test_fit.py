"""The EM fitter (processors/fit.py): its E-step against brute force and the
forward algorithm, the bounds, parameter recovery with a bootstrap check, and
the issue-13 evidence on pyBKT's eight reference skills."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.devstack.workload import read_dkt
from processors.evaluation import evaluate
from processors.fit import Sequences, _m_step, _Paths, fit, log_likelihood
from processors.mastery import Params, trace
from schemas.bkt_params import BOUNDS, GUESS, SLIP, Bound

SHARED = Path(
    os.environ.get("MASTERY_SHARED_DIR", Path(__file__).parents[3] / "shared")
)
NAMES = ("prior", "learn", "guess", "slip")


def simulate(
    truth: Params, learners: int, rng: np.random.Generator, longest: int = 25
) -> list[list[bool]]:
    """BKT learners drawn from ``truth`` (who forget at ``truth.forget``; no
    draw is spent on it at 0); 5 to ``longest`` answers each."""
    sequences = []
    for _ in range(learners):
        mastered = rng.random() < truth.prior
        answers = []
        for _ in range(int(rng.integers(5, longest + 1))):
            p = 1.0 - truth.slip if mastered else truth.guess
            answers.append(bool(rng.random() < p))
            if mastered:
                if truth.forget:
                    mastered = not rng.random() < truth.forget
            else:
                mastered = rng.random() < truth.learn
        sequences.append(answers)
    return sequences


def forward_log_likelihood(params: Params, sequences: list[list[bool]]) -> float:
    """log P(answers) by the worker's forward algorithm (processors.mastery)."""
    total = 0.0
    for seq in sequences:
        for (pc, _), correct in zip(trace(params, seq), seq, strict=True):
            total += math.log(pc if correct else 1.0 - pc)
    return total


def brute_force_counts(params: Params, seq: list[bool]) -> tuple[float, list[float]]:
    """log P(seq) and the posterior expected counts, over all 2^T state paths."""
    like = 0.0
    counts = [0.0] * 8
    for states in itertools.product((False, True), repeat=len(seq)):
        p = params.prior if states[0] else 1.0 - params.prior
        c = [0.0] * 8
        c[0 if states[0] else 1] += 1
        for before, after in itertools.pairwise(states):
            if before and not after:
                p = 0.0  # no forgetting
            elif not before:
                p *= params.learn if after else 1.0 - params.learn
                c[3 if after else 2] += 1
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
    params = Params(prior=0.35, learn=0.2, guess=0.25, slip=0.15)
    rng = np.random.default_rng(3)
    sequences = [list(rng.random(n) < 0.6) for n in (1, 2, 3, 5, 7, 8)]
    ll, counts = _Paths(Sequences.of(sequences)).e_step(columns(params))
    expected_ll = 0.0
    expected = np.zeros(8)
    for seq in sequences:
        one_ll, one = brute_force_counts(params, [bool(a) for a in seq])
        expected_ll += one_ll
        expected += one
    assert ll[0] == pytest.approx(expected_ll, rel=1e-12)
    np.testing.assert_allclose(counts[:, 0], expected, rtol=1e-10)


def test_log_likelihood_is_the_forward_algorithms() -> None:
    rng = np.random.default_rng(5)
    truth = Params(prior=0.3, learn=0.1, guess=0.2, slip=0.1)
    sequences = simulate(truth, 200, rng)
    for params in (truth, Params(0.9, 0.001, 0.45, 0.0001)):
        ours = log_likelihood(params, Sequences.of(sequences))
        assert ours == pytest.approx(
            forward_log_likelihood(params, sequences), rel=1e-12
        )


def test_em_never_lowers_the_likelihood_and_stays_in_bounds() -> None:
    rng = np.random.default_rng(9)
    data = Sequences.of(simulate(Params(0.4, 0.15, 0.3, 0.2), 100, rng))
    paths = _Paths(data)
    low = np.array([[BOUNDS[n].low] for n in NAMES])
    high = np.array([[BOUNDS[n].high] for n in NAMES])
    theta = np.array([[0.9, 0.1], [0.4, 0.01], [0.05, 0.45], [0.45, 0.05]])
    previous = np.full(2, -np.inf)
    for _ in range(50):
        ll, counts = paths.e_step(theta)
        assert np.all(ll >= previous - 1e-9)
        previous = ll
        theta = _m_step(counts, theta, low, high)
        assert np.all((theta >= low) & (theta <= high))


def test_fit_clips_to_the_accepted_ranges() -> None:
    # Learners who guess right 70% of the time: the bound holds guess < 0.5.
    rng = np.random.default_rng(2)
    data = Sequences.of(simulate(Params(0.2, 0.05, 0.7, 0.01), 300, rng))
    result = fit(data, seed=1)
    assert result.params.guess == GUESS.high
    assert SLIP.contains(result.params.slip)
    wide = dict(BOUNDS, guess=Bound(1e-4, 0.8, "test"), slip=Bound(1e-4, 0.1, "t"))
    freer = fit(data, seed=1, bounds=wide)
    assert freer.params.guess > 0.6
    assert freer.log_likelihood > result.log_likelihood


def test_bad_arguments_are_refused() -> None:
    data = Sequences.of([[True, False]])
    with pytest.raises(ValueError, match="restarts"):
        fit(data, restarts=0)
    with pytest.raises(ValueError, match="guess \\+ slip"):
        fit(data, bounds=dict(BOUNDS, slip=Bound(1e-4, 0.6, "t")))
    with pytest.raises(ValueError, match="no answers"):
        fit(Sequences.of([[], []]))


def test_sequences_round_trip() -> None:
    seqs = [[True], [False, True, True], [], [False]]
    data = Sequences.of(seqs)
    assert (data.attempts, data.learners) == (5, 3)
    assert [s.tolist() for s in data.split()] == [[True], [False, True, True], [False]]


# ------------------------------------------------------- parameter recovery

TRUTHS = [
    Params(prior=0.3, learn=0.12, guess=0.2, slip=0.1),
    Params(prior=0.6, learn=0.05, guess=0.3, slip=0.15),
    Params(prior=0.1, learn=0.2, guess=0.1, slip=0.2),
]
#: Issue 13's tolerances. The prior is the least identified parameter (its
#: bootstrap SD here is ~0.03) and the issue sets it none.
TOLERANCE = {"learn": 0.04, "guess": 0.06, "slip": 0.06}
LEARNERS = 400  # ~6,000 attempts per skill
BOOTSTRAP = 30


@pytest.mark.parametrize("truth", TRUTHS, ids=lambda p: f"{p.prior}-{p.learn}")
def test_parameters_are_recovered_within_tolerances_worth_2_5_bootstrap_sds(
    truth: Params,
) -> None:
    rng = np.random.default_rng(20261201)
    sequences = simulate(truth, LEARNERS, rng)
    data = Sequences.of(sequences)
    assert data.attempts >= 5000
    fitted = fit(data, seed=7).params
    for name, tol in TOLERANCE.items():
        assert abs(getattr(fitted, name) - getattr(truth, name)) <= tol, name
    # The tolerances must be meaningful for this data set: at least 2.5
    # bootstrap standard deviations (learners resampled with replacement).
    boots = []
    for b in range(BOOTSTRAP):
        pick = rng.integers(0, LEARNERS, LEARNERS)
        boots.append(fit(Sequences.of([sequences[i] for i in pick]), seed=b).params)
    for name, tol in TOLERANCE.items():
        sd = float(np.std([getattr(p, name) for p in boots], ddof=1))
        assert tol >= 2.5 * sd, (name, sd)


# --------------------------------------------- pyBKT's eight reference skills


def _by_skill(path: Path) -> dict[str, list[list[bool]]]:
    data: dict[str, list[list[bool]]] = defaultdict(list)
    for skills, answers in read_dkt(path):
        own: dict[str, list[bool]] = defaultdict(list)
        for skill, correct in zip(skills, answers, strict=True):
            own[f"skill-{skill}"].append(correct)
        for name, seq in own.items():
            data[name].append(seq)
    return data


def test_fits_of_the_reference_skills_beat_pybkt_and_predict_better() -> None:
    raw = json.loads((SHARED / "reference" / "bkt" / "params.json").read_text())
    reference = {name: Params(**values) for name, values in raw.items()}
    assistments = SHARED / "data" / "assistments2009"
    train = _by_skill(assistments / "builder_train.csv")
    fitted: dict[str, Params] = {}
    started = time.perf_counter()
    for skill, theirs in reference.items():
        data = Sequences.of(train[skill])
        result = fit(data, restarts=5, seed=0)
        fitted[skill] = result.params
        assert result.converged, skill
        # Both log-likelihoods by the worker's forward algorithm.
        ours_ll = forward_log_likelihood(result.params, train[skill])
        assert ours_ll == pytest.approx(result.log_likelihood, rel=1e-12)
        inside = Params(*(BOUNDS[n].clip(getattr(theirs, n)) for n in NAMES))
        if inside == theirs:
            assert ours_ll >= forward_log_likelihood(theirs, train[skill]) - 1e-6
        else:
            # skill-44: pyBKT's guess 0.539 is outside guess < 0.5. Inside the
            # bounds we beat its nearest accepted point; with guess allowed up
            # to 0.6 the same EM beats pyBKT itself.
            assert skill == "skill-44"
            assert ours_ll >= forward_log_likelihood(inside, train[skill])
            wide = dict(
                BOUNDS, guess=Bound(1e-4, 0.6, "test"), slip=Bound(1e-4, 0.3, "t")
            )
            free = fit(data, restarts=5, seed=0, bounds=wide)
            assert free.log_likelihood >= (
                forward_log_likelihood(theirs, train[skill]) - 1e-6
            )
    assert time.perf_counter() - started < 30
    test = _by_skill(assistments / "builder_test.csv")
    _, ours = evaluate(fitted, {s: test[s] for s in reference})
    _, theirs_metrics = evaluate(reference, {s: test[s] for s in reference})
    # Ranked by the exact prediction (processors/evaluation.py): 0.7644, was
    # 0.7622 with near-1.0 ties counted one half.
    assert theirs_metrics.auc == pytest.approx(0.76443, abs=5e-5)
    assert ours.auc >= theirs_metrics.auc
    assert ours.attempts == theirs_metrics.attempts == 47577
