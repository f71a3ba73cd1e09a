"""Choosing BKT with or without forgetting, per objective, by held-out likelihood.

The learners are dealt into :data:`FOLDS` folds (from the seed and the skill's
name, so a skill's choice does not depend on the other skills); each fold is
held out once while both models are fitted on the others, so every learner's
answers are scored once by fits that never saw them. The model with the
higher held-out log-likelihood per attempt is refitted on every learner and
published. Forgetting adds one parameter, so it must earn its place on
learners the fit has not seen (docs/analytics.md, section 10).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from processors.fit import FitResult, Sequences, fit, log_likelihood

__all__ = ["FOLDS", "Selection", "select", "select_skills"]

#: Cross-validation folds (each learner is held out once).
FOLDS = 5


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
    """Cross-validate both models by learner, refit the better one on all.

    With fewer learners than folds there is nothing to hold out: standard BKT
    (the model with fewer parameters) is chosen, with no held-out figures.
    """
    kept = [list(s) for s in sequences if len(s)]
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(kept)) % FOLDS

    def run(learners: list[list[bool]], forgets: bool) -> FitResult:
        return fit(
            Sequences.of(learners),
            restarts=restarts,
            seed=seed,
            tol=tol,
            max_iter=max_iter,
            forgets=forgets,
        )

    if len(kept) < FOLDS:
        full = run(kept, False)
        return Selection(full, "standard", float("nan"), float("nan"), 0)
    total = {"standard": 0.0, "forgets": 0.0}
    attempts = 0
    for fold in range(FOLDS):
        held = Sequences.of(
            [s for s, f in zip(kept, fold_of, strict=True) if f == fold]
        )
        train = [s for s, f in zip(kept, fold_of, strict=True) if f != fold]
        attempts += held.attempts
        for name, forgets in (("standard", False), ("forgets", True)):
            total[name] += log_likelihood(run(train, forgets).params, held)
    per_attempt = {name: ll / attempts for name, ll in total.items()}
    chosen = (
        "forgets" if per_attempt["forgets"] > per_attempt["standard"] else "standard"
    )
    full = run(kept, chosen == "forgets")
    return Selection(
        full, chosen, per_attempt["standard"], per_attempt["forgets"], attempts
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
