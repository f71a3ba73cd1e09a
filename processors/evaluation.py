"""Next-attempt accuracy of BKT parameters: AUC, RMSE and log-loss.

Every prediction is P(correct) *before* an answer, computed by the forward
algorithm the worker runs (:func:`processors.mastery.trace`), so these figures
are those of the live system on the same answers; RMSE and log-loss use
those floats.

AUC ranks by the exact prediction, which the float cannot always tell apart:

- P(correct) = guess + (1-slip-guess) P(L) stops moving near its limits
  (``1 - slip`` when P(mastered) is within ~1e-16 of 1, where long correct
  streaks live). Each prediction therefore also carries its log distance from
  the nearer limit, computed from the log-odds of mastery (which never
  saturate): ``softplus(lo) - log(1-slip-guess)`` above P(mastered) = 1/2,
  ``log(1-slip-guess) - softplus(-lo)`` below, both increasing with the exact
  P(correct).
- With forgetting, histories that differ only early converge: on sequences of
  thousands of answers their exact predictions can differ by 1e-1000 while
  both the float and the key coincide.

So each prediction also names its history, the node of its answer prefix in a
trie per parameter set (:class:`Histories`): equal nodes have equal exact
predictions. Each float carries a bound on its error (from the log-odds'
error, :data:`_FLOAT_STEP` per answer); predictions whose intervals overlap,
and within one parameter set whose keys' intervals overlap too, form a group
whose order the floats do not settle. A group of several histories is
recomputed with :mod:`decimal` at 40, 400, 1500 and 6000 digits, with a
rigorous error bound (:func:`_decimal_values`), until every pair of histories
is ordered; what is still undecided then is compared in exact rational
arithmetic. Ties remain only between exactly equal predictions: the same
history, or (with degenerate parameters such as learn = forget = 0) different
histories whose exact values coincide.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal

import numpy as np
from numpy.typing import NDArray

from processors.mastery import Params, apply, initial, p_correct_at, trace
from processors.trace import TraceError

__all__ = [
    "Histories",
    "Metrics",
    "auc",
    "evaluate",
    "exact_predictions",
    "exact_ranks",
    "metrics",
    "predictions",
]

# P(correct) is clipped this far from 0 and 1 before taking logs, so one
# confident wrong prediction costs at most ~34.5 nats instead of infinity.
_EPS = 1e-15

# Error allowed for per answer in the float log-odds, relative to
# max(1, |lo|): a step costs a few roundings of ulp(lo) = 2^-52 |lo| and the
# transition never amplifies an error of the log-odds. The float P(correct)
# moves by at most P(L)(1-P(L)) <= exp(-|lo|) per unit of log-odds.
_FLOAT_STEP = 2.0**-42
# Roundings of the float P(correct) itself (a few ulps of a number <= 1).
_FLOAT_ROUNDING = 2.0**-49

# Decimal digits tried in turn before exact rational arithmetic.
_DIGITS = (40, 400, 1500, 6000)


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


class Histories:
    """Answer prefixes, one trie per parameter set; a node is a history.

    Node ids grow from a parent to its children, so ascending ids visit
    parents first.
    """

    def __init__(self) -> None:
        self.params: list[Params] = []
        self.parent: list[int] = []
        self.answer: list[bool] = []
        self.depth: list[int] = []
        self._roots: dict[Params, int] = {}
        self._children: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.parent)

    def _add(self, params: Params, parent: int, answer: bool, depth: int) -> int:
        self.params.append(params)
        self.parent.append(parent)
        self.answer.append(answer)
        self.depth.append(depth)
        return len(self.parent) - 1

    def root(self, params: Params) -> int:
        """The empty history of ``params``."""
        node = self._roots.get(params)
        if node is None:
            node = self._roots[params] = self._add(params, -1, False, 0)
        return node

    def child(self, node: int, correct: bool) -> int:
        """The history ``node`` followed by one answer."""
        slot = 2 * node + int(correct)
        child = self._children.get(slot)
        if child is None:
            child = self._add(self.params[node], node, correct, self.depth[node] + 1)
            self._children[slot] = child
        return child


def predictions(params: Params, sequences: Iterable[Sequence[bool]]) -> list[float]:
    """P(correct) before each answer, sequence after sequence."""
    return [pc for seq in sequences for pc, _ in trace(params, seq)]


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def exact_predictions(
    params: Params,
    sequences: Iterable[Sequence[bool]],
    histories: Histories | None = None,
) -> tuple[list[float], list[float], list[float], list[int]]:
    """P(correct) before each answer, its tie-breaking key, a bound on the
    float's error and its history (module doc); histories are added to
    ``histories`` if given."""
    trie = Histories() if histories is None else histories
    scores: list[float] = []
    keys: list[float] = []
    errors: list[float] = []
    nodes: list[int] = []
    spread = math.log1p(-params.slip - params.guess)
    root = trie.root(params)
    for seq in sequences:
        state = initial(params)
        node = root
        for depth, correct in enumerate(seq):
            lo = state.log_odds
            scores.append(p_correct_at(params, lo))
            keys.append(
                _softplus(lo) - spread if lo >= 0.0 else spread - _softplus(-lo)
            )
            # dP(correct)/dlo <= P(L)(1 - P(L)) <= exp(-|lo|), plus roundings.
            errors.append(
                math.exp(-abs(lo)) * (depth + 1) * _FLOAT_STEP * max(1.0, abs(lo))
                + _FLOAT_ROUNDING
            )
            nodes.append(node)
            state = apply(state, params, correct)
            node = trie.child(node, correct)
    return scores, keys, errors, nodes


def _needed(histories: Histories, nodes: Iterable[int]) -> tuple[list[int], list[int]]:
    """``nodes`` and their ancestors in ascending order, and how many of
    them are children of each (to free a parent's state after its last)."""
    seen: set[int] = set()
    for start in nodes:
        node = start
        while node >= 0 and node not in seen:
            seen.add(node)
            node = histories.parent[node]
    order = sorted(seen)
    children = [0] * len(order)
    index = {node: i for i, node in enumerate(order)}
    for node in order:
        parent = histories.parent[node]
        if parent >= 0:
            children[index[parent]] += 1
    return order, children


def _decimal_values(
    histories: Histories, nodes: Sequence[int], digits: int
) -> dict[int, tuple[Decimal, Decimal]]:
    """An interval holding the exact P(correct) of each history, from
    arithmetic to ``digits`` digits.

    The forward algorithm runs unnormalised, (P(L, answers), P(not L,
    answers)) times a product of 2x2 matrices, so every operation adds or
    multiplies non-negative numbers: each rounding costs at most one unit
    u = 10^(1-digits) of relative error and no cancellation amplifies it.
    Both masses carry at most (1 + 5t) u after t answers, P(correct) =
    (guess P(not L) + (1-slip) P(L)) / (P(L) + P(not L)) at most
    (10t + 7) u; the interval is (16t + 16) u wide on each side, which also
    covers rounding its ends.
    """
    ctx = Context(prec=digits, Emin=MIN_EMIN, Emax=MAX_EMAX)
    unit = ctx.power(10, 1 - digits)
    wanted = set(nodes)
    order, children = _needed(histories, nodes)
    index = {node: i for i, node in enumerate(order)}
    constants: dict[Params, tuple[Decimal, ...]] = {}
    states: dict[int, tuple[Decimal, Decimal]] = {}
    out: dict[int, tuple[Decimal, Decimal]] = {}
    mul, add, sub = ctx.multiply, ctx.add, ctx.subtract
    for node in order:
        params = histories.params[node]
        c = constants.get(params)
        if c is None:
            # Decimal(float) is the float's exact value; 1 - x is rounded.
            c = constants[params] = tuple(
                y
                for x in (
                    params.prior,
                    params.guess,
                    params.slip,
                    params.learn,
                    params.forget,
                )
                for y in (Decimal(x), sub(1, Decimal(x)))
            )
        prior, no_prior, guess, no_guess, slip, no_slip = c[:6]
        learn, unlearned, forget, keep = c[6:]
        parent = histories.parent[node]
        if parent < 0:
            mastered, unmastered = prior, no_prior
        else:
            m, u = states[parent]
            if histories.answer[node]:
                m, u = mul(m, no_slip), mul(u, guess)
            else:
                m, u = mul(m, slip), mul(u, no_guess)
            mastered = add(mul(m, keep), mul(u, learn))
            unmastered = add(mul(m, forget), mul(u, unlearned))
            children[index[parent]] -= 1
            if children[index[parent]] == 0:
                del states[parent]
        if children[index[node]]:
            states[node] = (mastered, unmastered)
        if node in wanted:
            value = ctx.divide(
                add(mul(guess, unmastered), mul(no_slip, mastered)),
                add(mastered, unmastered),
            )
            bound = mul(mul(16 * histories.depth[node] + 16, unit), value)
            out[node] = (sub(value, bound), add(value, bound))
    return out


def _exact_values(
    histories: Histories, nodes: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Exact P(correct) of each history as (numerator, denominator), in
    integers: the floats are dyadic, so with D a power of two that makes
    every parameter x an integer xD, the unnormalised forward algorithm
    stays in integers (used only where the decimals did not decide)."""
    wanted = set(nodes)
    order, children = _needed(histories, nodes)
    index = {node: i for i, node in enumerate(order)}
    constants: dict[Params, tuple[int, ...]] = {}
    states: dict[int, tuple[int, int]] = {}
    out: dict[int, tuple[int, int]] = {}
    for node in order:
        params = histories.params[node]
        c = constants.get(params)
        if c is None:
            ratios = [
                x.as_integer_ratio()
                for x in (
                    params.prior,
                    params.guess,
                    params.slip,
                    params.learn,
                    params.forget,
                )
            ]
            scale = max(den for _, den in ratios)  # a power of two
            c = constants[params] = (
                scale,
                *(num * (scale // den) for num, den in ratios),
            )
        scale, prior, guess, slip, learn, forget = c
        parent = histories.parent[node]
        if parent < 0:
            mastered, unmastered = prior, scale - prior
        else:
            m, u = states[parent]
            if histories.answer[node]:
                m, u = m * (scale - slip), u * guess
            else:
                m, u = m * slip, u * (scale - guess)
            mastered = m * (scale - forget) + u * learn
            unmastered = m * forget + u * (scale - learn)
            # Common factors of two carry nothing; dropping them keeps the
            # integers as short as the exact value allows.
            both = mastered | unmastered
            shift = (both & -both).bit_length() - 1
            mastered, unmastered = mastered >> shift, unmastered >> shift
            children[index[parent]] -= 1
            if children[index[parent]] == 0:
                del states[parent]
        if children[index[node]]:
            states[node] = (mastered, unmastered)
        if node in wanted:
            out[node] = (
                guess * unmastered + (scale - slip) * mastered,
                scale * (mastered + unmastered),
            )
    return out


def _split(
    group: list[int], intervals: Mapping[int, tuple[Decimal, Decimal]]
) -> list[list[int]]:
    """``group`` in increasing order, as runs of overlapping intervals (a run
    of one history is decided)."""
    ranked = sorted(group, key=lambda node: intervals[node][0])
    runs = [[ranked[0]]]
    top = intervals[ranked[0]][1]
    for node in ranked[1:]:
        low, high = intervals[node]
        if low > top:
            runs.append([node])
        else:
            runs[-1].append(node)
        top = max(top, high)
    return runs


def _compare(a: tuple[int, int], b: tuple[int, int]) -> int:
    left, right = a[0] * b[1], b[0] * a[1]
    return (left > right) - (left < right)


def _order(histories: Histories, parts: list[list[int]]) -> list[list[int]]:
    """Refine ``parts`` (ordered groups of distinct histories, each group's
    place known but not the order inside it) into groups of exactly equal
    predictions, in increasing order."""
    for digits in _DIGITS:
        open_nodes = [node for part in parts if len(part) > 1 for node in part]
        if not open_nodes:
            return parts
        values = _decimal_values(histories, open_nodes, digits)
        parts = [
            run
            for part in parts
            for run in (_split(part, values) if len(part) > 1 else [part])
        ]
    open_nodes = [node for part in parts if len(part) > 1 for node in part]
    if not open_nodes:
        return parts
    exact = _exact_values(histories, open_nodes)
    out: list[list[int]] = []
    for part in parts:
        if len(part) == 1:
            out.append(part)
            continue

        def by_value(a: int, b: int) -> int:
            return _compare(exact[a], exact[b])

        ranked = sorted(part, key=functools.cmp_to_key(by_value))
        out.append([ranked[0]])
        for previous, node in itertools.pairwise(ranked):
            if _compare(exact[previous], exact[node]) == 0:
                out[-1].append(node)
            else:
                out.append([node])
    return out


def _runs(
    low: NDArray[np.float64], high: NDArray[np.float64]
) -> list[NDArray[np.intp]]:
    """Indices grouped into runs of overlapping intervals, in increasing
    order: every interval of a run lies below every interval of the next."""
    order = np.lexsort((high, low))
    reach = np.maximum.accumulate(high[order])
    edges = np.flatnonzero(low[order][1:] > reach[:-1]) + 1
    return np.split(order, edges)


def exact_ranks(
    scores: Sequence[float],
    keys: Sequence[float],
    errors: Sequence[float],
    nodes: Sequence[int],
    histories: Histories,
) -> NDArray[np.float64]:
    """Dense rank of each prediction in the order of the exact P(correct):
    equal exactly when the exact predictions are equal (module doc)."""
    if not scores:
        return np.zeros(0)
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    h = np.asarray(nodes, dtype=np.int64)
    ids: dict[Params, int] = {}
    family = np.array([ids.setdefault(histories.params[n], len(ids)) for n in nodes])
    depth = np.asarray(histories.depth, dtype=np.float64)[h]
    # The key is increasing in the exact value within one parameter set;
    # its error grows like that of the log-odds.
    k_error = (depth + 2.0) * _FLOAT_STEP * np.maximum(1.0, np.abs(k))
    parts: list[list[int]] = []
    for run in _runs(s - e, s + e):
        if run.size > 1 and np.all(family[run] == family[run[0]]):
            pieces = [
                run[piece]
                for piece in _runs(k[run] - k_error[run], k[run] + k_error[run])
            ]
        else:
            pieces = [run]
        parts += [list(dict.fromkeys(h[piece].tolist())) for piece in pieces]
    rank_of: dict[int, int] = {}
    for rank, part in enumerate(_order(histories, parts)):
        for node in part:
            rank_of[node] = rank
    return np.array([rank_of[node] for node in nodes], dtype=np.float64)


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
    edges = np.flatnonzero(np.diff(ranked) != 0) + 1
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
    ranking: Sequence[float] | NDArray[np.float64] | None = None,
) -> Metrics:
    """AUC, RMSE and mean log-loss of predictions against answers; AUC ranks
    by ``ranking`` (e.g. :func:`exact_ranks`) if given, else by ``scores``."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} predictions for {len(labels)} answers")
    if not scores:
        raise ValueError("no answers to evaluate")
    p = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    clipped = np.clip(p, _EPS, 1.0 - _EPS)
    loss = -np.where(y, np.log(clipped), np.log1p(-clipped))
    order = p if ranking is None else np.asarray(ranking, dtype=np.float64)
    return Metrics(
        attempts=int(p.size),
        auc=auc(order, y),
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
    histories = Histories()
    scores: list[float] = []
    keys: list[float] = []
    errors: list[float] = []
    nodes: list[int] = []
    labels: list[bool] = []
    spans: dict[str, tuple[int, int]] = {}
    for skill, sequences in data.items():
        chosen = params.get(skill, default)
        if chosen is None:
            raise TraceError("no parameters for this skill", f"skill {skill!r}")
        skill_scores, skill_keys, skill_errors, skill_nodes = exact_predictions(
            chosen, sequences, histories
        )
        skill_labels = [a for seq in sequences for a in seq]
        if not skill_labels:
            continue
        spans[skill] = (len(scores), len(scores) + len(skill_scores))
        scores += skill_scores
        keys += skill_keys
        errors += skill_errors
        nodes += skill_nodes
        labels += skill_labels
    ranks = exact_ranks(scores, keys, errors, nodes, histories)
    per_skill = {
        skill: metrics(scores[lo:hi], labels[lo:hi], ranks[lo:hi])
        for skill, (lo, hi) in spans.items()
    }
    if not scores:
        raise ValueError("no answers to evaluate")
    return per_skill, metrics(scores, labels, ranks)
