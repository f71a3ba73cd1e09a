"""Next-attempt accuracy of BKT parameters: AUC, RMSE and log-loss.

Every prediction is P(correct) *before* an answer, computed by the forward
algorithm the worker runs (:func:`processors.mastery.trace`), so these figures
are those of the live system on the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processors.mastery import Params, trace
from processors.trace import TraceError

__all__ = ["Metrics", "auc", "evaluate", "metrics", "predictions"]

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


def auc(scores: NDArray[np.float64], labels: NDArray[np.bool_]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half).

    NaN when the labels are all of one class.
    """
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    # Average rank (1-based) of each run of tied scores.
    edges = np.flatnonzero(np.diff(ranked)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [ranked.size]))
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def metrics(scores: Sequence[float], labels: Sequence[bool]) -> Metrics:
    """AUC, RMSE and mean log-loss of predictions against answers."""
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
        auc=auc(p, y),
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
    labels: list[bool] = []
    per_skill: dict[str, Metrics] = {}
    for skill, sequences in data.items():
        chosen = params.get(skill, default)
        if chosen is None:
            raise TraceError("no parameters for this skill", f"skill {skill!r}")
        skill_scores = predictions(chosen, sequences)
        skill_labels = [a for seq in sequences for a in seq]
        if not skill_labels:
            continue
        per_skill[skill] = metrics(skill_scores, skill_labels)
        scores += skill_scores
        labels += skill_labels
    return per_skill, metrics(scores, labels)
