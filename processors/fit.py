"""Fitting BKT parameters to answer sequences: Baum-Welch (EM), vectorised.

The model is the two-state BKT hidden Markov model without forgetting, as in
pyBKT's default: a learner starts mastered with P=prior, an unmastered learner
becomes mastered after each answer with P=learn and never forgets; answers are
correct with P=guess unmastered and P=1-slip mastered.

Without forgetting a sequence of ``T`` answers has only ``T + 1`` hidden paths:
"mastered from the start" (``k = 0``) or "unmastered for exactly the first
``k`` answers" (``k = 1..T``, learned after answer ``k`` if ``k < T``). The
complete-data log-likelihood of path ``k`` is linear in eight counts,

    [mastered at start, unmastered at start, unlearned steps, learned steps,
     correct unmastered, wrong unmastered, correct mastered, wrong mastered]

with coefficients ``log prior, log(1-prior), log(1-learn), log learn, log
guess, log(1-guess), log(1-slip), log slip``. So the E-step of Baum-Welch is
one matrix product (every path of every sequence at once), a log-sum-exp per
sequence and a second matrix product for the expected counts; the M-step
divides them. This is exactly the posterior forward-backward computes, without
a Python loop over time steps; docs/analytics.md has the derivation. Starts
run side by side as columns of the same matrices.

With forgetting (``forgets=True``: a mastered learner becomes unmastered after
each answer with P=forget) the paths are no longer few, and :class:`_Chains`
runs scaled forward-backward instead: sequences sorted by length, so at each
time step the live ones are a prefix and one numpy operation covers all of
them (and all restarts); the loop is over time steps, not learners.

The M-step is constrained to the accepted ranges of :mod:`schemas.bkt_params`:
each parameter's expected complete-data log-likelihood is a concave function
of that parameter alone, so clipping the unconstrained maximiser to its
interval is the constrained maximiser and every iteration still never lowers
the likelihood.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processors.mastery import DEFAULT_PARAMS, Params
from schemas.bkt_params import BOUNDS, FORGET, MARGIN, Bound

__all__ = [
    "SCREEN_FACTOR",
    "SCREEN_ITERATIONS",
    "FitResult",
    "Sequences",
    "fit",
    "fit_skills",
    "log_likelihood",
]

_F = NDArray[np.float64]
_NAMES = ("prior", "learn", "guess", "slip")
# Random starts: inside the bounds, away from the edges where EM is slowest.
_START_LOW = np.array([0.05, 0.01, 0.05, 0.05])
_START_HIGH = np.array([0.95, 0.40, 0.45, 0.45])
_FORGET_START = (0.005, 0.2)
#: Candidate starts screened per full EM run, and their screening iterations.
SCREEN_FACTOR = 10
SCREEN_ITERATIONS = 10


@dataclass(frozen=True, slots=True)
class Sequences:
    """Every answer sequence of one skill, concatenated in order."""

    answers: NDArray[np.bool_]
    lengths: NDArray[np.int64]

    @classmethod
    def of(cls, sequences: Iterable[Sequence[bool]]) -> Sequences:
        """Build from per-learner answer lists (empty ones are dropped)."""
        kept = [list(s) for s in sequences if len(s)]
        answers = np.fromiter(
            (a for s in kept for a in s), dtype=np.bool_, count=sum(map(len, kept))
        )
        return cls(answers, np.array([len(s) for s in kept], dtype=np.int64))

    @property
    def attempts(self) -> int:
        return int(self.answers.size)

    @property
    def learners(self) -> int:
        return int(self.lengths.size)

    def split(self) -> list[NDArray[np.bool_]]:
        """The sequences again, one array each."""
        return np.split(self.answers, np.cumsum(self.lengths)[:-1])


@dataclass(frozen=True, slots=True)
class FitResult:
    """The best restart of a fit."""

    params: Params
    log_likelihood: float
    iterations: int
    converged: bool
    attempts: int
    learners: int


class _Paths:
    """The design matrix of every hidden path of every sequence."""

    def __init__(self, data: Sequences) -> None:
        if data.learners == 0:
            raise ValueError("no answers to fit")
        lengths = data.lengths
        slots = lengths + 1
        seq = np.repeat(np.arange(lengths.size), slots)
        self.starts = np.concatenate(([0], np.cumsum(slots)[:-1]))
        self.slots = slots
        k = np.arange(int(slots.sum())) - np.repeat(self.starts, slots)
        first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        correct = np.concatenate(([0], np.cumsum(data.answers, dtype=np.int64)))
        c_k = correct[first[seq] + k] - correct[first[seq]]
        t = lengths[seq]
        c_t = correct[first[seq] + t] - correct[first[seq]]
        self.x = np.column_stack(
            [
                k == 0,
                k > 0,
                np.maximum(k - 1, 0),
                (k > 0) & (k < t),
                c_k,
                k - c_k,
                c_t - c_k,
                (t - k) - (c_t - c_k),
            ]
        ).astype(np.float64)

    def e_step(self, theta: _F) -> tuple[_F, _F]:
        """Log-likelihood per restart and expected counts (8 x restarts)."""
        # einsum, not BLAS: with an inner dimension of 8 a threaded BLAS only
        # adds contention (4 s vs 14-39 s for all of builder_train on a busy
        # 2-core box).
        logp = np.einsum("pj,jr->pr", self.x, _log_coefficients(theta))
        top = np.maximum.reduceat(logp, self.starts, axis=0)
        weights = np.exp(logp - np.repeat(top, self.slots, axis=0))
        total = np.add.reduceat(weights, self.starts, axis=0)
        ll = (np.log(total) + top).sum(axis=0)
        weights /= np.repeat(total, self.slots, axis=0)
        return ll, np.einsum("pj,pr->jr", self.x, weights)


class _Chains:
    """Forward-backward over every sequence at once (BKT with forgetting)."""

    def __init__(self, data: Sequences) -> None:
        if data.learners == 0:
            raise ValueError("no answers to fit")
        order = np.argsort(-data.lengths, kind="stable")
        lengths = data.lengths[order]
        seqs = data.split()
        # live[t]: sequences with more than t answers (a prefix, by the sort)
        self.live = [int((lengths > t).sum()) for t in range(int(lengths[0]))]
        offsets = np.concatenate(([0], np.cumsum(self.live)))
        self.offsets = [int(o) for o in offsets]
        packed = np.zeros(int(offsets[-1]), dtype=np.bool_)
        for rank, i in enumerate(order):
            seq = seqs[int(i)]
            packed[offsets[: seq.size] + rank] = seq
        self.correct = packed
        self.size = packed.size
        # rows whose sequence goes on after them (a transition follows)
        self.inner = np.zeros(self.size, dtype=np.bool_)
        for t in range(len(self.live) - 1):
            lo = self.offsets[t]
            self.inner[lo : lo + self.live[t + 1]] = True

    def e_step(self, theta: _F) -> tuple[_F, _F]:
        """Log-likelihood per restart and expected counts (10 x restarts)."""
        prior, learn, guess, slip, forget = theta
        restarts = theta.shape[1]
        n0 = self.live[0]
        obs = self.correct[:, None]
        e1 = np.where(obs, 1.0 - slip, slip)  # P(answer | mastered), per row
        e0 = np.where(obs, guess, 1.0 - guess)
        before = np.empty((self.size, restarts))  # P(mastered) before the answer
        scale = np.empty((self.size, restarts))  # P(answer | earlier answers)
        p = np.broadcast_to(prior, (n0, restarts)).copy()
        for t, k in enumerate(self.live):
            lo, hi = self.offsets[t], self.offsets[t] + k
            pk = p[:k]
            a1 = pk * e1[lo:hi]
            c = a1 + (1.0 - pk) * e0[lo:hi]
            before[lo:hi] = pk
            scale[lo:hi] = c
            post = a1 / c
            p[:k] = post * (1.0 - forget) + (1.0 - post) * learn
        ll = np.log(scale).sum(axis=0)
        gamma = np.empty((self.size, restarts))  # P(mastered | all answers)
        learned = np.zeros((self.size, restarts))
        forgot = np.zeros((self.size, restarts))
        b1 = np.ones((n0, restarts))  # scaled backward messages
        b0 = np.ones((n0, restarts))
        for t in range(len(self.live) - 1, -1, -1):
            k, lo = self.live[t], self.offsets[t]
            hi = lo + k
            nxt = self.live[t + 1] if t + 1 < len(self.live) else 0
            w1 = e1[lo:hi] / scale[lo:hi]
            w0 = e0[lo:hi] / scale[lo:hi]
            n1, n0_ = b1[:k], b0[:k]  # beta at t + 1 (1 after the last answer)
            stay1 = (1.0 - forget) * n1 + forget * n0_
            stay0 = learn * n1 + (1.0 - learn) * n0_
            pm = before[lo:hi]
            gamma[lo:hi] = pm * w1 * stay1
            if nxt:
                after = slice(lo, lo + nxt)
                forgot[after] = pm[:nxt] * w1[:nxt] * forget * n0_[:nxt]
                learned[after] = (1.0 - pm[:nxt]) * w0[:nxt] * learn * n1[:nxt]
            b1[:k] = w1 * stay1
            b0[:k] = w0 * stay0
        ungamma = 1.0 - gamma
        inner = self.inner
        correct = self.correct
        start = slice(0, n0)
        counts = np.stack(
            [
                gamma[start].sum(axis=0),
                ungamma[start].sum(axis=0),
                ungamma[inner].sum(axis=0),
                learned.sum(axis=0),
                ungamma[correct].sum(axis=0),
                ungamma[~correct].sum(axis=0),
                gamma[correct].sum(axis=0),
                gamma[~correct].sum(axis=0),
                gamma[inner].sum(axis=0),
                forgot.sum(axis=0),
            ]
        )
        return ll, counts


def _m_step_forgets(counts: _F, theta: _F, low: _F, high: _F) -> _F:
    num = counts[[0, 3, 4, 7, 9]]
    den = np.stack(
        [
            counts[0] + counts[1],
            counts[2],
            counts[4] + counts[5],
            counts[6] + counts[7],
            counts[8],
        ]
    )
    ratio: _F = np.divide(num, den, out=theta.copy(), where=den > 0)
    clipped: _F = np.clip(ratio, low, high)
    # learn + forget < 1 (the transition stays increasing): learn gives way,
    # only ever near learn ~ 1 where no fit on real data goes.
    clipped[1] = np.minimum(clipped[1], 1.0 - MARGIN - clipped[4])
    return clipped


def _log_coefficients(theta: _F) -> _F:
    prior, learn, guess, slip = theta
    return np.stack(
        [
            np.log(prior),
            np.log1p(-prior),
            np.log1p(-learn),
            np.log(learn),
            np.log(guess),
            np.log1p(-guess),
            np.log1p(-slip),
            np.log(slip),
        ]
    )


def _m_step(counts: _F, theta: _F, low: _F, high: _F) -> _F:
    num = counts[[0, 3, 4, 7]]
    den = np.stack(
        [
            counts[0] + counts[1],
            counts[2] + counts[3],
            counts[4] + counts[5],
            counts[6] + counts[7],
        ]
    )
    # A count with no opportunity (e.g. every sequence has one answer, so no
    # learning step) leaves its parameter where it was.
    ratio: _F = np.divide(num, den, out=theta.copy(), where=den > 0)
    clipped: _F = np.clip(ratio, low, high)
    return clipped


def _columns(params: Sequence[Params], *, forgets: bool = False) -> _F:
    if forgets:
        return np.array(
            [[p.prior, p.learn, p.guess, p.slip, p.forget] for p in params]
        ).T
    return np.array([[p.prior, p.learn, p.guess, p.slip] for p in params]).T


def log_likelihood(params: Params, data: Sequences) -> float:
    """log P(answers | params), summed over the sequences (the E-step's figure).

    Tests check it against the forward algorithm of :mod:`processors.mastery`.
    """
    if params.forgets:
        ll, _ = _Chains(data).e_step(_columns([params], forgets=True))
    else:
        ll, _ = _Paths(data).e_step(_columns([params]))
    return float(ll[0])


def fit(
    data: Sequences,
    *,
    restarts: int = 5,
    seed: int | Sequence[int] = 0,
    tol: float = 1e-9,
    max_iter: int = 2000,
    bounds: Mapping[str, Bound] = BOUNDS,
    forgets: bool = False,
) -> FitResult:
    """Fit by EM with ``restarts`` full runs; the best log-likelihood wins.

    The full runs start from the best of ``SCREEN_FACTOR * restarts``
    candidate starts after ``SCREEN_ITERATIONS`` EM iterations each ("small
    EM", Biernacki, Celeux & Govaert 2003): BKT likelihoods have several
    local maxima and a basin can be small (one skill of ASSISTments 2009 has
    its best maximum reached from ~8% of uniform starts). The first candidate
    is :data:`~processors.mastery.DEFAULT_PARAMS`, the others are drawn from
    ``seed``. A run stops when the relative change of its log-likelihood falls
    below ``tol`` or after ``max_iter`` iterations. ``bounds`` are the
    accepted ranges of :mod:`schemas.bkt_params` unless a caller (a test)
    widens them; they must keep ``guess + slip < 1``. ``forgets`` fits BKT
    with a forget rate too (within :data:`~schemas.bkt_params.FORGET`,
    or ``bounds["forget"]``).
    """
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    names = (*_NAMES, "forget") if forgets else _NAMES
    every = {**BOUNDS, "forget": FORGET, **bounds}
    low = np.array([[every[name].low] for name in names])
    high = np.array([[every[name].high] for name in names])
    if every["guess"].high + every["slip"].high >= 1.0:
        raise ValueError("bounds must keep guess + slip below 1")
    rng = np.random.default_rng(seed)
    candidates = SCREEN_FACTOR * restarts
    drawn = rng.uniform(_START_LOW, _START_HIGH, size=(candidates - 1, 4)).T
    first = _columns([DEFAULT_PARAMS])
    e_step: Callable[[_F], tuple[_F, _F]]
    if forgets:
        # Drawn after the four others, so the standard fit's starts are unchanged.
        drawn = np.vstack([drawn, rng.uniform(*_FORGET_START, size=candidates - 1)])
        first = np.vstack([first, [[_FORGET_START[0]]]])
        e_step, m_step = _Chains(data).e_step, _m_step_forgets
    else:
        e_step, m_step = _Paths(data).e_step, _m_step
    theta = np.clip(np.concatenate([first, drawn], axis=1), low, high)
    for _ in range(SCREEN_ITERATIONS):
        _, counts = e_step(theta)
        theta = m_step(counts, theta, low, high)
    ll, _ = e_step(theta)
    theta = theta[:, np.argsort(-ll, kind="stable")[:restarts]]

    previous = np.full(restarts, -np.inf)
    active = np.ones(restarts, dtype=np.bool_)
    iterations = np.full(restarts, SCREEN_ITERATIONS, dtype=np.int64)
    for _ in range(max_iter):
        ll, counts = e_step(theta)
        change = np.abs(ll - previous)
        active &= ~(change <= tol * np.abs(ll))
        if not active.any():
            break
        theta = np.where(active, m_step(counts, theta, low, high), theta)
        previous = np.where(active, ll, previous)
        iterations += active
    else:
        ll, _ = e_step(theta)
    best = int(np.argmax(ll))
    values = [float(v) for v in theta[:, best]]
    return FitResult(
        params=Params(*values),
        log_likelihood=float(ll[best]),
        iterations=int(iterations[best]),
        converged=not bool(active[best]),
        attempts=data.attempts,
        learners=data.learners,
    )


def fit_skills(
    data: Mapping[str, Iterable[Sequence[bool]]],
    *,
    restarts: int = 5,
    seed: int = 0,
    tol: float = 1e-9,
    max_iter: int = 2000,
    on_progress: Callable[[int, int], None] | None = None,
    forgets: bool = False,
) -> dict[str, FitResult]:
    """:func:`fit` every skill of ``data`` (skill -> answer sequences).

    Each skill's random starts are seeded by ``(seed, crc32(skill))``, so a
    skill's fit does not depend on which other skills are fitted with it.
    """
    results: dict[str, FitResult] = {}
    for done, (skill, sequences) in enumerate(data.items(), start=1):
        results[skill] = fit(
            Sequences.of(sequences),
            restarts=restarts,
            seed=[seed, zlib.crc32(skill.encode())],
            tol=tol,
            max_iter=max_iter,
            forgets=forgets,
        )
        if on_progress is not None:
            on_progress(done, len(data))
    return results
