"""``mastery dlq``: list rejected records and re-drive them after a fix.

The dead-letter topic holds one :class:`schemas.dead_letter.DeadLetter` per
rejection, keyed ``<source topic>/<partition>/<offset>``. Re-driving produces
the original key and bytes again to the source topic, then appends a marker
``{"redriven_at": ...}`` under the same key, so a re-driven record is not
listed (or re-driven) again. A record that fails again is dead-lettered anew,
under the key of its new offset. Re-driving attempts is safe: attempt ids make
them idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from infra.broker import BrokerProfile
from infra.producer import EventProducer
from infra.topic_names import TopicNames
from infra.topic_reader import read_topic
from schemas.dead_letter import DeadLetter

__all__ = ["DeadLetterView", "pending_dead_letters", "redrive"]


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """What the topic holds: pending rejections and how many were re-driven."""

    pending: list[DeadLetter]
    redriven: int
    duplicates: int


async def pending_dead_letters(
    bootstrap: str,
    topics: TopicNames,
    profile: BrokerProfile,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
) -> DeadLetterView:
    """Read the dead-letter topic whole; dedupe by key; drop re-driven ones.

    ``client_kwargs``: security arguments (:mod:`infra.kafka_security`).
    """
    entries: dict[str, DeadLetter] = {}
    done: set[str] = set()
    duplicates = 0
    async for record in read_topic(
        bootstrap, topics.dead_letter, profile, client_kwargs=client_kwargs
    ):
        key = (record.key or b"").decode(errors="replace")
        payload = orjson.loads(record.value or b"null")
        if isinstance(payload, dict) and "redriven_at" in payload:
            done.add(key)
            continue
        try:
            letter = DeadLetter.model_validate(payload)
        except ValidationError:
            continue
        if key in entries:
            duplicates += 1  # the same rejection seen twice (at-least-once)
        entries.setdefault(key, letter)
    pending = [letter for key, letter in entries.items() if key not in done]
    return DeadLetterView(pending=pending, redriven=len(done), duplicates=duplicates)


async def redrive(
    bootstrap: str,
    profile: BrokerProfile,
    topics: TopicNames,
    letters: list[DeadLetter],
    *,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Produce each letter's original record again, then mark it re-driven.

    A letter whose original was too large to carry whole (``truncated``) is
    skipped: only its prefix, size and digest are known.
    """
    async with EventProducer(
        bootstrap, profile, topics, client_kwargs=client_kwargs
    ) as producer:
        sent = 0
        for letter in letters:
            value = letter.value
            if value is None or letter.truncated:
                continue
            sent += 1
            await (await producer.send_raw(letter.source_topic, letter.key, value))
            marker = orjson.dumps({"redriven_at": datetime.now(UTC).isoformat()})
            await (
                await producer.send_raw(
                    topics.dead_letter, letter.dlq_key.encode(), marker
                )
            )
    return sent
