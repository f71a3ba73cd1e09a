"""The record written to the dead-letter topic for every rejected input record."""

from __future__ import annotations

import base64

from pydantic import AwareDatetime, BaseModel, ConfigDict

__all__ = ["DeadLetter"]


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
