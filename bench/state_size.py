"""A registration state's size and costs as its learner's attempts grow.

Since every applied attempt id is remembered (processors/registration.py,
"Idempotency"), a state grows by 12 bytes per attempt. For one simulated
learner this prints, at each size: the encoded state (what a checkpoint
writes to the changelog and RocksDB), the time to apply one more attempt
(fingerprint lookup and the state's new string included), to encode it
(``to_bytes``) and to decode it (``from_bytes``): medians of ``--repeat``.

    .venv/bin/python -m bench.state_size [--sizes 100,1000,5000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

from app.devstack.workload import simulated
from processors.catalog import Catalog
from processors.registration import RegistrationState, apply_attempt, register

__all__ = ["main"]


def _median_us(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    w = simulated(
        learning_instances=1,
        learners_per_instance=1,
        attempts_per_learner=max(sizes) + 1,
        seed=11,
    )
    catalog = Catalog()
    for event in w.catalog:
        catalog.apply(event)
    learner = next(r for r in w.registrations if r.role == "learner")
    partner = catalog.for_learning_instance(learner.learning_instance_id)
    created = register(None, learner, partner)
    assert created.state is not None
    state: RegistrationState = created.state
    attempts = [a for a in w.attempts if a.registration_id == learner.registration_id]
    print(
        "attempts | state bytes | of which fingerprints | apply µs | "
        "to_bytes µs | from_bytes µs"
    )
    print("---: | ---: | ---: | ---: | ---: | ---:")
    done = 0
    for size in sizes:
        for a in attempts[done:size]:
            result = apply_attempt(state, a, partner)
            assert result.state is not None and result.outcome == "applied"
            state = result.state
        done = size
        data = state.to_bytes()
        following = attempts[size]
        apply_us = _median_us(
            functools.partial(apply_attempt, state, following, partner), args.repeat
        )
        encode_us = _median_us(state.to_bytes, args.repeat)
        decode_us = _median_us(
            functools.partial(RegistrationState.from_bytes, data), args.repeat
        )
        print(
            f"{size:,} | {len(data):,} | {len(state.seen):,} | {apply_us:.1f} | "
            f"{encode_us:.1f} | {decode_us:.1f}"
        )


if __name__ == "__main__":
    main()
