"""ForecastTables (an LRU by bytes whose lookup never builds) and the
forecasters goal evaluation reads through."""

from __future__ import annotations

import itertools

import pytest

from processors.forecast import (
    HORIZON,
    MIN_BUDGET_BYTES,
    ForecastTables,
    Row,
    TableKey,
    best_case_items,
    build_chain,
    completion_cdf,
    expected_items,
)
from processors.forecaster import (
    PROVISIONAL_STEP,
    DeferredForecaster,
    SynchronousForecaster,
)
from processors.goals import evaluate, evaluate_target
from processors.mastery import DEFAULT_PARAMS, Params, logit
from tests.unit.test_goals import GOALS, answer, fresh, make_catalog

THETA = logit(0.95)
WORST = Params(prior=0.5, learn=1e-4, guess=1e-4, slip=1e-4)


def _is_cdf(cdf: Row, work: int) -> None:
    assert len(cdf) == HORIZON + 1
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in cdf)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(cdf))
    assert all(v == 0.0 for v in cdf[:work])


def test_lookup_never_builds_then_build_gives_the_synchronous_row() -> None:
    tables = ForecastTables(MIN_BUDGET_BYTES)
    for x, work in ((0.5, 0), (1.0, 3), (-12.0, 5), (THETA + 60, 7)):
        assert tables.lookup(DEFAULT_PARAMS, THETA, x, work) is None
        missing = tables.take_missing()
        assert missing == {TableKey(DEFAULT_PARAMS, THETA, work)}
        assert tables.take_missing() == frozenset()
        before = len(tables)
        (key,) = missing
        tables.build(key)
        assert len(tables) > before
        assert tables.lookup(DEFAULT_PARAMS, THETA, x, work) == completion_cdf(
            DEFAULT_PARAMS, THETA, x, work
        )
        assert tables.take_missing() == frozenset()


def test_trivial_rows_need_no_table() -> None:
    tables = ForecastTables(MIN_BUDGET_BYTES)
    assert tables.lookup(DEFAULT_PARAMS, THETA, THETA, 0) == (1.0,) * (HORIZON + 1)
    assert tables.lookup(DEFAULT_PARAMS, THETA, 0.0, HORIZON + 1) == (0.0,) * (
        HORIZON + 1
    )
    assert len(tables) == 0
    assert tables.take_missing() == frozenset()


def test_bytes_never_exceed_the_budget_and_the_oldest_go_first() -> None:
    budget = MIN_BUDGET_BYTES
    tables = ForecastTables(budget)
    keys = [TableKey(WORST, logit(m), 4) for m in (0.9, 0.95, 0.99, 0.999, 0.9999)]
    held_bytes = []
    for key in keys:
        tables.build(key)
        assert 0 < tables.nbytes <= budget
        assert key in tables
        held_bytes.append(tables.nbytes)
    # Five chains of w = 0..4 at the worst parameters do not fit in 16 MiB.
    assert keys[0] not in tables
    assert sum(t.nbytes for k in keys for t in build_chain(k)) > budget
    # A lookup refreshes a table: it then outlives an untouched newer one.
    newest, older = keys[-1], keys[-2]
    assert older in tables
    assert tables.lookup(WORST, older.threshold, older.threshold + 1.0, 4) is not None
    tables.build(TableKey(WORST, logit(0.99999), 4))
    assert tables.nbytes <= budget
    assert older in tables
    assert newest.with_work(0) not in tables


def test_budget_is_checked() -> None:
    with pytest.raises(ValueError, match="below the minimum"):
        ForecastTables(MIN_BUDGET_BYTES - 1)
    with pytest.raises(ValueError, match="work <= horizon"):
        build_chain(TableKey(DEFAULT_PARAMS, THETA, HORIZON + 1))
    with pytest.raises(ValueError, match="finite threshold"):
        ForecastTables(MIN_BUDGET_BYTES).build(
            TableKey(DEFAULT_PARAMS, float("inf"), 0)
        )
    with pytest.raises(ValueError, match="step > 0"):
        build_chain(TableKey(DEFAULT_PARAMS, THETA, 0, step=0.0))
    other = build_chain(TableKey(DEFAULT_PARAMS, THETA + 1.0, 0))[0]
    with pytest.raises(ValueError, match="is not below"):
        build_chain(TableKey(DEFAULT_PARAMS, THETA, 1), other)


def test_a_table_larger_than_the_budget_is_answered_but_not_held() -> None:
    # Outside the parameter bounds (learn = 0) and with a longer horizon one
    # table exceeds 16 MiB: get() still answers, from the build itself.
    never = Params(prior=0.3, learn=0.0, guess=1e-4, slip=0.1)
    tables = ForecastTables(MIN_BUDGET_BYTES)
    row = tables.get(never, THETA, -1.0, 0, horizon=60)
    assert row == completion_cdf(never, THETA, -1.0, 0, horizon=60)
    assert TableKey(never, THETA, 0, horizon=60) not in tables
    assert tables.nbytes <= MIN_BUDGET_BYTES


def test_synchronous_forecaster_is_completion_cdf() -> None:
    tables = ForecastTables(MIN_BUDGET_BYTES)
    for forecaster in (SynchronousForecaster(), SynchronousForecaster(tables)):
        forecaster.start_batch()
        got = forecaster.forecast(DEFAULT_PARAMS, THETA, 0.3, 2)
        assert got.pending is None
        assert got.cdf == completion_cdf(DEFAULT_PARAMS, THETA, 0.3, 2)
        assert forecaster.take_pending() == frozenset()
    assert TableKey(DEFAULT_PARAMS, THETA, 2) in tables


def test_deferred_forecaster_reports_pending_and_answers_provisionally() -> None:
    tables = ForecastTables(MIN_BUDGET_BYTES)
    forecaster = DeferredForecaster(tables)
    got = forecaster.forecast(WORST, THETA, -2.0, 3)
    key = TableKey(WORST, THETA, 3)
    assert got.pending == key
    _is_cdf(got.cdf, 3)
    coarse = completion_cdf(WORST, THETA, -2.0, 3, step=PROVISIONAL_STEP)
    assert got.cdf == coarse
    exact = completion_cdf(WORST, THETA, -2.0, 3)
    assert abs(expected_items(got.cdf) - expected_items(exact)) < 0.5
    assert key not in tables  # the exact table was not built on this path
    assert forecaster.take_pending() == {key}
    assert forecaster.take_pending() == frozenset()
    tables.build(key)
    again = forecaster.forecast(WORST, THETA, -2.0, 3)
    assert again.pending is None
    assert again.cdf == exact


def test_deferred_forecaster_bounds_its_inline_builds_per_batch() -> None:
    tables = ForecastTables(MIN_BUDGET_BYTES)
    forecaster = DeferredForecaster(tables, inline_builds=1)
    first = forecaster.forecast(DEFAULT_PARAMS, logit(0.9), 0.0, 1)
    assert first.cdf == completion_cdf(
        DEFAULT_PARAMS, logit(0.9), 0.0, 1, step=PROVISIONAL_STEP
    )
    held = len(tables)
    # Allowance spent: the best case (all answers correct), no build at all.
    second = forecaster.forecast(DEFAULT_PARAMS, logit(0.99), 0.0, 1)
    assert len(tables) == held
    _is_cdf(second.cdf, 1)
    assert set(second.cdf) == {0.0, 1.0}
    best = best_case_items(DEFAULT_PARAMS, logit(0.99), 0.0, 1)
    assert 1 <= best < HORIZON
    assert second.cdf.index(1.0) == best
    assert forecaster.take_pending() == {
        TableKey(DEFAULT_PARAMS, logit(0.9), 1),
        TableKey(DEFAULT_PARAMS, logit(0.99), 1),
    }
    assert len(tables) == held  # taking the keys does not renew the allowance
    forecaster.forecast(DEFAULT_PARAMS, logit(0.99), 0.0, 1)
    assert len(tables) == held
    forecaster.start_batch()  # a new batch: one inline build again
    third = forecaster.forecast(DEFAULT_PARAMS, logit(0.99), 0.0, 1)
    assert len(tables) > held
    assert third.cdf != second.cdf
    with pytest.raises(ValueError, match="inline_builds"):
        DeferredForecaster(tables, inline_builds=-1)


def _assert_contract_row(row: dict[str, object]) -> None:
    """Ranges of ../shared/spec/status-and-progress-api.txt (docs/analytics.md)."""
    assert row["status"] in {
        "complete",
        "complete_max_work",
        "in_progress",
        "struggling",
        "no_work",
    }
    progress, remaining = row["progress"], row["work_remaining"]
    assert isinstance(progress, float) and 0.0 <= progress <= 1.0
    assert isinstance(remaining, int) and -1 <= remaining <= HORIZON
    targets = row["targets"]
    assert isinstance(targets, list) and targets
    for target in targets:
        assert 0.0 <= target["progress"] <= 1.0
    for topic in row.get("topic_work_remaining", []):  # type: ignore[attr-defined]
        assert -1 <= topic["min_work_remaining"] <= HORIZON
        assert -1 <= topic["average_work_remaining"] <= HORIZON


def test_goals_with_a_pending_table_give_contract_rows_and_name_the_key() -> None:
    catalog = make_catalog()
    state = fresh()
    for module, correct in (("m-a", True), ("m-ab", False), ("m-c", True)):
        state = answer(state, catalog, module, correct)
    tables = ForecastTables(MIN_BUDGET_BYTES)
    deferred = DeferredForecaster(tables)
    provisional = {
        g.goal_id: evaluate(g, state, catalog, forecaster=deferred) for g in GOALS
    }
    pending = deferred.take_pending()
    assert pending
    fast = catalog.params_for("lo-a")
    assert TableKey(fast, logit(0.9), 1) in pending  # lo-a: 2 needed, 1 done
    for row in provisional.values():
        _assert_contract_row(row)
    for key in pending:
        tables.build(key)
    exact = {g.goal_id: evaluate(g, state, catalog, forecaster=deferred) for g in GOALS}
    assert deferred.take_pending() == frozenset()
    assert exact == {g.goal_id: evaluate(g, state, catalog) for g in GOALS}


def test_a_target_outcome_names_the_tables_it_lacked() -> None:
    catalog = make_catalog()
    state = answer(fresh(), catalog, "m-ab", True)
    goal = next(g for g in GOALS if g.goal_id == "g-mod")
    target = goal.targets[1]  # module m-ab: objectives lo-a and lo-b
    deferred = DeferredForecaster(ForecastTables(MIN_BUDGET_BYTES))
    kwargs = {
        "objectives": state.objectives,
        "untagged": state.untagged_work,
        "tagged": state.tagged_work.get(goal.goal_id, {}),
        "catalog": catalog,
    }
    outcome = evaluate_target(target, goal, forecaster=deferred, **kwargs)
    threshold = logit(goal.completion_criteria.min_predicted_mastery)
    need = goal.completion_criteria.min_work_per_target - outcome.work
    assert outcome.pending == {
        TableKey(catalog.params_for(o), threshold, need) for o in ("lo-a", "lo-b")
    }
    assert deferred.take_pending() == outcome.pending
    assert evaluate_target(target, goal, **kwargs).pending == frozenset()


# -- each owner's share (issue 18, point 5) --------------------------------

_SHARE_KEYS = [TableKey(WORST, logit(m), 4) for m in (0.9, 0.95, 0.99, 0.999, 0.9999)]


def _fill(tables: ForecastTables) -> tuple[TableKey, list[TableKey]]:
    """Owner "b" builds one chain; then owner "a" builds chains worth more
    than the whole budget. Returns b's key and a's keys."""
    b_key = TableKey(WORST, logit(0.97), 4)
    tables.insert(build_chain(b_key), "b")
    a_keys = [*_SHARE_KEYS, TableKey(WORST, logit(0.99999), 4)]
    for key in a_keys:
        tables.insert(build_chain(key), "a")
        assert tables.nbytes <= tables.budget_bytes
    assert sum(t.nbytes for k in a_keys for t in build_chain(k)) > tables.budget_bytes
    return b_key, a_keys


def test_an_owner_over_its_share_evicts_its_own_tables_not_anothers() -> None:
    budget = 2 * MIN_BUDGET_BYTES
    tables = ForecastTables(budget, owner_share_bytes=MIN_BUDGET_BYTES)
    b_key, a_keys = _fill(tables)
    b_chain = [b_key.with_work(w) for w in range(5)]
    assert all(k in tables for k in b_chain)  # b untouched
    assert tables.owner_bytes("a") <= MIN_BUDGET_BYTES
    assert a_keys[-1] in tables and a_keys[0] not in tables  # a's oldest went
    assert tables.owner_bytes("b") == sum(t.nbytes for t in build_chain(b_key))
    assert tables.nbytes == tables.owner_bytes("a") + tables.owner_bytes("b")
    # Without a share, the same builds evict b's chain (least recently used).
    unshared = ForecastTables(budget)
    b_key, _ = _fill(unshared)
    assert b_key not in unshared and unshared.owner_bytes("b") == 0


def test_an_owners_share_follows_its_reads_and_is_checked() -> None:
    tables = ForecastTables(2 * MIN_BUDGET_BYTES, owner_share_bytes=MIN_BUDGET_BYTES)
    first, second, third = _SHARE_KEYS[:3]
    tables.insert(build_chain(first), "a")
    tables.insert(build_chain(second), "a")
    # A read refreshes first's w = 4 table within a's own order: the tables
    # evicted for third (~6.5-7 MB a chain: two fit in 16 MiB) are the
    # unread ones, oldest first.
    assert tables.lookup(WORST, first.threshold, first.threshold + 1.0, 4) is not None
    tables.insert(build_chain(third), "a")
    assert tables.owner_bytes("a") <= MIN_BUDGET_BYTES
    assert all(third.with_work(w) in tables for w in range(5))
    assert first in tables and first.with_work(0) not in tables
    assert second.with_work(4) in tables  # newer than first's unread tables
    # Re-inserting a held table moves its bytes, never counts them twice.
    held, total = tables.owner_bytes("a"), tables.nbytes
    tables.insert([t for t in build_chain(first) if t.key == first], "a")
    assert (tables.owner_bytes("a"), tables.nbytes) == (held, total)
    tables.insert([t for t in build_chain(first) if t.key == first], "b")
    assert tables.owner_bytes("a") + tables.owner_bytes("b") == total
    assert tables.owner_bytes("b") > 0
    with pytest.raises(ValueError, match="share"):
        ForecastTables(MIN_BUDGET_BYTES, owner_share_bytes=MIN_BUDGET_BYTES + 1)
    with pytest.raises(ValueError, match="share"):
        ForecastTables(2 * MIN_BUDGET_BYTES, owner_share_bytes=MIN_BUDGET_BYTES - 1)


def test_inline_provisional_builds_are_shared_per_owner() -> None:
    masteries = {
        "a": (0.9, 0.91, 0.92, 0.93, 0.94),
        "b": (0.95, 0.96, 0.97, 0.98, 0.99),
    }

    def coarse_built(per_owner: int | None) -> dict[str, int]:
        tables = ForecastTables(4 * MIN_BUDGET_BYTES)
        deferred = DeferredForecaster(
            tables, inline_builds=4, inline_builds_per_owner=per_owner
        )
        deferred.start_batch()
        built: dict[str, int] = {}
        for owner in ("a", "b"):
            thresholds = [logit(m) for m in masteries[owner]]
            deferred.serve(owner)
            for threshold in thresholds:  # five distinct missing tables each
                deferred.forecast(DEFAULT_PARAMS, threshold, 0.0, 3)
            built[owner] = sum(
                1
                for t in thresholds
                if TableKey(DEFAULT_PARAMS, t, 3, HORIZON, PROVISIONAL_STEP) in tables
            )
            assert (tables.owner_bytes(owner) > 0) == (built[owner] > 0)
        return built

    assert coarse_built(None) == {"a": 4, "b": 0}  # the first owner takes all
    assert coarse_built(2) == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="inline_builds_per_owner"):
        DeferredForecaster(ForecastTables(), inline_builds=4, inline_builds_per_owner=5)
