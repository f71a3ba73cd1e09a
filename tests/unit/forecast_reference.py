"""Reference: the pure-Python work-remaining forecast as it was before the numpy
tables (processors/forecast.py at aef9a82), kept verbatim for the parity tests.
Not used by the application."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from processors.mastery import Params, next_log_odds, p_correct_at

__all__ = [
    "GRID_STEP",
    "HORIZON",
    "best_case_items",
    "completion_cdf",
    "expected_items",
]

#: Items looked ahead; the contract caps work remaining at 30.
HORIZON = 30
#: Spacing of the log-odds grid of the dynamic programme.
GRID_STEP = 0.005
_TABLE_CACHE = 512
_HEADROOM = 40.0

Row = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class _Table:
    """``P(T <= t)`` rows on grid points ``x_i = start + i * step``."""

    params: Params
    threshold: float
    work: int
    horizon: int
    step: float
    start: float
    rows: Sequence[Row]
    beyond: float  # at or above this log-odds the row is exactly ``top``
    top: Row
    floor: Row | None  # exact row below ``start`` (learn = 0), else None


def _lowest(params: Params, threshold: float, horizon: int, step: float) -> float:
    if params.learn > 0.0:
        # One step always lands above logit(learn): below it only a learner's
        # first state can be, and that is expanded explicitly.
        return min(math.log(params.learn) - math.log1p(-params.learn), threshold) - step
    # Without learning one item raises the log-odds by at most step_correct.
    return threshold - horizon * params.step_correct - step


def _interpolate(table: _Table, x: float) -> Row:
    if x >= table.beyond:
        return table.top
    pos = (x - table.start) / table.step
    rows = table.rows
    last = len(rows) - 1
    if pos >= last:
        # Only for w = 0: between the last grid point and the threshold the
        # row is flat (the jump to 1 sits exactly at the threshold).
        return rows[last]
    j = int(pos)
    a = pos - j
    lo_row, hi_row = rows[j], rows[j + 1]
    b = 1.0 - a
    return tuple([u * b + v * a for u, v in zip(lo_row, hi_row, strict=True)])


def _lookup(table: _Table, x: float) -> Row:
    if x >= table.start:
        return _interpolate(table, x)
    if table.floor is not None:
        return table.floor
    below = _get_table(
        table.params, table.threshold, max(table.work - 1, 0), table.horizon, table.step
    )
    return _expand(table.params, x, below, table.horizon)


def _expand(params: Params, x: float, child: _Table, horizon: int) -> Row:
    """Row at ``x`` from the rows of its two successors (no absorption at x)."""
    pc = p_correct_at(params, x)
    up = _lookup(child, next_log_odds(params, x, True))
    down = _lookup(child, next_log_odds(params, x, False))
    mixed = [
        pc * u + (1.0 - pc) * d
        for u, d in zip(up[:horizon], down[:horizon], strict=True)
    ]
    return (0.0, *mixed)


def _build_unconstrained(
    params: Params, threshold: float, horizon: int, step: float
) -> _Table:
    start = _lowest(params, threshold, horizon, step)
    n = max(1, math.ceil((threshold - start) / step))
    start = threshold - n * step  # grid points strictly below the threshold
    absorbed = n  # index of an extra slot that holds 1.0
    kids: list[tuple[float, int, float, int, float]] = []
    for i in range(n):
        x = start + i * step
        slots: list[int | float] = []
        for correct in (True, False):
            y = next_log_odds(params, x, correct)
            if y >= threshold:
                slots += [absorbed, 0.0]
            else:
                pos = max((y - start) / step, 0.0)
                j = int(pos)
                slots += [j, pos - j] if j < n - 1 else [n - 1, 0.0]
        ju, au, jd, ad = slots
        kids.append((p_correct_at(params, x), int(ju), au, int(jd), ad))
    levels = [[0.0] * n + [1.0, 1.0]]
    for _ in range(horizon):
        f = levels[-1]
        nxt = [
            pc * (f[ju] + (f[ju + 1] - f[ju]) * au)
            + (1.0 - pc) * (f[jd] + (f[jd + 1] - f[jd]) * ad)
            for pc, ju, au, jd, ad in kids
        ]
        levels.append([*nxt, 1.0, 1.0])
    rows = list(zip(*(level[:n] for level in levels), strict=True))
    floor = None if params.learn > 0.0 else (0.0,) * (horizon + 1)
    return _Table(
        params,
        threshold,
        0,
        horizon,
        step,
        start,
        rows,
        threshold,
        (1.0,) * (horizon + 1),
        floor,
    )


def _build_forced(
    params: Params, threshold: float, work: int, horizon: int, step: float
) -> _Table:
    child = _get_table(params, threshold, work - 1, horizon, step)
    start = child.start
    # From here on, `work` wrong answers in a row still end above threshold.
    # Capped at _HEADROOM: falling that far within 30 items takes ~40/|step|
    # wrong answers at P~slip each, probability below ~e^-19 for any params.
    beyond = threshold + min(-work * params.step_wrong, _HEADROOM)
    n = math.ceil((beyond - start) / step) + 1
    rows = [_expand(params, start + i * step, child, horizon) for i in range(n)]
    top = tuple(0.0 if t < work else 1.0 for t in range(horizon + 1))
    floor = None if child.floor is None else (0.0,) * (horizon + 1)
    return _Table(
        params, threshold, work, horizon, step, start, rows, beyond, top, floor
    )


@lru_cache(maxsize=_TABLE_CACHE)
def _get_table(
    params: Params, threshold: float, work: int, horizon: int, step: float
) -> _Table:
    if work == 0:
        return _build_unconstrained(params, threshold, horizon, step)
    return _build_forced(params, threshold, work, horizon, step)


def completion_cdf(
    params: Params,
    threshold: float,
    log_odds: float,
    work_needed: int,
    *,
    horizon: int = HORIZON,
    step: float = GRID_STEP,
) -> Row:
    """``P(T <= t)`` for ``t = 0..horizon``; ``threshold`` is in log-odds."""
    if work_needed > horizon:
        return (0.0,) * (horizon + 1)
    work = max(work_needed, 0)
    if work == 0 and log_odds >= threshold:
        return (1.0,) * (horizon + 1)
    return _lookup(_get_table(params, threshold, work, horizon, step), log_odds)


def expected_items(cdf: Row) -> float:
    """``E[min(T, horizon)]`` from a completion CDF."""
    horizon = len(cdf) - 1
    return horizon - math.fsum(cdf[:horizon])


def best_case_items(
    params: Params,
    threshold: float,
    log_odds: float,
    work_needed: int,
    *,
    horizon: int = HORIZON,
) -> int:
    """Items until completion if every further answer is correct (capped).

    The update is increasing in the log-odds and a correct answer raises them
    more than a wrong one, so no answer sequence completes sooner.
    """
    x = log_odds
    for n in range(horizon):
        if n >= work_needed and x >= threshold:
            return n
        x = next_log_odds(params, x, True)
    return horizon
