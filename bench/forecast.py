"""Cost of the work-remaining forecast tables: build time and bytes of a whole
chain (w = 0..30) at the extremes of the parameter bounds and at the defaults,
the provisional coarse-grid chain, a lookup, and the event loop's latency
while the builder thread works.

    .venv/bin/python -m bench.forecast [--repeat 5] [--reference] [--out FILE]

``--reference`` also times the former pure-Python build (tests/unit/
forecast_reference.py) once per case: seconds each. ``--out`` replaces the
section "Work-remaining forecast tables" of that file (appended when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from app.worker.forecast_builder import ForecastBuilder
from bench.pipeline import write_section
from processors.forecast import (
    DEFAULT_BUDGET_BYTES,
    HORIZON,
    ForecastTables,
    TableKey,
    build_chain,
    completion_cdf,
    expected_items,
)
from processors.forecaster import PROVISIONAL_STEP, DeferredForecaster
from processors.mastery import DEFAULT_PARAMS, Params, logit
from schemas.bkt_params import GUESS, LEARN, MARGIN, SLIP

__all__ = ["CASES", "SECTION", "main"]

SECTION = "## Work-remaining forecast tables"

_FLOOR = Params(prior=0.5, learn=LEARN.low, guess=GUESS.low, slip=SLIP.low)
#: (label, params, min_predicted_mastery): the case of issue 10, the worst case
#: within the bounds (every table longest: learn, guess and slip at their
#: floor, the largest threshold below 1), the opposite corner, the defaults.
CASES: list[tuple[str, Params, float]] = [
    (f"prior 0.5, learn = guess = slip = {MARGIN:g}, m = 0.999999", _FLOOR, 0.999999),
    (
        f"prior 0.5, learn = guess = slip = {MARGIN:g}, m = 1 - 2^-53",
        _FLOOR,
        1 - 2**-53,
    ),
    (
        "prior 0.5, learn 0.9999, guess = slip = 0.4999, m = 0.999999",
        Params(prior=0.5, learn=LEARN.high, guess=GUESS.high, slip=SLIP.high),
        0.999999,
    ),
    ("DEFAULT_PARAMS, m = 0.95", DEFAULT_PARAMS, 0.95),
]


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _chain(
    params: Params, mastery: float, step: float, repeat: int
) -> dict[str, float]:
    key = TableKey(params, logit(mastery), HORIZON, step=step)
    ms = _median_ms(lambda: build_chain(key), repeat)
    tracemalloc.start()
    chain = build_chain(key)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "ms": ms,
        "held_mb": sum(t.nbytes for t in chain) / 1e6,
        "peak_mb": peak / 1e6,
        "rows": max(len(t.rows) for t in chain),
    }


def _reference(params: Params, mastery: float) -> str:
    """Seconds, then MB held (a second run under tracemalloc), of the former
    pure-Python chain."""
    from tests.unit import forecast_reference as reference

    started = time.perf_counter()
    reference.completion_cdf(params, logit(mastery), 0.0, HORIZON)
    seconds = time.perf_counter() - started
    reference._get_table.cache_clear()
    tracemalloc.start()
    reference.completion_cdf(params, logit(mastery), 0.0, HORIZON)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    reference._get_table.cache_clear()
    return f"{seconds:.2f} s, {held / 1e6:.0f} MB"


def _lookup_us(params: Params, mastery: float) -> dict[str, float]:
    tables = ForecastTables(DEFAULT_BUDGET_BYTES)
    threshold = logit(mastery)
    rng = random.Random(1)
    points = [(rng.uniform(-6.0, threshold), rng.randint(0, 5)) for _ in range(2000)]
    for work in range(6):
        tables.build(TableKey(params, threshold, work))
    started = time.perf_counter()
    for x, work in points:
        tables.lookup(params, threshold, x, work)
    held = (time.perf_counter() - started) / len(points) * 1e6
    empty = ForecastTables(DEFAULT_BUDGET_BYTES)
    started = time.perf_counter()
    for x, work in points:
        empty.lookup(params, threshold, x, work)
    miss = (time.perf_counter() - started) / len(points) * 1e6
    # Provisional path of a miss, coarse tables already built (the common case).
    deferred = DeferredForecaster(empty)
    for x, work in points:
        deferred.forecast(params, threshold, x, work)
    deferred.take_pending()
    started = time.perf_counter()
    for x, work in points:
        deferred.forecast(params, threshold, x, work)
    provisional = (time.perf_counter() - started) / len(points) * 1e6
    return {"held": held, "miss": miss, "provisional": provisional}


def _provisional_gap(states: int) -> dict[str, float]:
    """|E exact - E provisional| over random states, parameters within the bounds."""
    rng = random.Random(3)
    gaps: list[float] = []
    rounded = 0
    for _ in range(states // 10):
        params = Params(
            prior=rng.uniform(0.01, 0.99),
            learn=rng.uniform(LEARN.low, 0.5),
            guess=rng.uniform(GUESS.low, 0.45),
            slip=rng.uniform(SLIP.low, 0.45),
        )
        threshold = logit(rng.choice([0.8, 0.95, 0.99, 0.999]))
        work = rng.choice([0, 0, 1, 2, 5, 10])
        for _ in range(10):
            x = rng.uniform(-10.0, threshold + 3.0)
            exact = expected_items(completion_cdf(params, threshold, x, work))
            coarse = expected_items(
                completion_cdf(params, threshold, x, work, step=PROVISIONAL_STEP)
            )
            gaps.append(abs(exact - coarse))
            rounded += math.floor(exact + 0.5) != math.floor(coarse + 0.5)
    return {
        "states": len(gaps),
        "mean": statistics.mean(gaps),
        "max": max(gaps),
        "rounded": rounded / len(gaps),
    }


async def _loop_lag(keys: list[TableKey], threaded: bool) -> dict[str, float]:
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    lags.clear()
    started = time.perf_counter()
    if threaded:
        builder = ForecastBuilder(ForecastTables(DEFAULT_BUDGET_BYTES), lambda k: None)
        builder.request(keys)
        while builder.queued:
            await builder.build_next()
    else:
        tables = ForecastTables(DEFAULT_BUDGET_BYTES)
        for key in keys:
            tables.build(key)
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    tick.cancel()
    lags.sort()
    return {
        "s": elapsed,
        "ticks": len(lags),
        "p99_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else elapsed * 1000,
        "max_ms": lags[-1] * 1000 if lags else elapsed * 1000,
    }


def run(args: argparse.Namespace) -> str:
    """Measure and render the markdown section."""
    lines = [
        SECTION,
        "",
        "`make bench-forecast` (`python -m bench.forecast`): one process, no "
        "services. Build = `build_chain` of a whole chain (w = 0..30) from "
        f"nothing, median of {args.repeat}; held = bytes the tables occupy in "
        "`ForecastTables` (what `MASTERY_FORECAST_CACHE_MB` bounds); peak = "
        "the build's transient numpy memory (tracemalloc).",
        f"One run on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}, load average "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the start "
        "(shared machine).",
        "",
        "| case | grid | build | held | peak | longest table |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference: dict[str, str] = {}
    for label, params, mastery in CASES:
        for step in (0.005, PROVISIONAL_STEP):
            r = _chain(params, mastery, step, args.repeat)
            lines.append(
                f"| {label} | {step:g} | {r['ms']:.1f} ms | {r['held_mb']:.1f} MB "
                f"| {r['peak_mb']:.1f} MB | {r['rows']:,.0f} rows |"
            )
        if args.reference:
            reference[label] = _reference(params, mastery)
    if reference:
        lines += [
            "",
            "The former pure-Python build of the same chains (one run each, "
            "time and memory held): "
            + "; ".join(f"{k}: {v}" for k, v in reference.items())
            + ".",
        ]
    _, worst_params, worst_m = CASES[0]
    lk = _lookup_us(worst_params, worst_m)
    ld = _lookup_us(DEFAULT_PARAMS, 0.95)
    keys = [TableKey(worst_params, logit(m), HORIZON) for m in (0.999999, 0.99999)]
    keys += [TableKey(DEFAULT_PARAMS, logit(m), HORIZON) for m in (0.9, 0.95)]
    gap = _provisional_gap(args.states)
    inline = asyncio.run(_loop_lag(keys, threaded=False))
    threaded = asyncio.run(_loop_lag(keys, threaded=True))
    lines += [
        "",
        "| lookup (2,000 random states, w = 0..5) | worst case | defaults |",
        "| --- | ---: | ---: |",
        f"| `ForecastTables.lookup`, table held | {lk['held']:.1f} µs "
        f"| {ld['held']:.1f} µs |",
        f"| `lookup` of a missing table (None, key recorded) | {lk['miss']:.1f} µs "
        f"| {ld['miss']:.1f} µs |",
        f"| `DeferredForecaster.forecast` on a miss (coarse table held) "
        f"| {lk['provisional']:.1f} µs | {ld['provisional']:.1f} µs |",
        "",
        f"Provisional rows (grid {PROVISIONAL_STEP:g}) against exact ones, "
        f"{gap['states']:,.0f} random states (parameters within the bounds, "
        "m in {0.8, 0.95, 0.99, 0.999}, w in 0..10): |E[min(T,30)] exact - "
        f"provisional| mean {gap['mean']:.3f} items, max {gap['max']:.2f}; "
        f"rounded work remaining differs in {gap['rounded']:.1%}.",
        "",
        "Event loop while 4 whole chains build (2 worst-case, 2 default; a "
        "task measures how late a 1 ms sleep wakes):",
        "",
        "| builds | took | loop ticks | lag p99 | lag max |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| inline on the loop | {inline['s'] * 1000:.0f} ms | {inline['ticks']:.0f} "
        f"| {inline['p99_ms']:.1f} ms | {inline['max_ms']:.1f} ms |",
        f"| `ForecastBuilder` (thread) | {threaded['s'] * 1000:.0f} ms "
        f"| {threaded['ticks']:.0f} | {threaded['p99_ms']:.1f} ms "
        f"| {threaded['max_ms']:.1f} ms |",
        "",
        "The thread does not make builds cheaper (numpy releases the GIL for its "
        "array loops; the box has 2 shared cores); it keeps the loop serving "
        "while they run. The worker answers a missing table with a provisional "
        "row at the lookup cost above, and a key waits for at most one build "
        "per other owner ahead of it (docs/analytics.md, section 4).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--reference", action="store_true", help="also time the pure-Python build"
    )
    parser.add_argument(
        "--states", type=int, default=1000, help="states for the provisional gap"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    section = run(args)
    print(section)
    if args.out is not None:
        write_section(args.out, SECTION, section)


if __name__ == "__main__":
    main()
