"""The failure table (app/worker/failures.py): a domain bug dead-letters a few
records, then crashes the worker; a transient Redis state is retried, a
wrong command is not."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.worker.failures import DomainBug, InternalErrors, transient_redis_error
from app.worker.faust_corrections.exit_policy import EXIT_SOFTWARE
from processors import batch
from tests.unit.test_batch import attempt, created, records, run
from tests.unit.test_registration import make_catalog


def test_internal_errors_crash_past_the_limit_within_the_window() -> None:
    errors = InternalErrors(limit=10, window_s=60.0)
    errors.add(4, now=0.0)
    errors.add(6, now=30.0)  # 10 within the window: still dead letters
    with pytest.raises(DomainBug) as raised:
        errors.add(1, now=59.0)
    assert raised.value.exit_code == EXIT_SOFTWARE
    assert "11 records failed" in str(raised.value)


def test_internal_errors_outside_the_window_are_forgotten() -> None:
    errors = InternalErrors(limit=10, window_s=60.0)
    errors.add(10, now=0.0)
    errors.add(10, now=61.0)  # the first ten are over a minute old
    errors.add(0, now=62.0)
    with pytest.raises(DomainBug):
        errors.add(1, now=62.0)


def test_the_fold_counts_the_records_its_domain_code_raised_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(batch, "apply_attempt", broken)
    catalog = make_catalog()
    plan, rejected = run(
        records(created(), attempt(), attempt(), attempt()), {}, catalog
    )
    assert not rejected
    assert plan.internal_errors == 3
    assert [r.reason for r in plan.dead] == [
        "internal error: ZeroDivisionError('a bug')"
    ] * 3
    assert "r1" in plan.states  # the registration itself was applied


def _reply(text: str) -> BaseException:
    """The exception redis-py raises for this error reply."""
    from redis._parsers.base import BaseParser

    return BaseParser.parse_error(text)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RedisConnectionError("refused"), True),
        (RedisTimeoutError("timed out"), True),
        (OSError("reset"), True),
        (_reply("OOM command not allowed when used memory > 'maxmemory'."), True),
        (_reply("READONLY You can't write against a read only replica."), True),
        (_reply("LOADING Redis is loading the dataset in memory"), True),
        (_reply("CLUSTERDOWN The cluster is down"), True),
        (_reply("MISCONF Redis is configured to save RDB snapshots"), True),
        (_reply("BUSY Redis is busy running a script."), True),
        (_reply("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (_reply("ERR wrong number of arguments for 'mset' command"), False),
        (_reply("NOSCRIPT No matching script."), False),
        (ValueError("not Redis"), False),
    ],
)
def test_which_redis_failures_are_retried(
    error: BaseException, transient: bool
) -> None:
    assert transient_redis_error(error) is transient
