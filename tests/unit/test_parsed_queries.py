"""Query bodies parsed once (api/_http.py, ParsedQueries): the same bytes
give the same frozen model; refused bodies are refused every time."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from api._http import ParsedQueries
from api.errors import BadRequest
from schemas.api import LearningInstanceQuery


def test_a_body_is_parsed_once_and_refusals_are_never_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = ParsedQueries(LearningInstanceQuery)
    body = b'{"goal_ids": ["g1"], "registrations_per_page": 5}'
    model, echoed = queries.parse(body)
    assert model.goal_ids == ["g1"] and model.registrations_per_page == 5
    assert echoed == b'{"goal_ids":["g1"],"registrations_per_page":5}'
    assert queries.parse(body)[0] is model  # kept
    for refused in (
        b'{"goal_ids": ["g1"], "goal_ids": ["g2"]}',  # a repeated key
        b'{"goal_ids": []}',  # invalid
        b"{",
    ):
        for _ in range(2):
            with pytest.raises(BadRequest):
                queries.parse(refused)
        assert refused not in queries._kept
    monkeypatch.setattr(ParsedQueries, "KEPT", 2)
    for n in range(3):
        queries.parse(b'{"goal_ids": ["g%d"]}' % n)
    assert len(queries._kept) == 2 and body not in queries._kept  # oldest left
    large = b'{"goal_ids": ["g1"]' + b" " * ParsedQueries.MAX_BODY + b"}"
    queries.parse(large)
    assert large not in queries._kept


def test_only_frozen_models_are_shared() -> None:
    class Loose(BaseModel):
        a: int

    with pytest.raises(TypeError, match="frozen"):
        ParsedQueries(Loose)
