"""Request bodies of the status-and-progress endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import EntityId

__all__ = [
    "MAX_GOALS_PER_QUERY",
    "HistoryQuery",
    "LearningInstanceQuery",
    "RegistrationQuery",
]

#: Columns per request: bounds the work of one page (100 rows x 50 goals).
MAX_GOALS_PER_QUERY = 50


class RegistrationQuery(BaseModel):
    """Body of ``POST /registrations/{reg_id}/metrics/status-and-progress``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal_ids: Annotated[
        list[EntityId], Field(min_length=1, max_length=MAX_GOALS_PER_QUERY)
    ]

    @field_validator("goal_ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("goal_ids must not repeat")
        return value


class LearningInstanceQuery(RegistrationQuery):
    """Body of ``POST /learning-instances/{li_id}/metrics/status-and-progress``.

    Integers may be sent as numeric strings, as in the contract's sample
    (``"registrations_per_page": "2"``).
    """

    registration_offset: int = Field(default=0, ge=0, le=10_000_000)
    registrations_per_page: int = Field(default=100, ge=1, le=100)

    @field_validator("registration_offset", "registrations_per_page", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("Input should be a valid integer, not a boolean")
        return value


class HistoryQuery(BaseModel):
    """Query of ``GET /registrations/{reg_id}/metrics/status-and-progress/history``
    (docs/read-model.md, "History")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal_id: EntityId
    points_per_page: Annotated[int, Field(ge=1, le=100)] = 100
    point_offset: Annotated[int, Field(ge=0, le=10_000)] = 0
