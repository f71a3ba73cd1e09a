"""The Redis read model, shared by the worker (writer) and the API (reader).

``keys`` builds every key (hash-tagged by learning instance), ``scripts``
holds every Lua script (keys only through ``KEYS[]``), ``projection`` the
typed records a batch writes, ``writer`` writes them, ``generation`` resolves
the generation a reader reads, ``materialized`` marks a generation whole
(the API's ``/readyz`` requires it). docs/read-model.md describes the layout.
"""

from __future__ import annotations

from infra.read_model.generation import Generation
from infra.read_model.keys import CHANGES_MAXLEN, ReadModelKeys, hash_tag
from infra.read_model.materialized import mark_materialized
from infra.read_model.projection import (
    GoalRecord,
    LearningInstanceRecord,
    Projection,
    RegistrationRecord,
)
from infra.read_model.writer import RedisProjector

__all__ = [
    "CHANGES_MAXLEN",
    "Generation",
    "GoalRecord",
    "LearningInstanceRecord",
    "Projection",
    "ReadModelKeys",
    "RedisProjector",
    "RegistrationRecord",
    "hash_tag",
    "mark_materialized",
]
