"""The gateway's OpenAPI document (``GET /openapi.json``), complete enough to fuzz from.

FastAPI describes what it parses itself. The gateway authenticates before it reads a body (so a
request without a key is a 401, never a 400 that leaks the schema), so the request bodies, the
streamed answers, the bearer key and the errors every ``/v1`` route may answer are added here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from producers.gateway.appeals import AppealRequest
from producers.gateway.conversations import CreateConversation
from producers.gateway.moderations import ModerationRequest, ModerationResponse
from producers.gateway.protocol import ChatCompletion, ChatCompletionRequest, ErrorResponse
from producers.gateway.responses.protocol import ResponseCreateRequest, ResponseObject

SECURITY_SCHEME = "BearerAuth"
_REF = "#/components/schemas/{model}"

#: (method, path) → the JSON body the route reads.
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/chat/completions"): ChatCompletionRequest,
    ("post", "/v1/responses"): ResponseCreateRequest,
    ("post", "/v1/moderations"): ModerationRequest,
    ("post", "/v1/conversations"): CreateConversation,
    ("post", "/v1/appeals"): AppealRequest,
}


def examples(model: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A request of each body that the gateway serving ``model`` answers (docs, and where a
    fuzzer starts from valid requests)."""
    hello = [{"role": "user", "content": "Say hello in French."}]
    return {
        ("post", "/v1/chat/completions"): {"model": model, "messages": hello, "max_tokens": 8},
        ("post", "/v1/responses"): {
            "model": model,
            "input": "Say hello in French.",
            "max_output_tokens": 8,
        },
        ("post", "/v1/moderations"): {"model": "omni-moderation-latest", "input": "Hello!"},
        ("post", "/v1/conversations"): {"title": "French lessons"},
        ("post", "/v1/appeals"): {"id": "chatcmpl-0f1e2d3c", "comment": "I asked about safety."},
    }


#: (method, path) → the JSON object of a 200 (None: events only); each of these may stream
#: Server-Sent Events instead.
STREAMS: dict[tuple[str, str], type[BaseModel] | None] = {
    ("post", "/v1/chat/completions"): ChatCompletion,
    ("post", "/v1/responses"): ResponseObject,
    ("get", "/v1/responses/{response_id}"): ResponseObject,
    ("get", "/v1/chat/completions/{completion_id}/stream"): None,
}

#: (method, path) → a 200 FastAPI cannot see (the route returns a Response itself).
RESULTS: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/moderations"): ModerationResponse,
}

#: (method, path) of a create → the operations its answer's ``id`` feeds (OpenAPI links).
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {
    ("post", "/v1/responses"): {
        "GetResponse": ("get", "/v1/responses/{response_id}", "response_id"),
        "CancelResponse": ("post", "/v1/responses/{response_id}/cancel", "response_id"),
        "InputItems": ("get", "/v1/responses/{response_id}/input_items", "response_id"),
        "DeleteResponse": ("delete", "/v1/responses/{response_id}", "response_id"),
    },
    ("post", "/v1/conversations"): {
        "GetConversation": ("get", "/v1/conversations/{conversation_id}", "conversation_id"),
        "DeleteConversation": ("delete", "/v1/conversations/{conversation_id}", "conversation_id"),
    },
    ("post", "/v1/chat/completions"): {
        "ResumeStream": ("get", "/v1/chat/completions/{completion_id}/stream", "completion_id"),
    },
}


def _links(key: tuple[str, str]) -> dict[str, Any]:
    return {
        name: {
            "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
            "parameters": {parameter: "$response.body#/id"},
        }
        for name, (method, path, parameter) in LINKS.get(key, {}).items()
    }


#: What any authenticated route may answer besides its success (producers.gateway.errors).
ERRORS: dict[str, str] = {
    "400": "A parameter is wrong; `error.param` names it.",
    "401": "No API key, or one that is unknown, revoked or expired.",
    "404": "Unknown or another user's object, or a model nobody serves.",
    "413": "The body is over CHATBUS_GATEWAY_MAX_BODY_BYTES.",
    "429": "Over the key's requests or tokens per minute (see Retry-After).",
    "503": "Kafka, Redis or MongoDB cannot be reached: retry later.",
    "504": "No worker answered in time: retry later.",
}
_BODY_ERRORS = ("413",)


def _model_schemas(
    models: list[type[BaseModel]],
) -> tuple[dict[type[BaseModel], Any], dict[str, Any]]:
    refs, top = models_json_schema(
        [(m, "validation" if m in BODIES.values() else "serialization") for m in models],
        ref_template=_REF,
    )
    by_model: dict[type[BaseModel], Any] = {}
    for (model, _mode), ref in refs.items():
        if isinstance(model, type) and issubclass(model, BaseModel):
            by_model[model] = ref
    return by_model, top.get("$defs", {})


#: One Server-Sent Event: ``id`` is its number (resume with ``Last-Event-ID``), ``data`` a JSON
#: object, or ``[DONE]`` at the end of a chat completion.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string"},
    },
}


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def gateway_openapi(app: FastAPI, model: str) -> dict[str, Any]:
    """The document of ``app``'s routes with bodies (examples for ``model``), streams, the
    bearer key and errors."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    wanted: set[type[BaseModel]] = {*BODIES.values(), *RESULTS.values(), ErrorResponse}
    wanted |= {m for m in STREAMS.values() if m is not None}
    models = sorted(wanted, key=lambda m: m.__name__)
    refs, defs = _model_schemas(models)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in defs.items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}}
    error = _json(refs[ErrorResponse])
    valid = examples(model)
    for path, item in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            key = (method, path)
            operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # validation errors are 400s (app._on_validation_error)
            if key in BODIES:
                body = _json(refs[BODIES[key]])
                body["application/json"]["example"] = valid[key]
                operation["requestBody"] = {"required": True, "content": body}
            if key in RESULTS:
                responses["200"] = {"description": "OK", "content": _json(refs[RESULTS[key]])}
            if key in STREAMS:
                content: dict[str, Any] = {"text/event-stream": {"schema": _SSE_EVENT}}
                if (result := STREAMS[key]) is not None:
                    content.update(_json(refs[result]))
                responses["200"] = {
                    "description": "The object, or its events when `stream` is true.",
                    "content": content,
                }
            if key in LINKS:
                responses["200"]["links"] = _links(key)
            for status, description in ERRORS.items():
                if status in _BODY_ERRORS and key not in BODIES:
                    continue
                responses.setdefault(status, {"description": description, "content": error})
    for route in ("/health", "/readyz"):
        operation = doc["paths"].get(route, {}).get("get")
        if operation is not None:
            operation["responses"]["503"] = {
                "description": "This gateway holds no reply partition (not ready)."
            }
    return doc


__all__ = ["BODIES", "ERRORS", "LINKS", "SECURITY_SCHEME", "STREAMS", "gateway_openapi"]
