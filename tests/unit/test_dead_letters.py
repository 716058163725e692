"""What a dead letter keeps of a message, and when the requester of an invalid request can be
told (the sending itself is tested on the real broker: tests/integration/test_consumer_runtime)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from chatbus.kafka.dlq import dead_letter_for, reply_address
from schemas.events import ChatRequest, ReplyTo


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_a_dead_letter_keeps_the_original_bytes_where_they_were_and_why() -> None:
    letter = dead_letter_for(
        Message("t.chat.requests", 1, 42, b"conv-1", b"{not json"),
        error="Invalid JSON",
        consumer="inference:w-1",
    )
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (
        "t.chat.requests",
        1,
        42,
    )
    assert base64.b64decode(letter.original_key_b64 or "") == b"conv-1"
    assert base64.b64decode(letter.original_value_b64) == b"{not json"
    assert letter.error == "Invalid JSON" and letter.consumer == "inference:w-1"


def test_a_message_without_key_or_value_still_makes_a_letter() -> None:
    letter = dead_letter_for(
        Message("t.chat.requests", 0, 0, None, None), error="empty", consumer="history"
    )
    assert letter.original_key_b64 is None and letter.original_value_b64 == ""


def test_an_invalid_request_that_names_its_reply_partition_can_be_answered() -> None:
    request = ChatRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], reply_to=ReplyTo(partition=3)
    )
    raw = request.model_dump(mode="json")
    raw["sampling"]["temperature"] = 9.5  # what made it invalid
    assert reply_address(json.dumps(raw).encode()) == (
        request.request_id,
        request.conversation_id,
        ReplyTo(partition=3),
    )


def test_nobody_is_told_when_the_message_does_not_say_who_asked() -> None:
    assert reply_address(b"{this is not json") is None
    assert reply_address(None) is None
    assert reply_address(b'{"request_id": "r", "conversation_id": "c"}') is None
    assert reply_address(b'{"request_id": "r", "conversation_id": "c", "reply_to": 7}') is None
