"""Who supplies goal evaluation with completion CDFs: now, or once built.

:class:`SynchronousForecaster` builds a missing table on the spot (the CLI,
``mastery rebuild``, tests: results exactly as :func:`~processors.forecast.
completion_cdf`). :class:`DeferredForecaster` never builds an exact table on
the caller's path: it answers from the tables held, and for a missing one
returns a provisional CDF and records the key, for a builder to build and the
caller to re-derive the rows afterwards (docs/analytics.md, "Work remaining").
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Protocol

from processors.forecast import (
    HORIZON,
    ForecastTables,
    Row,
    TableKey,
    best_case_items,
    completion_cdf,
)
from processors.mastery import Params

__all__ = [
    "PROVISIONAL_INLINE_BUILDS",
    "PROVISIONAL_STEP",
    "SYNCHRONOUS",
    "DeferredForecaster",
    "Forecast",
    "Forecaster",
    "SynchronousForecaster",
]

#: Grid spacing of the provisional tables: 20x coarser than the exact grid,
#: a whole chain at the worst bounded parameters costs a few ms and ~2 MB;
#: E[min(T, 30)] within 0.02 items on average of the exact one (max ~0.4).
PROVISIONAL_STEP = 0.1
#: Provisional chains a DeferredForecaster builds inline per batch (between
#: two :meth:`DeferredForecaster.start_batch` calls); past that the
#: provisional CDF is the best case (bounded cost whatever a batch holds).
PROVISIONAL_INLINE_BUILDS = 16


@dataclass(frozen=True, slots=True)
class Forecast:
    """A completion CDF; ``pending`` names the exact table it stands in for."""

    cdf: Row
    pending: TableKey | None = None


class Forecaster(Protocol):
    """Supplies ``P(T <= t)``, ``t = 0..HORIZON`` (see processors.forecast)."""

    def forecast(
        self, params: Params, threshold: float, log_odds: float, work_needed: int
    ) -> Forecast:
        """The CDF at this state; ``threshold`` in log-odds."""
        ...

    def take_pending(self) -> frozenset[TableKey]:
        """Exact tables missed since the last call (then forgotten)."""
        ...

    def start_batch(self) -> None:
        """A new unit of work (a batch) begins: renew per-batch allowances."""
        ...

    def serve(self, owner: Hashable) -> None:
        """The forecasts that follow are for ``owner`` (e.g. a partner): what
        they build is charged to it, and it has its own share of the
        per-batch allowance."""
        ...


class SynchronousForecaster:
    """Builds what is missing before answering: always exact."""

    def __init__(self, tables: ForecastTables | None = None) -> None:
        self._tables = tables

    def forecast(
        self, params: Params, threshold: float, log_odds: float, work_needed: int
    ) -> Forecast:
        """The exact CDF (building tables when needed)."""
        if self._tables is None:
            return Forecast(completion_cdf(params, threshold, log_odds, work_needed))
        return Forecast(self._tables.get(params, threshold, log_odds, work_needed))

    def take_pending(self) -> frozenset[TableKey]:
        """Nothing is ever pending here."""
        return frozenset()

    def start_batch(self) -> None:
        """Nothing to renew."""

    def serve(self, owner: Hashable) -> None:
        """No shares here: everything is built at once."""


#: The default of processors.goals: the module-level cache of completion_cdf.
SYNCHRONOUS: Final = SynchronousForecaster()


class DeferredForecaster:
    """Answers from held tables; for a missing one, a provisional CDF.

    The provisional CDF comes from the same dynamic programme on a grid of
    :data:`PROVISIONAL_STEP` (built inline, at most ``inline_builds`` chains
    per batch and ``inline_builds_per_owner`` of them for one owner, see
    :meth:`serve`), else it is the best case: completion exactly after the
    fewest items that can complete (every answer correct). Not thread-safe:
    use it on the thread that owns ``tables``.
    """

    def __init__(
        self,
        tables: ForecastTables,
        *,
        provisional_step: float = PROVISIONAL_STEP,
        inline_builds: int = PROVISIONAL_INLINE_BUILDS,
        inline_builds_per_owner: int | None = None,
    ) -> None:
        per_owner = (
            inline_builds
            if inline_builds_per_owner is None
            else (inline_builds_per_owner)
        )
        if not provisional_step > 0.0 or not 0 <= per_owner <= inline_builds:
            raise ValueError(
                f"need provisional_step > 0 and 0 <= inline_builds_per_owner <= "
                f"inline_builds, got {provisional_step}, {per_owner}, "
                f"{inline_builds}"
            )
        self.tables = tables
        self._step = provisional_step
        self._inline_builds = inline_builds
        self._inline_per_owner = per_owner
        self._inline_left = inline_builds
        self._inline_used: dict[Hashable, int] = {}
        self._owner: Hashable = None
        self._pending: set[TableKey] = set()

    def forecast(
        self, params: Params, threshold: float, log_odds: float, work_needed: int
    ) -> Forecast:
        """The exact CDF if its tables are held, else a provisional one."""
        found = self.tables.resolve(params, threshold, log_odds, work_needed)
        if not isinstance(found, TableKey):
            return Forecast(found)
        self._pending.add(found)
        return Forecast(
            self._provisional(params, threshold, log_odds, work_needed), found
        )

    def take_pending(self) -> frozenset[TableKey]:
        """Exact tables missed since the last call (then forgotten)."""
        pending = frozenset(self._pending)
        self._pending.clear()
        return pending

    def start_batch(self) -> None:
        """Renew the allowance of inline provisional builds."""
        self._inline_left = self._inline_builds
        self._inline_used.clear()

    def serve(self, owner: Hashable) -> None:
        """Charge what follows to ``owner``, within its share of the batch."""
        self._owner = owner

    def _provisional(
        self, params: Params, threshold: float, log_odds: float, work_needed: int
    ) -> Row:
        step = self._step
        coarse = self.tables.resolve(
            params, threshold, log_odds, work_needed, step=step
        )
        if not isinstance(coarse, TableKey):
            return coarse
        owner = self._owner
        used = self._inline_used.get(owner, 0)
        if self._inline_left > 0 and used < self._inline_per_owner:
            self._inline_left -= 1
            self._inline_used[owner] = used + 1
            return self.tables.get(
                params, threshold, log_odds, work_needed, step=step, owner=owner
            )
        best = best_case_items(params, threshold, log_odds, work_needed)
        return tuple(0.0 if t < best else 1.0 for t in range(HORIZON + 1))
