"""infra.logs: JSON and text lines, extra fields, redaction, rate limiting."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from infra.logs import (
    JsonFormatter,
    RateLimitingHandler,
    TextFormatter,
    configure_logging,
    redact,
)
from infra.settings import Settings

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJ4IiwicGFydG5lcl9pZCI6InAifQ."
    "c2lnbmF0dXJlLWJ5dGVz"
)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "mastery.test", logging.WARNING, "f.py", 1, msg, args, None
    )
    for name, value in extra.items():
        setattr(record, name, value)
    return record


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_line_has_the_standard_and_extra_fields() -> None:
    line = JsonFormatter().format(
        _record(
            "applied %d events",
            3,
            key="reg-1",
            partition=2,
            offset=41,
            registration="reg-1",
            outcome="applied",
        )
    )
    entry = orjson.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "mastery.test"
    assert entry["message"] == "applied 3 events"
    assert entry["timestamp"].endswith("+00:00")
    assert {k: entry[k] for k in ("key", "partition", "offset", "outcome")} == {
        "key": "reg-1",
        "partition": 2,
        "offset": 41,
        "outcome": "applied",
    }


def test_json_line_carries_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, "f.py", 1, "failed", (), __import__("sys").exc_info()
        )
    entry = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exc_info"]


def test_uvicorns_coloured_copy_is_not_a_field() -> None:
    entry = orjson.loads(
        JsonFormatter().format(_record("Started", color_message="\x1b[32mStarted"))
    )
    assert "color_message" not in entry


def test_text_line_is_readable_with_extras() -> None:
    line = TextFormatter().format(_record("batch done", partition=1, outcome="applied"))
    assert " WARNING mastery.test: batch done partition=1 outcome=applied" in line


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_secrets_never_reach_the_line(formatter: logging.Formatter) -> None:
    line = formatter.format(
        _record(
            "request with Authorization: Bearer %s to redis://u:hunter2@redis:6379/0",
            JWT,
            token=JWT,
            jwt_hs256_secret="s" * 40,
            sasl_password=SecretStr("pw-123"),
            header=f"Bearer {JWT}",
            registration="reg-9",
        )
    )
    for secret in (JWT, "s" * 40, "pw-123", "hunter2"):
        assert secret not in line
    assert "[redacted]" in line
    assert "reg-9" in line and "redis:6379/0" in line


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "partition 3 offset 17 of mastery.registration-events.v1 (key reg-1)"
    assert redact(text) == text


def _limited(limit: int = 3) -> tuple[RateLimitingHandler, _Collect, list[float]]:
    now = [0.0]
    target = _Collect()
    return (
        RateLimitingHandler(target, limit=limit, interval_s=60, clock=lambda: now[0]),
        target,
        now,
    )


def test_an_error_loop_is_cut_to_the_limit_then_one_summary() -> None:
    handler, target, now = _limited(limit=3)
    for i in range(2536):
        now[0] = i * 0.02  # 2,536 errors in ~51 s, as the issue measured
        handler.handle(_record("broker down: %s", f"attempt {i}"))
    assert len(target.records) == 3
    now[0] = 61.0
    handler.handle(_record("broker down: %s", "again"))
    messages = [r.getMessage() for r in target.records]
    assert messages[3] == "suppressed 2533 similar messages in 60 s: broker down: %s"
    assert target.records[3].levelno == logging.WARNING
    assert messages[4] == "broker down: again"  # a new window
    assert len(messages) == 5


def test_different_messages_have_their_own_budget() -> None:
    handler, target, _ = _limited(limit=2)
    for _ in range(5):
        handler.handle(_record("broker down"))
        handler.handle(_record("redis down"))
    assert [r.getMessage() for r in target.records] == ["broker down", "redis down"] * 2


def test_a_new_window_starts_between_sweeps() -> None:
    handler, target, now = _limited(limit=1)
    handler.handle(_record("a"))
    handler.handle(_record("a"))  # suppressed
    now[0] = 59.5
    handler.handle(_record("b"))  # sweeps now: "a" has 0.5 s left
    now[0] = 60.2  # "a" ended, but the next sweep is due at 60.5 only
    handler.handle(_record("a"))
    assert [r.getMessage() for r in target.records] == [
        "a",
        "b",
        "suppressed 1 similar messages in 60 s: a",
        "a",
    ]


def test_flush_reports_and_logging_goes_on() -> None:
    handler, target, now = _limited(limit=1)
    handler.handle(_record("x"))
    handler.handle(_record("x"))
    handler.flush()
    now[0] = 0.1
    handler.handle(_record("x"))  # a new window after the flush
    handler.handle(_record("x"))
    now[0] = 70.0
    handler.handle(_record("y"))
    assert [r.getMessage() for r in target.records] == [
        "x",
        "suppressed 1 similar messages in 60 s: x",
        "x",
        "suppressed 1 similar messages in 60 s: x",
        "y",
    ]


def test_close_reports_what_was_suppressed() -> None:
    handler, target, _ = _limited(limit=1)
    for _ in range(4):
        handler.handle(_record("same"))
    handler.close()
    assert [r.getMessage() for r in target.records] == [
        "same",
        "suppressed 3 similar messages in 60 s: same",
    ]


def test_nothing_suppressed_means_no_summary() -> None:
    handler, target, now = _limited(limit=5)
    handler.handle(_record("once"))
    now[0] = 100.0
    handler.handle(_record("twice"))
    handler.close()
    assert [r.getMessage() for r in target.records] == ["once", "twice"]


def test_configure_logging_json_from_settings(root_restored: None) -> None:
    out = io.StringIO()
    configure_logging(Settings(log_format="json", log_rate_limit=2), stream=out)
    configure_logging(Settings(log_format="json", log_rate_limit=2), stream=out)
    log = logging.getLogger("mastery.cfg")
    for _ in range(5):
        log.error("stuck", extra={"partition": 1})
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    # idempotent: one handler, so each line once; the limit applies
    assert [(e["message"], e["partition"]) for e in lines] == [("stuck", 1)] * 2
    assert (
        sum(isinstance(h, RateLimitingHandler) for h in logging.getLogger().handlers)
        == 1
    )


def test_text_is_the_default(root_restored: None) -> None:
    out = io.StringIO()
    configure_logging(Settings(), stream=out)
    logging.getLogger("mastery.cfg").warning("plain %s", "text")
    assert out.getvalue().rstrip().endswith("WARNING mastery.cfg: plain text")


def test_the_documented_json_line_is_what_we_write() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    example = orjson.loads(
        next(ln for ln in docs.splitlines() if ln.startswith('{"timestamp"'))
    )
    record = _record(
        example["message"],
        **{k: v for k, v in example.items() if k not in _DOCUMENTED_STANDARD},
    )
    record.name = example["logger"]
    written = orjson.loads(JsonFormatter().format(record))
    assert list(written) == list(example)
    assert {k: v for k, v in written.items() if k != "timestamp"} == {
        k: v for k, v in example.items() if k != "timestamp"
    }


_DOCUMENTED_STANDARD = {"timestamp", "level", "logger", "message"}
