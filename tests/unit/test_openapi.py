"""The served OpenAPI document's status-and-progress bodies are the models' own
schemas (schemas/status_and_progress.py), as /openapi.json serves them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import NoAuthentication
from schemas.status_and_progress import HistoryPage, StatusAndProgressPage
from tests.unit.test_api_operations import ExplodingStore

REF = "#/components/schemas/{model}"
LI_PAGE = "/learning-instances/{li_id}/metrics/status-and-progress"
REG_PAGE = "/registrations/{reg_id}/metrics/status-and-progress"


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    app = create_app(ExplodingStore(), authenticator=NoAuthentication())
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _model_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema and its definitions, by component name, as JSON
    carries them."""
    schema = model.model_json_schema(mode="serialization", ref_template=REF)
    defs = schema.pop("$defs", {})
    found: dict[str, Any] = orjson.loads(orjson.dumps(defs | {model.__name__: schema}))
    return found


def _response(doc: dict[str, Any], path: str, method: str) -> Any:
    content = doc["paths"][path][method]["responses"]["200"]["content"]
    return content["application/json"]["schema"]


@pytest.mark.parametrize("model", [StatusAndProgressPage, HistoryPage])
def test_served_components_are_the_models_schemas(
    served: dict[str, Any], model: type[BaseModel]
) -> None:
    expected = _model_schemas(model)
    # the row, its targets and topics all come along, not just the wrapper
    assert len(expected) >= 3
    components = served["components"]["schemas"]
    for name, schema in expected.items():
        assert components.get(name) == schema, name


@pytest.mark.parametrize(
    ("path", "method", "name"),
    [
        (LI_PAGE, "post", "StatusAndProgressPage"),
        (REG_PAGE, "post", "StatusAndProgressPage"),
        (REG_PAGE + "/history", "get", "HistoryPage"),
    ],
)
def test_the_endpoints_answer_with_the_models(
    served: dict[str, Any], path: str, method: str, name: str
) -> None:
    assert _response(served, path, method) == {"$ref": REF.format(model=name)}


def test_the_row_schema_holds_the_contracts_enum_and_ranges(
    served: dict[str, Any],
) -> None:
    # What the contract's field tables say, read from the served document.
    row = served["components"]["schemas"]["StatusAndProgress"]["properties"]
    assert set(row["status"]["enum"]) == {
        "complete",
        "complete_max_work",
        "in_progress",
        "struggling",
        "no_work",
    }
    assert (row["work_remaining"]["minimum"], row["work_remaining"]["maximum"]) == (
        -1,
        30,
    )
    assert (row["progress"]["minimum"], row["progress"]["maximum"]) == (0, 1)
    target = served["components"]["schemas"]["ObjectiveTarget"]["properties"]
    assert set(target["status"]["enum"]) == {
        "complete",
        "in_progress",
        "struggling",
        "no_work",
    }
    page = served["components"]["schemas"]["StatusAndProgressPage"]
    assert "next" in page["properties"] and "next" not in page["required"]
