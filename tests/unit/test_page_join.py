"""The page's data array joined from ids and stored rows (api/store.py,
``_join``): the same bytes as the contract's items built one by one, and the
rows' size the page bound reads (api/render.py)."""

from __future__ import annotations

import orjson
import pytest

from api.store import _framing, _join, _openers


@pytest.mark.parametrize("learners", [0, 1, 3])
@pytest.mark.parametrize("goals", [0, 1, 2, 3])
def test_the_data_array_and_its_row_bytes(learners: int, goals: int) -> None:
    ids = [f"reg-{i}".encode() for i in range(learners)]
    templates = [orjson.dumps({"goal_id": f"g{j}", "t": True}) for j in range(goals)]
    rows: list[bytes | None] = [
        None if (i + j) % 2 else orjson.dumps({"goal_id": f"g{j}", "r": i})
        for i in range(learners)
        for j in range(goals)
    ]
    openers = _openers(ids)
    data, row_bytes = _join(openers, rows, templates, _framing(openers, goals))
    assert _join(openers, rows, templates) == (data, row_bytes)
    served = [templates[k % goals] if r is None else r for k, r in enumerate(rows)]
    expected = [
        {
            "registration_id": ids[i].decode(),
            "status_and_progress": [
                orjson.loads(served[i * goals + j]) for j in range(goals)
            ],
        }
        for i in range(learners)
    ]
    assert orjson.loads(b"[" + data + b"]") == expected
    assert row_bytes == sum(map(len, served))
