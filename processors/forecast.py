"""How many more items until a target's completion criteria hold.

Model (docs/analytics.md, "Work remaining"): every further item practises the
target and its answer is drawn from the BKT predictive distribution at the
current estimate; the estimate then moves by :func:`~processors.mastery.
next_log_odds`. The completion time ``T`` is the first ``t >= w`` (``w`` = items
still needed to reach ``min_work_per_target``) at which the log-odds of
P(mastered) are at least ``logit(min_predicted_mastery)``.

:func:`completion_cdf` returns ``P(T <= t)`` for ``t = 0..HORIZON``. It is
computed by dynamic programming over the estimate's Markov chain on a grid of
log-odds (spacing :data:`GRID_STEP`, linear interpolation between grid
points), one table per :class:`TableKey` (params, threshold, w), each table
built from the one for ``w - 1`` by numpy array operations. The only
approximation is that interpolation; boundaries are handled exactly.

With forgetting (``forget > 0``) the chain is the same with the forgetting
transition; every state after a step lies below ``logit(1 - forget)`` (the
transition's ceiling; learn + forget < 1), so the grid stops there, and a
threshold above the ceiling is reached by no answer sequence (every row 0).

Tables live in a :class:`ForecastTables`, an LRU cache bounded by bytes.
:meth:`ForecastTables.lookup` never builds (the hot path asks it and learns
which table is missing); :meth:`ForecastTables.build` and :func:`build_chain`
build (the latter is pure, for a builder thread). :func:`completion_cdf` builds
synchronously into a module-level cache of :data:`DEFAULT_BUDGET_BYTES`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from processors.mastery import Params, next_log_odds, p_correct_at
from schemas.status_and_progress import MAX_WORK_REMAINING

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "GRID_STEP",
    "HORIZON",
    "MIN_BUDGET_BYTES",
    "ForecastTables",
    "Row",
    "Table",
    "TableKey",
    "best_case_items",
    "build_chain",
    "completion_cdf",
    "expected_items",
]

#: Items looked ahead: the contract's ceiling on work remaining.
HORIZON = MAX_WORK_REMAINING
#: Spacing of the log-odds grid of the dynamic programme.
GRID_STEP = 0.005
#: Byte budget of the cache behind :func:`completion_cdf`.
DEFAULT_BUDGET_BYTES = 256 * 2**20
#: Smallest budget accepted: at parameters within schemas/bkt_params.py a
#: table holds at most ~17,200 rows x 30 float64 (3.6 MB), and a lookup may
#: need two tables (w and w - 1).
MIN_BUDGET_BYTES = 16 * 2**20
_HEADROOM = 40.0
#: Bytes counted per table beyond its array (object, key, cache entry).
_TABLE_OVERHEAD = 512

Row = tuple[float, ...]
_Array = npt.NDArray[np.float64]


class TableKey(NamedTuple):
    """What one table depends on: ``work`` is ``w``, ``threshold`` in log-odds.

    A tuple: built and hashed on every lookup, so it stays as cheap as one;
    :func:`build_chain` checks it.
    """

    params: Params
    threshold: float
    work: int
    horizon: int = HORIZON
    step: float = GRID_STEP

    def with_work(self, work: int) -> TableKey:
        """The same chain at another ``w``."""
        return TableKey(self.params, self.threshold, work, self.horizon, self.step)

    def check(self) -> None:
        """Raise ValueError unless a table can be built for this key."""
        if not 0 <= self.work <= self.horizon:
            raise ValueError(f"need 0 <= work <= horizon, got {self}")
        if not (self.step > 0.0 and math.isfinite(self.threshold)):
            raise ValueError(f"need step > 0 and a finite threshold, got {self}")


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """``P(T <= t)`` rows on grid points ``x_i = start + i * step``.

    ``rows[i]`` holds the columns ``t = work..horizon`` only: before ``work``
    items nothing can complete, so the earlier columns are exactly 0.
    """

    key: TableKey
    start: float
    rows: _Array
    beyond: float  # at or above this log-odds the row is exactly "complete at w"
    floor: bool  # learn = 0: every row below ``start`` is exactly 0
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nbytes", int(self.rows.nbytes) + _TABLE_OVERHEAD)


def _lowest(params: Params, threshold: float, horizon: int, step: float) -> float:
    if params.learn > 0.0:
        # One step always lands above logit(learn): below it only a learner's
        # first state can be, and that is expanded explicitly.
        return min(math.log(params.learn) - math.log1p(-params.learn), threshold) - step
    # Without learning one item raises the log-odds by at most step_correct.
    return threshold - horizon * params.step_correct - step


# --- vectorized builds: the same floating-point operations, in the same order,
# as processors.mastery's scalar functions and the former per-point loops.


def _moves(params: Params, x: _Array) -> tuple[_Array, _Array, _Array]:
    """P(correct), log-odds after a correct and after a wrong answer, at ``x``."""
    e = np.exp(-np.abs(x))
    inv = 1.0 / (1.0 + e)
    p = np.where(x >= 0.0, inv, e / (1.0 + e))  # sigmoid(x)
    q = np.where(-x >= 0.0, inv, e / (1.0 + e))  # sigmoid(-x)
    pc = params.guess * q + (1.0 - params.slip) * p
    return (
        pc,
        _next(params, x, params.step_correct),
        _next(params, x, params.step_wrong),
    )


def _logaddexp(x: _Array, y: float) -> _Array:
    # mastery._logaddexp's operations (max + log1p(exp(-|x - y|))).
    return np.maximum(x, y) + np.log1p(np.exp(-np.abs(x - y)))


def _next(params: Params, x: _Array, move: float) -> _Array:
    lo = x + move
    if params.forget > 0.0:
        return _logaddexp(lo + params.log_keep, params.log_learn) - _logaddexp(
            lo + params.log_forget, params.log_unlearned
        )
    a = params.log_learn
    if a == -math.inf:
        return lo
    # lo + log1p(exp(a - lo)) above a, a + log1p(exp(lo - a)) below.
    return np.maximum(lo, a) + np.log1p(np.exp(-np.abs(lo - a))) + params.learn_shift


def _ceiling(params: Params) -> float:
    """Highest log-odds a state can have with forgetting: the prior, or the
    transition's image ``logit(1 - forget)`` (as learn < 1 - forget)."""
    return max(params.prior_log_odds, params.log_keep - params.log_forget)


def _before_wrong(params: Params, y: float) -> float:
    """Lowest log-odds from which a wrong answer lands at ``y`` or above, with
    forgetting (the inverse of the increasing transition; +inf when ``y`` is
    above the ceiling, -inf when every state lands above it)."""
    odds = math.exp(y)
    num = odds * (1.0 - params.learn) - params.learn
    den = (1.0 - params.forget) - odds * params.forget
    if den <= 0.0:
        return math.inf
    if num <= 0.0:
        return -math.inf
    return math.log(num) - math.log(den) - params.step_wrong


def _beyond(params: Params, threshold: float, work: int) -> float:
    """At or above this log-odds, ``work`` wrong answers in a row still end at
    or above the threshold (so the row is exactly "complete at w")."""
    if params.forget == 0.0:
        # Capped at _HEADROOM: falling that far within 30 items takes
        # ~40/|step| wrong answers at P~slip each, probability below ~e^-19.
        return threshold + min(-work * params.step_wrong, _HEADROOM)
    y = threshold
    for _ in range(work):
        y = _before_wrong(params, y)
        if not math.isfinite(y):
            break
    # A relative 1e-12 above the inverse computed in floats: never claims a
    # state complete that rounding would put a hair below the threshold.
    return y + 1e-12 * max(1.0, abs(y))


def _grid(start: float, n: int, step: float) -> _Array:
    return start + np.arange(n, dtype=np.float64) * step


def _build_unconstrained(key: TableKey) -> Table:
    params, threshold, horizon, step = key.params, key.threshold, key.horizon, key.step
    start = _lowest(params, threshold, horizon, step)
    n = max(1, math.ceil((threshold - start) / step))
    start = threshold - n * step  # grid points strictly below the threshold
    pc, up, down = _moves(params, _grid(start, n, step))
    slots = [_slots(y, threshold, start, step, n) for y in (up, down)]
    (ju, au), (jd, ad) = slots
    ju1, jd1 = ju + 1, jd + 1
    qc = 1.0 - pc
    f = np.zeros(n + 2)
    f[n:] = 1.0  # index n: absorbed at the threshold
    levels = np.zeros((horizon + 1, n))
    for t in range(1, horizon + 1):
        fu, fd = f[ju], f[jd]
        levels[t] = pc * (fu + (f[ju1] - fu) * au) + qc * (fd + (f[jd1] - fd) * ad)
        f[:n] = levels[t]
    rows = np.ascontiguousarray(levels.T)
    return Table(key, start, rows, threshold, params.learn == 0.0)


def _slots(
    y: _Array, threshold: float, start: float, step: float, n: int
) -> tuple[npt.NDArray[np.intp], _Array]:
    """Grid index and weight of each successor (index ``n``: absorbed)."""
    pos = np.maximum((y - start) / step, 0.0)
    j = np.floor(pos)
    weight = pos - j
    inside = j < n - 1
    j = np.where(inside, j, n - 1)
    weight = np.where(inside, weight, 0.0)
    absorbed = y >= threshold
    j = np.where(absorbed, n, j)
    weight = np.where(absorbed, 0.0, weight)
    return j.astype(np.intp), weight


def _rows_at(child: Table, y: _Array) -> _Array:
    """The child's rows at log-odds ``y``, without its last column (t = horizon).

    In-place products: the same operations as the scalar interpolation, with
    fewer temporary arrays (the build is bound by memory traffic).
    """
    rows, step = child.rows[:, :-1], child.key.step
    last = len(rows) - 1
    if not child.floor and np.any(y < child.start):
        # One step lands above logit(learn) > start whenever learn > 0.
        raise ArithmeticError(f"successor below the grid of {child.key}")
    pos = (y - child.start) / step
    j = np.clip(np.floor(pos), 0, max(last - 1, 0)).astype(np.intp)
    a = (pos - j)[:, None]
    out: _Array = rows[j]
    out *= 1.0 - a
    upper = rows[np.minimum(j + 1, last)]
    upper *= a
    out += upper
    out[pos >= last] = rows[last]  # flat between the last grid point and θ
    out[y >= child.beyond] = 1.0
    out[y < child.start] = 0.0
    return out


def _build_forced(key: TableKey, child: Table) -> Table:
    params, work, step = key.params, key.work, key.step
    start = child.start
    # From here on, `work` wrong answers in a row still end above threshold.
    beyond = max(_beyond(params, key.threshold, work), start)
    top = beyond if params.forget == 0.0 else min(beyond, _ceiling(params) + step)
    n = math.ceil((top - start) / step) + 1
    pc, up, down = _moves(params, _grid(start, n, step))
    # Child columns t = work-1..horizon; this table's t = work..horizon are
    # the child's at t - 1 (one item consumed).
    rows = _rows_at(child, up)
    rows *= pc[:, None]
    d = _rows_at(child, down)
    d *= (1.0 - pc)[:, None]
    rows += d
    return Table(key, start, rows, beyond, child.floor)


def build_chain(key: TableKey, child: Table | None = None) -> list[Table]:
    """Tables ``w = child.work + 1 .. key.work`` (from 0 without ``child``).

    Pure and thread-safe: it only reads ``child``.
    """
    key.check()
    if child is not None and (
        child.key.with_work(key.work) != key or child.key.work >= key.work
    ):
        raise ValueError(f"{child.key} is not below {key}")
    built: list[Table] = []
    for work in range(0 if child is None else child.key.work + 1, key.work + 1):
        one = key.with_work(work)
        child = (
            _build_unconstrained(one) if child is None else _build_forced(one, child)
        )
        built.append(child)
    return built


# --- rows at one point, from tables (scalar, as cheap as an interpolation).


def _complete_at(key: TableKey) -> Row:
    return (0.0,) * key.work + (1.0,) * (key.horizon + 1 - key.work)


def _interpolate(table: Table, x: float) -> Row:
    key = table.key
    if x >= table.beyond:
        return _complete_at(key)
    pos = (x - table.start) / key.step
    rows = table.rows
    last = len(rows) - 1
    if pos >= last:
        # Only for w = 0: between the last grid point and the threshold the
        # row is flat (the jump to 1 sits exactly at the threshold).
        values = rows[last]
    else:
        j = int(pos)
        a = pos - j
        values = rows[j] * (1.0 - a) + rows[j + 1] * a
    if key.work:
        return (0.0,) * key.work + tuple(values.tolist())
    return tuple(values.tolist())


class ForecastTables:
    """Tables by key, least recently used dropped first, bounded by bytes.

    Pure: no I/O, no threads, not thread-safe (a builder thread runs
    :func:`build_chain` and hands the result to :meth:`insert`).
    """

    def __init__(
        self,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        *,
        owner_share_bytes: int | None = None,
    ) -> None:
        if budget_bytes < MIN_BUDGET_BYTES:
            raise ValueError(
                f"forecast table budget {budget_bytes} bytes is below the "
                f"minimum {MIN_BUDGET_BYTES} (two of the largest tables)"
            )
        if owner_share_bytes is not None and not (
            MIN_BUDGET_BYTES <= owner_share_bytes <= budget_bytes
        ):
            raise ValueError(
                f"an owner's share of the forecast tables must be within "
                f"{MIN_BUDGET_BYTES} and the budget {budget_bytes} bytes, got "
                f"{owner_share_bytes}"
            )
        self.budget_bytes = budget_bytes
        self.owner_share_bytes = owner_share_bytes
        self._tables: OrderedDict[TableKey, Table] = OrderedDict()
        self._bytes = 0
        self._missing: set[TableKey] = set()
        # Who each table was built for (insert's ``owner``), each owner's
        # tables least recently used first, and the bytes charged to it.
        self._owner_of: dict[TableKey, Hashable] = {}
        self._owned: dict[Hashable, OrderedDict[TableKey, None]] = {}
        self._owner_bytes: dict[Hashable, int] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of the tables held (never above ``budget_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._tables)

    def __contains__(self, key: object) -> bool:
        return key in self._tables

    def key_for(
        self,
        params: Params,
        threshold: float,
        work_needed: int,
        *,
        horizon: int = HORIZON,
        step: float = GRID_STEP,
    ) -> TableKey:
        """The table a forecast at ``work_needed`` items reads first."""
        return TableKey(params, threshold, max(work_needed, 0), horizon, step)

    def resolve(
        self,
        params: Params,
        threshold: float,
        log_odds: float,
        work_needed: int,
        *,
        horizon: int = HORIZON,
        step: float = GRID_STEP,
    ) -> Row | TableKey:
        """``P(T <= t)``, or the key of a table it needs that is not held."""
        if work_needed > horizon or (work_needed <= 0 and log_odds >= threshold):
            return self._trivial(threshold, log_odds, work_needed, horizon)
        key = self.key_for(params, threshold, work_needed, horizon=horizon, step=step)
        return self._row(key, log_odds)

    def lookup(
        self,
        params: Params,
        threshold: float,
        log_odds: float,
        work_needed: int,
        *,
        horizon: int = HORIZON,
        step: float = GRID_STEP,
    ) -> Row | None:
        """Like :func:`completion_cdf` but never builds: None when a table is
        not held (its key is then recorded, see :meth:`take_missing`)."""
        found = self.resolve(
            params, threshold, log_odds, work_needed, horizon=horizon, step=step
        )
        if isinstance(found, TableKey):
            self._missing.add(found)
            return None
        return found

    def take_missing(self) -> frozenset[TableKey]:
        """Keys :meth:`lookup` missed since the last call, then forgets them."""
        missing = frozenset(self._missing)
        self._missing.clear()
        return missing

    def below(self, key: TableKey) -> Table | None:
        """The held table to build ``key`` from (the next one below it), if any;
        refreshed, as lookups at ``key`` may read it too."""
        if key.work == 0:
            return None
        return self._table(key.with_work(key.work - 1), None)

    def build(self, key: TableKey) -> None:
        """Build ``key`` (and the tables below it it needs) and hold them."""
        self.insert(build_chain(key, self.below(key)))

    def owner_bytes(self, owner: Hashable) -> int:
        """Bytes of the tables held that were built for ``owner``."""
        return self._owner_bytes.get(owner, 0)

    def insert(self, tables: Iterable[Table], owner: Hashable = None) -> None:
        """Hold built tables, dropping the least recently used beyond the
        budget. A table larger than the whole budget is not held.

        The tables are charged to ``owner`` (e.g. the partner whose rows need
        them). With ``owner_share_bytes`` set, an owner over its share drops
        its *own* least recently used tables first, so one owner's many
        distinct tables never evict another's while the others together hold
        no more than the budget minus that share.
        """
        share = self.owner_share_bytes
        for table in tables:
            self._drop(table.key)
            if table.nbytes > self.budget_bytes:
                continue
            if share is not None:
                owned = self._owned.get(owner)
                while owned and self.owner_bytes(owner) + table.nbytes > share:
                    self._drop(next(iter(owned)))
            while self._bytes + table.nbytes > self.budget_bytes:
                self._drop(next(iter(self._tables)))
            key = table.key
            self._tables[key] = table
            self._bytes += table.nbytes
            self._owner_of[key] = owner
            self._owned.setdefault(owner, OrderedDict())[key] = None
            self._owner_bytes[owner] = self.owner_bytes(owner) + table.nbytes

    def _drop(self, key: TableKey) -> None:
        table = self._tables.pop(key, None)
        if table is None:
            return
        self._bytes -= table.nbytes
        owner = self._owner_of.pop(key)
        owned = self._owned[owner]
        del owned[key]
        left = self._owner_bytes.pop(owner) - table.nbytes
        if owned:
            self._owner_bytes[owner] = left
        else:
            del self._owned[owner]

    def _touch(self, key: TableKey) -> None:
        """``key`` (held) was read: most recently used, globally and for its owner."""
        self._tables.move_to_end(key)
        self._owned[self._owner_of[key]].move_to_end(key)

    def get(
        self,
        params: Params,
        threshold: float,
        log_odds: float,
        work_needed: int,
        *,
        horizon: int = HORIZON,
        step: float = GRID_STEP,
        owner: Hashable = None,
    ) -> Row:
        """``P(T <= t)``, building the missing tables synchronously (a table
        too large to hold is read once from the build and dropped), charged to
        ``owner`` (see :meth:`insert`)."""
        if work_needed > horizon or (work_needed <= 0 and log_odds >= threshold):
            return self._trivial(threshold, log_odds, work_needed, horizon)
        key = self.key_for(params, threshold, work_needed, horizon=horizon, step=step)
        local: dict[TableKey, Table] = {}
        while isinstance(found := self._row(key, log_odds, local), TableKey):
            below = None if found.work == 0 else found.with_work(found.work - 1)
            built = build_chain(
                found, None if below is None else self._table(below, local)
            )
            local.update((table.key, table) for table in built)
            self.insert(built, owner)
        return found

    @staticmethod
    def _trivial(threshold: float, log_odds: float, work: int, horizon: int) -> Row:
        # Never within the horizon, or already complete.
        done = work <= 0 and log_odds >= threshold
        return (1.0 if done else 0.0,) * (horizon + 1)

    def _table(
        self, key: TableKey, local: dict[TableKey, Table] | None
    ) -> Table | None:
        table = self._tables.get(key)
        if table is not None:
            self._touch(key)
            return table
        return None if local is None else local.get(key)

    def _row(
        self, key: TableKey, x: float, local: dict[TableKey, Table] | None = None
    ) -> Row | TableKey:
        table = self._tables.get(key)
        if table is not None:
            self._touch(key)
        elif local is None or (table := local.get(key)) is None:
            return key
        if x >= table.start:
            return _interpolate(table, x)
        if table.floor:
            return (0.0,) * (key.horizon + 1)
        # Below the grid (a first state under logit(learn)): expand one step.
        below = key.with_work(max(key.work - 1, 0))
        params = key.params
        up = self._row(below, next_log_odds(params, x, True), local)
        if isinstance(up, TableKey):
            return up
        down = self._row(below, next_log_odds(params, x, False), local)
        if isinstance(down, TableKey):
            return down
        pc = p_correct_at(params, x)
        mixed = [
            pc * u + (1.0 - pc) * d
            for u, d in zip(up[: key.horizon], down[: key.horizon], strict=True)
        ]
        return (0.0, *mixed)


_DEFAULT_TABLES = ForecastTables()


def completion_cdf(
    params: Params,
    threshold: float,
    log_odds: float,
    work_needed: int,
    *,
    horizon: int = HORIZON,
    step: float = GRID_STEP,
) -> Row:
    """``P(T <= t)`` for ``t = 0..horizon``; ``threshold`` is in log-odds.

    Builds missing tables synchronously (into a module-level cache of
    :data:`DEFAULT_BUDGET_BYTES`, for one thread, as goal evaluation is).
    """
    return _DEFAULT_TABLES.get(
        params, threshold, log_odds, work_needed, horizon=horizon, step=step
    )


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
