"""Next-attempt accuracy of BKT parameters: AUC, RMSE and log-loss.

Every prediction is P(correct) *before* an answer, computed by the forward
algorithm the worker runs (:func:`processors.mastery.trace`), so these figures
are those of the live system on the same answers.

AUC ranks by the exact prediction. P(correct) = guess + (1-slip-guess) P(L)
is a float that stops moving near its limits (``1 - slip`` when P(mastered)
is within ~1e-16 of 1, where long correct streaks live), so predictions that
differ would tie. Each prediction therefore also carries its log distance
from the nearer limit, computed from the log-odds of mastery (which never
saturate): ``softplus(lo) - log(1-slip-guess)`` above P(mastered) = 1/2,
``log(1-slip-guess) - softplus(-lo)`` below, both increasing with the exact
P(correct). Ranks sort by (float, that key); only equal pairs tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processors.mastery import Params, apply, initial, p_correct_at, trace
from processors.trace import TraceError

__all__ = [
    "Metrics",
    "auc",
    "evaluate",
    "exact_predictions",
    "metrics",
    "predictions",
]

# P(correct) is clipped this far from 0 and 1 before taking logs, so one
# confident wrong prediction costs at most ~34.5 nats instead of infinity.
_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class Metrics:
    """Next-attempt figures over ``attempts`` answers."""

    attempts: int
    auc: float
    rmse: float
    log_loss: float

    def to_json(self) -> dict[str, float | int]:
        """JSON-ready form (``auc`` is NaN when only one class occurs)."""
        return {
            "attempts": self.attempts,
            "auc": self.auc,
            "rmse": self.rmse,
            "log_loss": self.log_loss,
        }


def predictions(params: Params, sequences: Iterable[Sequence[bool]]) -> list[float]:
    """P(correct) before each answer, sequence after sequence."""
    return [pc for seq in sequences for pc, _ in trace(params, seq)]


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def exact_predictions(
    params: Params, sequences: Iterable[Sequence[bool]]
) -> tuple[list[float], list[float]]:
    """P(correct) before each answer and its tie-breaking key (module doc)."""
    scores: list[float] = []
    keys: list[float] = []
    spread = math.log1p(-params.slip - params.guess)
    for seq in sequences:
        state = initial(params)
        for correct in seq:
            lo = state.log_odds
            scores.append(p_correct_at(params, lo))
            keys.append(
                _softplus(lo) - spread if lo >= 0.0 else spread - _softplus(-lo)
            )
            state = apply(state, params, correct)
    return scores, keys


def auc(
    scores: NDArray[np.float64],
    labels: NDArray[np.bool_],
    tiebreak: NDArray[np.float64] | None = None,
) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half).

    With ``tiebreak``, equal scores are ordered by it and only pairs equal in
    both tie. NaN when the labels are all of one class.
    """
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    if tiebreak is None:
        order = np.argsort(scores, kind="mergesort")
        changed = np.diff(scores[order]) != 0
    else:
        order = np.lexsort((tiebreak, scores))
        changed = (np.diff(scores[order]) != 0) | (np.diff(tiebreak[order]) != 0)
    ranked = scores[order]
    # Average rank (1-based) of each run of tied scores.
    edges = np.flatnonzero(changed) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [ranked.size]))
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def metrics(
    scores: Sequence[float],
    labels: Sequence[bool],
    tiebreak: Sequence[float] | None = None,
) -> Metrics:
    """AUC, RMSE and mean log-loss of predictions against answers
    (``tiebreak``: see :func:`auc`)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} predictions for {len(labels)} answers")
    if not scores:
        raise ValueError("no answers to evaluate")
    p = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    clipped = np.clip(p, _EPS, 1.0 - _EPS)
    loss = -np.where(y, np.log(clipped), np.log1p(-clipped))
    return Metrics(
        attempts=int(p.size),
        auc=auc(p, y, None if tiebreak is None else np.asarray(tiebreak)),
        rmse=float(np.sqrt(np.mean((p - y) ** 2))),
        log_loss=float(loss.mean()),
    )


def evaluate(
    params: Mapping[str, Params],
    data: Mapping[str, Sequence[Sequence[bool]]],
    *,
    default: Params | None = None,
) -> tuple[dict[str, Metrics], Metrics]:
    """Per-skill and overall metrics of ``data`` (skill -> sequences).

    A skill without parameters is an error unless ``default`` is given (as in
    :func:`processors.trace.trace_rows`).
    """
    scores: list[float] = []
    keys: list[float] = []
    labels: list[bool] = []
    per_skill: dict[str, Metrics] = {}
    for skill, sequences in data.items():
        chosen = params.get(skill, default)
        if chosen is None:
            raise TraceError("no parameters for this skill", f"skill {skill!r}")
        skill_scores, skill_keys = exact_predictions(chosen, sequences)
        skill_labels = [a for seq in sequences for a in seq]
        if not skill_labels:
            continue
        per_skill[skill] = metrics(skill_scores, skill_labels, skill_keys)
        scores += skill_scores
        keys += skill_keys
        labels += skill_labels
    return per_skill, metrics(scores, labels, keys)
