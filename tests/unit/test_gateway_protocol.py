"""Parsing OpenAI requests, OpenAI's error shape, and the rate-limit headers."""

from __future__ import annotations

import pytest

from chatbus.errors import ServiceUnavailable
from producers.gateway.errors import APIError, from_chatbus
from producers.gateway.rate_limit import Quota
from producers.gateway.routes import parse_request
from producers.sdk import ChatError, ChatTimeout
from schemas.events import ErrorInfo


def test_an_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(APIError) as err:
        parse_request(
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {}}'
        )
    assert err.value.status == 400
    assert err.value.body.error.param == "logit_bias"
    assert "Unrecognized request argument" in err.value.body.error.message


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "tool", "content": "x"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    ],
)
def test_invalid_requests_name_the_parameter(raw: bytes, param: str) -> None:
    with pytest.raises(APIError) as err:
        parse_request(raw)
    assert (err.value.status, err.value.body.error.param) == (400, param)


def test_malformed_json_is_400() -> None:
    with pytest.raises(APIError) as err:
        parse_request(b"{not json")
    assert err.value.status == 400 and err.value.body.error.code == "invalid_json"


def test_a_broken_dependency_is_503_not_400() -> None:
    error = from_chatbus(ServiceUnavailable("kafka down"))
    assert error.status == 503 and error.body.error.type == "server_error"
    assert from_chatbus(ChatTimeout("slow")).status == 504
    refused = from_chatbus(
        ChatError(ErrorInfo(code="context_length_exceeded", message="long", param="messages"))
    )
    assert refused.status == 400 and refused.body.error.param == "messages"
    assert refused.body.model_dump() == {
        "error": {
            "message": "long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def test_quota_headers_follow_openai_names() -> None:
    headers = Quota("tokens", limit=100, used=130, reset_s=12.5).headers()
    assert headers == {
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "12.500s",
    }
