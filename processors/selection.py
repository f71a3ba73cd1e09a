"""Choosing BKT with or without forgetting, per objective, by held-out likelihood.

A fifth of the learners (drawn from the seed and the skill's name, so a
skill's choice does not depend on the other skills) is held out; both models
are fitted on the rest, and the one whose held-out log-likelihood per attempt
is higher is refitted on every learner and published. Forgetting adds one
parameter, so it must earn its place on learners the fit has not seen: on
ASSISTments 2009 it does on most skills (docs/model-calibration.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from processors.fit import FitResult, Sequences, fit, log_likelihood

__all__ = ["HELD_OUT", "Selection", "select", "select_skills"]

#: Share of the learners held out to compare the two models.
HELD_OUT = 0.2


@dataclass(frozen=True, slots=True)
class Selection:
    """The published fit and why (held-out log-likelihood per attempt)."""

    result: FitResult
    chosen: str  # "standard" or "forgets"
    standard: float
    forgets: float
    held_out_attempts: int


def select(
    sequences: Sequence[Sequence[bool]],
    *,
    restarts: int = 5,
    seed: int | Sequence[int] = 0,
    tol: float = 1e-9,
    max_iter: int = 2000,
) -> Selection:
    """Fit both models on most learners, keep the better one on the others.

    With fewer than five learners there is nothing to hold out: standard BKT
    (the model with fewer parameters) is chosen, with no held-out figures.
    """
    kept = [list(s) for s in sequences if len(s)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(kept))
    cut = round(HELD_OUT * len(kept))
    held = [kept[i] for i in order[:cut]]
    train = [kept[i] for i in order[cut:]]

    def run(learners: list[list[bool]], forgets: bool) -> FitResult:
        return fit(
            Sequences.of(learners),
            restarts=restarts,
            seed=seed,
            tol=tol,
            max_iter=max_iter,
            forgets=forgets,
        )

    if len(kept) < 5 or not held:
        full = run(kept, False)
        return Selection(full, "standard", float("nan"), float("nan"), 0)
    test = Sequences.of(held)
    per_attempt: dict[str, float] = {}
    for name, forgets in (("standard", False), ("forgets", True)):
        trained = run(train, forgets)
        per_attempt[name] = log_likelihood(trained.params, test) / test.attempts
    chosen = (
        "forgets" if per_attempt["forgets"] > per_attempt["standard"] else "standard"
    )
    full = run(kept, chosen == "forgets")
    return Selection(
        full, chosen, per_attempt["standard"], per_attempt["forgets"], test.attempts
    )


def select_skills(
    data: Mapping[str, Sequence[Sequence[bool]]],
    *,
    restarts: int = 5,
    seed: int = 0,
    tol: float = 1e-9,
    max_iter: int = 2000,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Selection]:
    """:func:`select` for every skill, seeded by ``(seed, crc32(skill))``."""
    out: dict[str, Selection] = {}
    for done, (skill, sequences) in enumerate(data.items(), start=1):
        out[skill] = select(
            sequences,
            restarts=restarts,
            seed=[seed, zlib.crc32(skill.encode())],
            tol=tol,
            max_iter=max_iter,
        )
        if on_progress is not None:
            on_progress(done, len(data))
    return out
