"""The streamed events of one response, in OpenAI's order, numbered from 0.

``response.created`` → ``response.in_progress`` → ``response.output_item.added`` →
``response.content_part.added`` → ``response.output_text.delta``… → ``response.output_text.done``
→ ``response.content_part.done`` → ``response.output_item.done`` → ``response.completed`` (or
``response.incomplete``); a worker error ends the stream with ``response.failed`` right after
the deltas so far. Each is one SSE event, ``event: <type>`` then ``data: <json>``; over the
WebSocket, one text message of the same JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from producers.gateway.responses.protocol import OutputMessage, OutputText, ResponseObject

_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",  # no event of its own: the response says "cancelled"
    "failed": "response.failed",
}


Encode = Callable[[str, dict[str, Any]], str]  # (event type, event JSON) → what is sent


def sse(event_type: str, data: dict[str, Any]) -> str:
    """One SSE event; its ``id`` is the sequence number (what a resuming client sends back as
    ``starting_after``, or a browser's EventSource as ``Last-Event-ID``)."""
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {data['sequence_number']}\nevent: {event_type}\ndata: {payload}\n\n"


class ResponseEvents:
    """Builds the events of the response whose one output message is ``item_id``, each encoded
    by ``encode``: an SSE event by default, a WebSocket message's text for the WebSocket mode.
    Events numbered up to ``starting_after`` are counted but come out as ``""`` (a resuming
    client has them)."""

    def __init__(self, item_id: str, encode: Encode = sse, starting_after: int = -1) -> None:
        self._item_id = item_id
        self._encode = encode
        self._next = 0
        self._after = starting_after

    def _event(self, event_type: str, **fields: Any) -> str:
        number, self._next = self._next, self._next + 1
        if number <= self._after:
            return ""
        return self._encode(event_type, {"type": event_type, "sequence_number": number, **fields})

    def _in_item(self, event_type: str, **fields: Any) -> str:
        return self._event(
            event_type, item_id=self._item_id, output_index=0, content_index=0, **fields
        )

    def opening(self, response: ResponseObject) -> list[str]:
        """The events before the first token: created, in progress, the empty message and part."""
        body = response.model_dump(mode="json")
        empty = OutputMessage(id=self._item_id, status="in_progress", content=[])
        return [
            self._event("response.created", response=body),
            self._event("response.in_progress", response=body),
            self._event(
                "response.output_item.added", output_index=0, item=empty.model_dump(mode="json")
            ),
            self._in_item(
                "response.content_part.added", part=OutputText(text="").model_dump(mode="json")
            ),
        ]

    def delta(self, text: str) -> str:
        return self._in_item("response.output_text.delta", delta=text, logprobs=[])

    def closing(self, response: ResponseObject) -> list[str]:
        """The events after the last token: the text, part and item done, then the terminal one
        (a failed response: only the terminal one)."""
        events = []
        if response.status != "failed" and response.output:
            item = response.output[0]
            text = "".join(part.text for part in item.content)
            part = OutputText(text=text).model_dump(mode="json")
            events += [
                self._in_item("response.output_text.done", text=text, logprobs=[]),
                self._in_item("response.content_part.done", part=part),
                self._event(
                    "response.output_item.done", output_index=0, item=item.model_dump(mode="json")
                ),
            ]
        body = response.model_dump(mode="json")
        events.append(self._event(_TERMINAL[response.status], response=body))
        return events
