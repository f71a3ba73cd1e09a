"""The accepted ranges of BKT parameters: one source for the API, the worker and
the fitter.

Every parameter keeps a distance of :data:`MARGIN` from the values where BKT
degenerates: 0 and 1 for all four, and 0.5 for guess and slip. Reasons (full
text in docs/analytics.md, "Parameter bounds"):

- ``guess < 0.5`` and ``slip < 0.5``: an unmastered learner answers wrongly
  more often than not and a mastered one correctly more often than not, so a
  correct answer is always evidence *for* mastery and the two states keep
  their meaning. Larger values are the "degenerate" models of Baker, Corbett &
  Aleven (2008), who bound guess <= 0.3 and slip <= 0.1 (after Corbett &
  Anderson 1995); we accept up to 0.5 because fits on real data (ASSISTments
  2009) legitimately reach guess ~ 0.4 and slip ~ 0.33. Beck & Chang (2007)
  show the guess/slip/prior trade-off that makes unbounded fits drift there.
- the floor ``MARGIN = 1e-4`` on guess, slip and learn bounds the cost of the
  work-remaining forecast (processors/forecast.py): one answer moves the
  log-odds by at most ``log((1-MARGIN)/MARGIN)`` ~ 9.2 and the dynamic
  programme's grid starts above ``logit(learn)`` >= -9.2, so its extent stays
  bounded (``guess=1e-40`` moves the log-odds by 92 per answer). It also
  keeps every logarithm finite. pyBKT's smallest fitted values on ASSISTments 2009
  (slip 4.9e-4, guess 3.4e-3) are above it.
- prior and learn stay within ``[MARGIN, 1 - MARGIN]`` for the same reason:
  a certain prior (0 or 1) can never be revised by evidence.
- ``forget`` is 0 (standard BKT, the default) or in ``[MARGIN, 0.5 - MARGIN]``
  with ``learn + forget < 1``: the floor keeps P(mastered) after a step below
  ``1 - MARGIN`` (log-odds <= 9.2, the forecast grid's ceiling), the ceiling
  keeps "mastered" a state that mostly persists (pyBKT's forgets fits on
  ASSISTments 2009 are 0.007-0.033), and ``learn + forget < 1`` keeps the
  transition increasing in P(mastered).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BOUNDS",
    "FORGET",
    "GUESS",
    "LEARN",
    "MARGIN",
    "PRIOR",
    "SLIP",
    "Bound",
    "forget_accepted",
]

#: Distance every parameter keeps from its degenerate values.
MARGIN = 1e-4


@dataclass(frozen=True, slots=True)
class Bound:
    """A closed interval ``[low, high]`` for one parameter, with its reason."""

    low: float
    high: float
    reason: str

    def contains(self, value: float) -> bool:
        """True when ``low <= value <= high``."""
        return self.low <= value <= self.high

    def clip(self, value: float) -> float:
        """The nearest value inside the interval."""
        return min(max(value, self.low), self.high)


PRIOR = Bound(
    MARGIN,
    1.0 - MARGIN,
    "P(mastered) before the first attempt: a certain prior "
    "could never be revised by evidence",
)
LEARN = Bound(
    MARGIN,
    1.0 - MARGIN,
    "P(an unmastered learner masters after an attempt): the "
    "floor bounds the cost of the work-remaining forecast",
)
GUESS = Bound(
    MARGIN,
    0.5 - MARGIN,
    "P(correct | not mastered): an unmastered learner is "
    "wrong more often than not, so a correct answer is evidence of mastery",
)
SLIP = Bound(
    MARGIN,
    0.5 - MARGIN,
    "P(wrong | mastered): a mastered learner is right more "
    "often than not, so a wrong answer is evidence against mastery",
)

FORGET = Bound(
    MARGIN,
    0.5 - MARGIN,
    "P(a mastered learner loses mastery after an attempt), when not 0: the "
    "floor bounds the forecast grid, the ceiling keeps mastery a lasting state",
)


def forget_accepted(forget: float, learn: float) -> bool:
    """0 (no forgetting), or within :data:`FORGET` with ``learn + forget < 1``."""
    return forget == 0.0 or (FORGET.contains(forget) and learn + forget < 1.0)


#: The four bounds by parameter name, in the order prior, learn, guess, slip.
BOUNDS: dict[str, Bound] = {
    "prior": PRIOR,
    "learn": LEARN,
    "guess": GUESS,
    "slip": SLIP,
}
