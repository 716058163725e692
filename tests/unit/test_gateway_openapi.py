"""The gateway's OpenAPI document describes what the routes really read and answer."""

from __future__ import annotations

from typing import Any

import pytest

from chatbus.settings import Settings
from producers.gateway.app import create_app
from producers.gateway.appeals import request_id_of
from producers.gateway.openapi import BODIES, SECURITY_SCHEME


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def test_every_body_a_route_reads_is_described_with_a_valid_example(
    document: dict[str, Any],
) -> None:
    for (method, path), model in BODIES.items():
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"].endswith(f"/{model.__name__}")
        model.model_validate(body["example"])  # the example is a request the route accepts


def test_every_v1_route_needs_the_key_and_answers_errors_in_openais_shape(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/v1/"):
                assert "security" not in operation, (method, path)
                continue
            assert operation["security"] == [{SECURITY_SCHEME: []}], (method, path)
            for status in ("400", "401", "404", "429", "503"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorResponse"), (method, path, status)
            assert "422" not in operation["responses"]


def test_streaming_answers_are_described_as_server_sent_events(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(create)
    assert "links" in document["paths"]["/v1/responses"]["post"]["responses"]["200"]


@pytest.mark.parametrize(
    ("given", "request_id"),
    [("chatcmpl-ab12", "req-ab12"), ("resp_ab12", "req-ab12"), ("req-ab12", "req-ab12")],
)
def test_an_appeal_names_the_request_by_any_of_its_ids(given: str, request_id: str) -> None:
    assert request_id_of(given) == request_id
