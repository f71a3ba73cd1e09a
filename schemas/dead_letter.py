"""The record written to the dead-letter topic for every rejected input record."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = ["MAX_ORIGINAL_BYTES", "DeadLetter"]

#: The most of a rejected record's key or value a dead letter carries. A
#: larger original (the broker accepted it, the dead-letter topic might not:
#: base64 grows it by a third past the producer's 1 MiB request limit) is
#: carried as this long a prefix, with its size and SHA-256, and flagged
#: truncated: it can be inspected, not re-driven.
MAX_ORIGINAL_BYTES = 256 * 1024


class DeadLetter(BaseModel):
    """Why a record was rejected, where it came from, and its original bytes.

    The dead-letter record's key is ``"<source_topic>/<partition>/<offset>"``, so
    a record dead-lettered twice (at-least-once redelivery) is recognisable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    rejected_at: AwareDatetime
    #: Size and SHA-256 (hex) of the original value; set when it was truncated.
    value_size: int | None = None
    value_sha256: str | None = None
    #: True when ``key_b64``/``value_b64`` hold only a prefix of the original.
    truncated: bool = False

    @classmethod
    def of(
        cls,
        reason: str,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejected_at: datetime,
    ) -> DeadLetter:
        """The dead letter of a record, its original bounded (see
        :data:`MAX_ORIGINAL_BYTES`)."""
        limit = MAX_ORIGINAL_BYTES
        too_big = (key is not None and len(key) > limit) or (
            value is not None and len(value) > limit
        )
        return cls(
            reason=reason,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key_b64=cls.encode_bytes(None if key is None else key[:limit]),
            value_b64=cls.encode_bytes(None if value is None else value[:limit]),
            rejected_at=rejected_at,
            value_size=len(value) if too_big and value is not None else None,
            value_sha256=hashlib.sha256(value).hexdigest()
            if too_big and value is not None
            else None,
            truncated=too_big,
        )

    @property
    def dlq_key(self) -> str:
        return f"{self.source_topic}/{self.partition}/{self.offset}"

    @property
    def value(self) -> bytes | None:
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)

    @property
    def key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    @staticmethod
    def encode_bytes(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()
