"""Property-based fuzzing of every operation in /openapi.json (schemathesis).

The app runs in-process (ASGI) over the real Redis and the real embedded
broker, called as a partner admin. Every response must be a documented status
with a documented body and headers; no 5xx, ever.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from api.openapi import openapi_document
from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from tests.integration.auth_world import bearer, build_app, seed_world

pytestmark = pytest.mark.integration

ADMIN = bearer("fuzz-admin", "p1", ("partner_admin", "ingest"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


OPERATIONS = sorted(
    (method.upper(), path)
    for path, ops in openapi_document()["paths"].items()
    for method in ops
)


@pytest.fixture(scope="module")
def api_schema(
    redis_server: EmbeddedRedis, kafka_server: EmbeddedKafka
) -> schemathesis.BaseSchema:
    """The document as the running app serves it, bound to that app."""
    seed_world(redis_server.url)
    app = build_app(redis_server.url, kafka_server.bootstrap_servers, "fuzz")
    return schemathesis.openapi.from_asgi("/openapi.json", app)


#: Ids that exist in the seeded world, so bodies are also fuzzed past the 404.
SEEDED = {
    "li_id": "li-a",
    "reg_id": "reg-a1",
    "goal_id": "goal-a",
    "module_id": "http://example.org/items/1",
}
RUNS = [
    *[(m, p, GenerationMode.POSITIVE, False) for m, p in OPERATIONS],
    *[(m, p, GenerationMode.NEGATIVE, False) for m, p in OPERATIONS if m != "GET"],
    *[(m, p, GenerationMode.POSITIVE, True) for m, p in OPERATIONS if "{" in p],
]


@pytest.mark.parametrize(
    ("method", "path", "mode", "seeded"),
    RUNS,
    ids=[
        f"{m} {p} {mode.value}{' seeded' if seeded else ''}"
        for m, p, mode, seeded in RUNS
    ],
)
def test_every_operation_conforms(
    api_schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    mode: GenerationMode,
    seeded: bool,
) -> None:
    operation = api_schema[path][method]
    fixed = (
        {k: v for k, v in SEEDED.items() if "{" + k + "}" in path} if seeded else None
    )

    @given(case=operation.as_strategy(mode, path_parameters=fixed))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=ADMIN, checks=CHECKS)

    fuzz()


def test_the_document_is_valid_openapi_and_covers_every_route(
    redis_server: EmbeddedRedis,
) -> None:
    from openapi_spec_validator import validate

    app = build_app(redis_server.url, None, "fuzz-doc")
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    validate(doc)
    documented = {
        (method.upper(), path) for path, ops in doc["paths"].items() for method in ops
    }
    routes = {
        (method, route.path.replace("{module_id:path}", "{module_id}"))
        for route in app.routes
        # Mounts (the static assets of /docs) are files, not operations.
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }
    assert documented == routes
