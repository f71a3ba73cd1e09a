"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request and response bodies are the pydantic models' own JSON Schemas (so the
document cannot drift from validation, nor the status-and-progress bodies from
schemas/status_and_progress.py); OpenAPI 3.1 speaks their dialect, JSON Schema
2020-12, so only their ``$ref``s are pointed at ``components``. What is written
here: the paths, status codes and headers, next to each other where a reviewer
can check them, and the bodies no model validates (the error envelope, the
batch, xAPI and Caliper wrappers, the dashboard's lookup, the probes').
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.api import MAX_GOALS_PER_QUERY, LearningInstanceQuery, RegistrationQuery
from schemas.ingest import (
    MAX_BATCH_EVENTS,
    Accepted,
    BatchGradedEvent,
    BatchResult,
    CreateLearningInstance,
    CreateRegistration,
    DefineGoal,
    GradedEvent,
    TagModule,
)
from schemas.status_and_progress import HistoryPage, StatusAndProgressPage
from schemas.webhooks import (
    CreateWebhook,
    DeliveryList,
    RedeliveryQueued,
    Webhook,
    WebhookCreated,
    WebhookList,
)

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_ENTITY_ID = {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,128}$"}
_REF_ID = {"type": "string", "pattern": r"^\S{1,512}$"}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

_XAPI = {
    "description": "one xAPI 1.0.3 statement or an array of them; statements "
    "that cannot be mapped are rejected one by one in the 207 results",
    "oneOf": [
        {"type": "object"},
        {"type": "array", "items": {"type": "object"}, "maxItems": MAX_BATCH_EVENTS},
    ],
}
_CALIPER = {
    "description": "an IMS Caliper 1.2 envelope; data items that are not "
    "GradeEvent/AssessmentItemEvent attempts are rejected one by one",
    "type": "object",
    "required": ["dataVersion", "data"],
    "properties": {
        "sensor": {"type": "string"},
        "sendTime": {"type": "string"},
        "dataVersion": {"const": "http://purl.imsglobal.org/ctx/caliper/v1p2"},
        "data": {
            "type": "array",
            "items": {"type": "object"},
            "maxItems": MAX_BATCH_EVENTS,
        },
    },
}
_BATCH = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "events": {
            "type": "array",
            "maxItems": MAX_BATCH_EVENTS,
            "description": "graded events; invalid ones are rejected one by one "
            "in the 207 results",
            "items": {"$ref": "#/components/schemas/BatchGradedEvent"},
        }
    },
}

_DESCRIPTIONS = {
    400: "invalid path id or body; the message names the field",
    401: "missing, malformed, expired or wrongly signed bearer token",
    403: "the token lacks the role this endpoint needs (reveals no data)",
    404: "unknown id, or an id of another partner (indistinguishable)",
    409: "an id already in use, or an instructor's registration (for an "
    "attempt, or for its status and progress: only learners have rows), or "
    "the partner's webhooks at their limit",
    413: "body over the size limit, or more than 500 events",
    415: "the body was not sent with Content-Type: application/json",
    429: "this partner's share of the server's requests in progress is in "
    "use, or its redelivery requests waiting are at their limit (details.scope "
    "partner); retry after Retry-After seconds",
    503: "Redis or the broker is unavailable; retry after Retry-After seconds",
}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": _REF.format(model="Error")}}
        },
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}
        }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"required": True, "schema": {"type": "string"}}
        }
    return response


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": _REF.format(model=name)}


def _operation(
    summary: str,
    *,
    body: dict[str, Any] | None,
    ok: tuple[int, dict[str, Any], str],
    errors: tuple[int, ...],
    params: tuple[tuple[str, dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    status, schema, description = ok
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {str(status): _json(schema, description)}
        | {str(code): _error(code) for code in errors},
    }
    if params:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": schema_}
            for name, schema_ in params
        ]
    if body is not None:
        op["responses"]["415"] = _error(415)
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return op


def _history_operation(
    reg_param: tuple[tuple[str, dict[str, Any]], ...], errors: tuple[int, ...]
) -> dict[str, Any]:
    """``GET …/history``: a registration's timeline on one goal, paged."""
    op = _operation(
        "A registration's timeline on one goal: a point at each status change "
        "and at most one per interval of the learner's time (access as for "
        "the POST endpoint; docs/read-model.md, 'History')",
        body=None,
        ok=(200, _ref(HistoryPage), "the points, oldest first"),
        errors=(*errors, 409),
        params=reg_param,
    )
    op["parameters"] += [
        {"name": "goal_id", "in": "query", "required": True, "schema": _ENTITY_ID},
        {
            "name": "points_per_page",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {
            "name": "point_offset",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 10_000},
        },
    ]
    return op


def _live_paths(
    paths: dict[str, Any],
    li_param: tuple[tuple[str, dict[str, Any]], ...],
    reg_param: tuple[tuple[str, dict[str, Any]], ...],
) -> dict[str, Any]:
    """The dashboard's endpoints (docs/dashboard.md); also adds ETag and 304
    to the two POST endpoints in ``paths``."""
    etag = {"ETag": {"required": True, "schema": {"type": "string"}}}
    for path in (
        "/learning-instances/{li_id}/metrics/status-and-progress",
        "/registrations/{reg_id}/metrics/status-and-progress",
    ):
        post = paths[path]["post"]
        post["responses"]["200"]["headers"] = etag
        post["responses"]["304"] = {
            "description": "If-None-Match lists the page's current ETag",
            "headers": etag,
        }
        post["parameters"].append(
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
        )
    sse = {
        "description": "text/event-stream: `snapshot` (the POST endpoint's body, "
        "all learners), then `row` per changed row; ids for Last-Event-ID",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    stream_params = [
        {
            "name": "goal_ids",
            "in": "query",
            "required": True,
            "description": "comma-separated goal ids (or the parameter repeated)",
            "schema": {"type": "string"},
        },
        {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "the id of the last event received: resume after it",
            "schema": {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"},
        },
    ]
    too_many = {
        "description": "too many open streams for this token or this server",
        "headers": {"Retry-After": {"required": True, "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": _ref("Error")}},
    }

    def stream(summary: str, params: Any, more: tuple[int, ...] = ()) -> dict[str, Any]:
        op = _operation(
            summary,
            body=None,
            ok=(200, {}, ""),
            errors=(400, 401, 403, 404, *more, 503),
            params=params,
        )
        op["responses"]["200"] = sse
        op["responses"]["429"] = too_many
        op["parameters"] += stream_params
        return {"get": op}

    view = {
        "type": "object",
        "required": ["learning_instance_id", "view", "registration_id", "goal_ids"],
        "properties": {
            "learning_instance_id": {"type": "string"},
            "view": {"enum": ["class", "learner"]},
            "registration_id": {"type": ["string", "null"]},
            "goal_ids": {"type": "array", "items": {"type": "string"}},
        },
    }
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/learning-instances/{li_id}/metrics/status-and-progress/stream": stream(
            "Live status and progress of a learning instance (Server-Sent "
            "Events; access as for the POST endpoint)",
            li_param,
        ),
        "/registrations/{reg_id}/metrics/status-and-progress/stream": stream(
            "Live status and progress of one registration (Server-Sent Events)",
            reg_param,
            (409,),
        ),
        "/learning-instances/{li_id}/goals": {
            "get": _operation(
                "The learning instance's goals, and whether the caller sees the "
                "class or only their own registration (the dashboard's lookup)",
                body=None,
                ok=(200, view, "the goals and the caller's view"),
                errors=(400, 401, 403, 404, 503),
                params=li_param,
            )
        },
        "/dashboard": {
            "get": {
                "summary": "The dashboard page (redirects to /dashboard/index.html)",
                "security": [],
                "responses": {
                    "308": {"description": "to dashboard/index.html"},
                    "200": {"description": "the page", "content": html},
                },
            }
        },
        "/dashboard/{file}": {
            "get": {
                "summary": "The dashboard's files: index.html, dashboard.js, "
                "dashboard.css",
                "security": [],
                "parameters": [
                    {
                        "name": "file",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": html
                        | {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "404": _error(404),
                },
            }
        },
    }


def _webhook_paths() -> dict[str, Any]:
    """The webhook subscription endpoints (partner admin; docs/webhooks.md)."""
    webhook = (("webhook_id", _ENTITY_ID),)
    errors = (400, 401, 403, 404, 429, 503)
    create = _operation(
        "Subscribe a URL to this partner's status changes (partner admin); "
        "the answer shows the signing secret, the only time it is shown",
        body=_ref(CreateWebhook),
        ok=(201, _ref(WebhookCreated), "the subscription, with its secret"),
        errors=(400, 401, 403, 409, 413, 429, 503),
    )
    create["responses"]["201"]["headers"] = {
        "Location": {"required": True, "schema": {"type": "string"}}
    }
    remove = _operation(
        "Delete a subscription and its recorded attempts (partner admin)",
        body=None,
        ok=(204, {}, ""),
        errors=errors,
        params=webhook,
    )
    remove["responses"]["204"] = {"description": "deleted"}
    return {
        "/webhooks": {
            "post": create,
            "get": _operation(
                "This partner's webhook subscriptions (partner admin)",
                body=None,
                ok=(200, _ref(WebhookList), "the subscriptions, oldest first"),
                errors=(401, 403, 429, 503),
            ),
        },
        "/webhooks/{webhook_id}": {
            "get": _operation(
                "One subscription, without its secret (partner admin)",
                body=None,
                ok=(200, _ref(Webhook), "the subscription"),
                errors=errors,
                params=webhook,
            ),
            "delete": remove,
        },
        "/webhooks/{webhook_id}/deliveries": {
            "get": _operation(
                "The subscription's recent delivery attempts, newest first "
                "(partner admin)",
                body=None,
                ok=(200, _ref(DeliveryList), "the attempts the notifier recorded"),
                errors=errors,
                params=webhook,
            )
        },
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": {
            "post": _operation(
                "Send a delivery again, with the same webhook-id (partner admin)",
                body=None,
                ok=(202, _ref(RedeliveryQueued), "queued for the notifier"),
                errors=errors,
                params=(*webhook, ("delivery_id", _ENTITY_ID)),
            )
        },
    }


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # The contract's sample sends registrations_per_page as a numeric string.
    props = schema.get("properties", {})
    for name in ("registration_offset", "registrations_per_page"):
        if name in props:
            number = dict(props[name])
            number.pop("title", None)
            number["type"] = "integer"
            props[name] = {
                "anyOf": [number, {"type": "string", "pattern": "^[0-9]{1,8}$"}],
                "description": "an integer, or a string of digits",
            }
    return schema


@cache
def openapi_document() -> dict[str, Any]:
    """The document (built once; the models do not change at run time)."""
    _, defs = models_json_schema(
        [
            (LearningInstanceQuery, "validation"),
            (RegistrationQuery, "validation"),
            (CreateLearningInstance, "validation"),
            (CreateRegistration, "validation"),
            (DefineGoal, "validation"),
            (TagModule, "validation"),
            (GradedEvent, "validation"),
            (BatchGradedEvent, "validation"),
            (Accepted, "serialization"),
            (BatchResult, "serialization"),
            (CreateWebhook, "validation"),
            (Webhook, "serialization"),
            (WebhookCreated, "serialization"),
            (WebhookList, "serialization"),
            (DeliveryList, "serialization"),
            (RedeliveryQueued, "serialization"),
            (StatusAndProgressPage, "serialization"),
            (HistoryPage, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = dict(defs["$defs"])
    schemas["LearningInstanceQuery"] = _query_schema(schemas["LearningInstanceQuery"])
    for query in ("LearningInstanceQuery", "RegistrationQuery"):
        schemas[query]["properties"]["goal_ids"]["uniqueItems"] = True
    schemas |= {
        "Error": _ERROR,
        "BatchEvents": _BATCH,
        "XapiStatements": _XAPI,
        "CaliperEnvelope": _CALIPER,
    }
    read = (400, 401, 403, 404, 413, 429, 503)
    page = (200, _ref("StatusAndProgressPage"), "a page of status and progress")
    accepted = (202, _ref(Accepted), "acknowledged by the broker")
    multi = (207, _ref(BatchResult), "one result per item, in request order")
    admin = (400, 401, 403, 404, 409, 413, 429, 503)
    batch = (400, 401, 403, 413, 429, 503)
    li_param = (("li_id", _ENTITY_ID),)
    reg_param = (("reg_id", _ENTITY_ID),)
    paths: dict[str, Any] = {
        "/learning-instances/{li_id}/metrics/status-and-progress": {
            "post": _operation(
                "Status and progress of a learning instance's registrations "
                "(partner admin, or an instructor of the learning instance)",
                body=_ref(LearningInstanceQuery),
                ok=page,
                errors=read,
                params=li_param,
            )
        },
        "/registrations/{reg_id}/metrics/status-and-progress": {
            "post": _operation(
                "Status and progress of one registration (partner admin, an "
                "instructor of its learning instance, or its learner)",
                body=_ref(RegistrationQuery),
                ok=page,
                errors=(*read, 409),
                params=reg_param,
            )
        },
        "/registrations/{reg_id}/metrics/status-and-progress/history": {
            "get": _history_operation(reg_param, read)
        },
        "/learning-instances": {
            "post": _operation(
                "Create a learning instance of the caller's partner (partner admin)",
                body=_ref(CreateLearningInstance),
                ok=accepted,
                errors=(400, 401, 403, 409, 413, 429, 503),
            )
        },
        "/registrations": {
            "post": _operation(
                "Register a learner or an instructor (partner admin)",
                body=_ref(CreateRegistration),
                ok=accepted,
                errors=admin,
            )
        },
        "/goals/{goal_id}": {
            "put": _operation(
                "Define or redefine a scoped goal (partner admin)",
                body=_ref(DefineGoal),
                ok=accepted,
                errors=admin,
                params=(("goal_id", _ENTITY_ID),),
            )
        },
        "/modules/{module_id}": {
            "put": _operation(
                "Tag a module with learning objectives and BKT parameters "
                "(partner admin)",
                body=_ref(TagModule),
                ok=accepted,
                errors=(400, 401, 403, 404, 413, 429, 503),
                params=(("module_id", _REF_ID),),
            )
        },
        "/registrations/{reg_id}/graded-events": {
            "post": _operation(
                "Record one graded attempt (partner admin or ingest)",
                body=_ref(GradedEvent),
                ok=accepted,
                errors=admin,
                params=reg_param,
            )
        },
        "/batch-events": {
            "post": _operation(
                f"Up to {MAX_BATCH_EVENTS} graded attempts (partner admin or ingest)",
                body=_ref("BatchEvents"),
                ok=multi,
                errors=batch,
            )
        },
        "/xapi/statements": {
            "post": _operation(
                "xAPI 1.0.3 statements as graded attempts (partner admin or ingest)",
                body=_ref("XapiStatements"),
                ok=multi,
                errors=batch,
            )
        },
        "/caliper/events": {
            "post": _operation(
                "IMS Caliper 1.2 GradeEvent/AssessmentItemEvent envelopes as "
                "graded attempts (partner admin or ingest)",
                body=_ref("CaliperEnvelope"),
                ok=multi,
                errors=batch,
            )
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: 200 while the process serves (dependencies "
                "are /readyz's)",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "alive",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: Redis answers PING, the read model is "
                "materialized, the broker's metadata can be fetched (when ingest "
                "is on); 503 names the failing dependencies in details.failing",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "checks"],
                            "properties": {
                                "status": {"const": "ready"},
                                "checks": {
                                    "type": "object",
                                    "additionalProperties": {"const": "ok"},
                                },
                            },
                        },
                        "every dependency is available",
                    ),
                    "503": _error(503),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this API process",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/docs": {
            "get": {
                "summary": "Interactive documentation of this document (Swagger "
                "UI, served from this process: no CDN)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "an HTML page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    paths |= _live_paths(paths, li_param, reg_param)
    paths |= _webhook_paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mastery-stream",
            "version": "1",
            "description": "Status and progress analytics (contract: "
            "status-and-progress-api.txt), ingest and admin endpoints. "
            f"At most {MAX_GOALS_PER_QUERY} goals per query. Access rules: "
            "docs/auth.md; mappings: docs/ingest.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }
