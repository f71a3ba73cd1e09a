"""What a worker reports when the broker's log is shorter than it was.

Written by the worker (app/worker/broker_watch.py) under
:meth:`infra.read_model.keys.ReadModelKeys.broker_loss`, read by the API
(api/broker_loss.py: ``/readyz`` and ingest answer 503 while it exists) and
deleted by ``mastery broker-reset`` once the operator has dealt with the loss
(docs/operations.md, "The broker restarted empty").
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["RUNBOOK", "BrokerLoss", "LostPartition"]

#: Where the operator reads what to do.
RUNBOOK = 'docs/operations.md, "The broker restarted empty"'


class LostPartition(BaseModel):
    """A partition whose end offset fell below what a worker had seen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int = Field(ge=0)
    #: The highest end offset seen before (recorded in Redis).
    seen: int = Field(ge=0)
    #: The broker's end offset now (0: the partition or its topic is gone).
    end: int = Field(ge=0)

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] ended at {self.seen}, now {self.end}"


class BrokerLoss(BaseModel):
    """The broker lost records that the worker had already read or written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Which process found it, e.g. ``worker mastery-worker (pid 12)``.
    by: str
    at: datetime
    #: One sentence: what was found.
    reason: str
    lost: tuple[LostPartition, ...] = ()
    runbook: str = RUNBOOK

    @classmethod
    def stored(cls, raw: bytes | str) -> BrokerLoss:
        """The stored report; one that does not parse (edited by hand, another
        version) is still a report: the loss stands until cleared."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            return cls(
                by="unknown",
                at=datetime.fromtimestamp(0).astimezone(),
                reason=f"a broker loss is reported, but its record does not "
                f"parse ({exc.error_count()} errors)",
            )

    def describe(self) -> str:
        """The reason and the first lost partitions, for logs and /readyz."""
        shown = "; ".join(p.describe() for p in self.lost[:4])
        more = f" (+{len(self.lost) - 4} more)" if len(self.lost) > 4 else ""
        detail = f": {shown}{more}" if shown else ""
        return f"{self.reason}{detail}; see {self.runbook}"
