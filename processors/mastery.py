"""Bayesian Knowledge Tracing of one learning objective, kept in log-odds.

The state holds the log-odds of P(mastered) *before the next attempt*. Both
steps of BKT are exact in that form:

- evidence: ``lo += log((1-slip)/guess)`` after a correct answer and
  ``lo += log(slip/(1-guess))`` after a wrong one (Bayes' rule in odds form);
- transition: P(L') = P(L)(1 - forget) + (1 - P(L)) learn, i.e.
  ``odds' = (odds (1-forget) + learn) / (odds forget + 1 - learn)``, or
  ``lo' = logaddexp(lo + log1p(-forget), log learn)
  - logaddexp(lo + log forget, log1p(-learn))``; without forgetting
  (forget = 0) that is ``logaddexp(lo, log learn) - log1p(-learn)``, computed
  by the same operations as before forgetting existed (bit-identical).

Nothing is ever rounded to 1.0, so a learner at P(mastered)=0.99999 who then
answers wrongly moves down exactly as the maths says (pyBKT, working in
probabilities, can stick at 1.0). With forgetting P(mastered) stays below
``max(learn, 1 - forget)`` after any attempt, so it no longer saturates. See
docs/analytics.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.events import BKTParameters

__all__ = [
    "DEFAULT_PARAMS",
    "ObjectiveState",
    "Params",
    "apply",
    "initial",
    "logit",
    "next_log_odds",
    "p_correct",
    "p_correct_at",
    "p_mastered",
    "sigmoid",
    "trace",
]


def logit(p: float) -> float:
    """log(p / (1 - p)) for 0 < p < 1."""
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)), without overflow."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Params:
    """BKT parameters of one learning objective; ``forget = 0`` is standard BKT."""

    prior: float
    learn: float
    guess: float
    slip: float
    forget: float = 0.0
    # Derived constants of the log-odds update, computed once.
    prior_log_odds: float = field(init=False, repr=False, compare=False)
    step_correct: float = field(init=False, repr=False, compare=False)
    step_wrong: float = field(init=False, repr=False, compare=False)
    log_learn: float = field(init=False, repr=False, compare=False)
    learn_shift: float = field(init=False, repr=False, compare=False)
    log_guess: float = field(init=False, repr=False, compare=False)
    log_no_guess: float = field(init=False, repr=False, compare=False)
    log_keep: float = field(init=False, repr=False, compare=False)
    log_forget: float = field(init=False, repr=False, compare=False)
    log_unlearned: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0.0 < self.prior < 1.0 and 0.0 <= self.learn < 1.0):
            raise ValueError(f"need 0<prior<1 and 0<=learn<1, got {self}")
        # learn + forget < 1 keeps the transition increasing in P(L): a better
        # estimate now is a better one after the step (forecast.best_case_items
        # and the forecast grid rely on it).
        if not (0.0 <= self.forget < 1.0 and self.learn + self.forget < 1.0):
            raise ValueError(f"need 0<=forget and learn + forget < 1, got {self}")
        if not (0.0 < self.guess < 1.0 and 0.0 < self.slip < 1.0):
            raise ValueError(f"need 0<guess<1 and 0<slip<1, got {self}")
        if self.guess + self.slip >= 1.0:
            raise ValueError(f"need guess + slip < 1, got {self}")
        put = object.__setattr__
        put(self, "prior_log_odds", logit(self.prior))
        put(self, "step_correct", math.log1p(-self.slip) - math.log(self.guess))
        put(self, "step_wrong", math.log(self.slip) - math.log1p(-self.guess))
        put(self, "log_learn", math.log(self.learn) if self.learn > 0 else -math.inf)
        put(self, "learn_shift", -math.log1p(-self.learn))
        put(self, "log_guess", math.log(self.guess))
        put(self, "log_no_guess", math.log1p(-self.guess))
        put(self, "log_keep", math.log1p(-self.forget))
        put(self, "log_forget", math.log(self.forget) if self.forget > 0 else -math.inf)
        put(self, "log_unlearned", math.log1p(-self.learn))

    @property
    def forgets(self) -> bool:
        """True when mastery can be lost (forget > 0)."""
        return self.forget > 0.0

    @classmethod
    def from_schema(cls, p: BKTParameters) -> Params:
        """Build from the event schema's parameters."""
        return cls(
            prior=p.prior,
            learn=p.learn,
            guess=p.guess,
            slip=p.slip,
            forget=p.forget or 0.0,
        )


#: Used for objectives no ModuleTagged event gave parameters for. Conventional,
#: non-degenerate starting values (guess <= 0.3, slip <= 0.1 as bounded by
#: Baker, Corbett & Aleven 2008); reasons in docs/analytics.md.
DEFAULT_PARAMS = Params(prior=0.3, learn=0.1, guess=0.2, slip=0.1)


def _logaddexp(x: float, y: float) -> float:
    if x > y:
        return x + math.log1p(math.exp(y - x))
    if y == -math.inf:
        return y
    return y + math.log1p(math.exp(x - y))


def next_log_odds(params: Params, log_odds: float, correct: bool) -> float:
    """Log-odds of P(mastered) before the next attempt, after this answer."""
    lo = log_odds + (params.step_correct if correct else params.step_wrong)
    if params.forget > 0.0:
        return _logaddexp(lo + params.log_keep, params.log_learn) - _logaddexp(
            lo + params.log_forget, params.log_unlearned
        )
    a = params.log_learn
    if a == -math.inf:
        return lo
    if lo > a:
        return lo + math.log1p(math.exp(a - lo)) + params.learn_shift
    return a + math.log1p(math.exp(lo - a)) + params.learn_shift


def p_correct_at(params: Params, log_odds: float) -> float:
    """Predictive P(correct) of the next answer at this log-odds of mastery."""
    p = sigmoid(log_odds)
    q = sigmoid(-log_odds)
    return params.guess * q + (1.0 - params.slip) * p


@dataclass(frozen=True, slots=True)
class ObjectiveState:
    """What a registration has shown on one learning objective.

    ``stuck_llr`` is the log likelihood ratio of the answers so far under
    "unmastered and never learns" (each answer correct with P=guess) against
    the BKT model; it feeds the struggling rule of :mod:`processors.goals`.
    """

    log_odds: float
    attempts: int = 0
    correct: int = 0
    stuck_llr: float = 0.0

    def to_json(self) -> list[float | int]:
        """Compact JSON form ``[log_odds, attempts, correct, stuck_llr]``."""
        return [self.log_odds, self.attempts, self.correct, self.stuck_llr]

    @classmethod
    def from_json(cls, data: list[float | int]) -> ObjectiveState:
        """Inverse of :meth:`to_json`."""
        lo, n, c, llr = data
        return cls(float(lo), int(n), int(c), float(llr))


def initial(params: Params) -> ObjectiveState:
    """State before any attempt: P(mastered) is the prior."""
    return ObjectiveState(params.prior_log_odds)


def apply(state: ObjectiveState, params: Params, correct: bool) -> ObjectiveState:
    """Fold one graded answer into the state."""
    lo = state.log_odds
    if lo >= 0.0:
        e = math.exp(-lo)
        p = 1.0 / (1.0 + e)
        q = e * p
    else:
        e = math.exp(lo)
        q = 1.0 / (1.0 + e)
        p = e * q
    if correct:
        llr = (
            state.stuck_llr
            + params.log_guess
            - math.log(params.guess * q + (1.0 - params.slip) * p)
        )
    else:
        llr = (
            state.stuck_llr
            + params.log_no_guess
            - math.log((1.0 - params.guess) * q + params.slip * p)
        )
    lo = next_log_odds(params, lo, correct)
    return ObjectiveState(
        lo, state.attempts + 1, state.correct + (1 if correct else 0), llr
    )


def p_mastered(state: ObjectiveState) -> float:
    """P(mastered) before the next attempt."""
    return sigmoid(state.log_odds)


def p_correct(state: ObjectiveState, params: Params) -> float:
    """Predictive P(correct) of the next attempt."""
    return p_correct_at(params, state.log_odds)


def trace(params: Params, answers: Iterable[bool]) -> list[tuple[float, float]]:
    """(P(correct), P(mastered)) before each answer of one sequence."""
    out: list[tuple[float, float]] = []
    state = initial(params)
    for correct in answers:
        out.append((p_correct(state, params), p_mastered(state)))
        state = apply(state, params, correct)
    return out
