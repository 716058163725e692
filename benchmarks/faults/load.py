"""The fault suite's client: a steady load of greedy, fixed-length chat streams through the
gateway, each answer checked against a fault-free reference.

Every stream is what a careful client does: ``POST /v1/chat/completions`` with ``stream: true``,
reading the SSE events and their ids; when the connection drops in the middle (a gateway killed)
it resumes with ``GET /v1/chat/completions/{id}/stream`` and ``Last-Event-ID``, retrying while
the gateway is away. Each request ends as one :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRIABLE_STATUS = {429, 500, 502, 503, 504}
RESUME_FOR_S = 60.0  # how long a dropped stream keeps trying to resume
IDLE_S = 60.0  # no event this long: the request hung
RETRY_AFTER_S = 1.0  # a client's pause after an error that says to retry


@dataclass
class Outcome:
    prompt: int
    request_id: str = ""
    kind: str = "hung"  # whole, retriable, hung, mismatch, failed
    text: str = ""
    finish: str | None = None
    resumed: int = 0
    largest_gap_s: float = 0.0
    largest_gap_at: float = 0.0  # monotonic: when the largest gap began
    detail: str = ""
    tokens: int = 0  # completion tokens, from the stream's usage chunk


class Resume(Exception):
    """The connection dropped mid-stream: pick it up from the last event id."""


@dataclass
class StreamState:
    request_id: str = ""
    last_id: int = -1
    text: list[str] = field(default_factory=list)
    finish: str | None = None
    done: bool = False
    last_at: float = field(default_factory=time.monotonic)
    largest_gap_s: float = 0.0
    largest_gap_at: float = 0.0
    tokens: int = 0

    def event(self, event_id: int | None, data: str) -> None:
        now = time.monotonic()
        if self.text and now - self.last_at > self.largest_gap_s:  # not before the first
            self.largest_gap_s, self.largest_gap_at = now - self.last_at, self.last_at
        self.last_at = now
        if event_id is not None:
            self.last_id = event_id
        if data == "[DONE]":
            self.done = True
            return
        body = json.loads(data)
        if "error" in body:
            raise RuntimeError(f"error event: {body['error'].get('message')}")
        self.request_id = self.request_id or body.get("id", "")
        if body.get("usage"):
            self.tokens = int(body["usage"].get("completion_tokens") or 0)
        for choice in body.get("choices", []):
            self.text.append(choice.get("delta", {}).get("content") or "")
            self.finish = choice.get("finish_reason") or self.finish


async def _read(response: httpx.Response, state: StreamState) -> None:
    event_id: int | None = None
    try:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                state.event(event_id, line[6:])
                event_id = None
                if state.done:
                    return
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
        raise Resume(repr(exc)) from exc
    if not state.done:
        raise Resume("the stream ended without [DONE]")


class Load:
    """``streams`` concurrent slots, each sending one request after another until stopped."""

    def __init__(
        self, base_url: str, key: str, model: str, prompts: list[str], max_tokens: int
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}"}
        self._model = model
        self.prompts = prompts
        self._max_tokens = max_tokens
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()

    def body(self, prompt: int) -> dict[str, Any]:
        return {
            "model": self._model,
            "messages": [{"role": "user", "content": self.prompts[prompt]}],
            "max_tokens": self._max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def one(self, client: httpx.AsyncClient, prompt: int) -> Outcome:
        """One request to its end, resumed as often as the connection drops."""
        state = StreamState()
        outcome = Outcome(prompt)
        try:
            async with asyncio.timeout(IDLE_S * 3):
                try:
                    async with client.stream(
                        "POST", "/v1/chat/completions", json=self.body(prompt)
                    ) as response:
                        if response.status_code != 200:
                            await response.aread()
                            outcome.kind = (
                                "retriable"
                                if response.status_code in RETRIABLE_STATUS
                                else "failed"
                            )
                            outcome.detail = f"HTTP {response.status_code}: {response.text[:120]}"
                            return outcome
                        await _read(response, state)
                except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                    if not state.request_id:
                        outcome.kind, outcome.detail = "retriable", repr(exc)
                        return outcome
                    await self._resume(client, state, outcome)
                except Resume:
                    if not state.request_id:
                        outcome.kind, outcome.detail = "retriable", "dropped before any event"
                        return outcome
                    await self._resume(client, state, outcome)
        except TimeoutError:
            outcome.kind, outcome.detail = "hung", f"no end within {IDLE_S * 3:.0f} s"
        except RuntimeError as exc:
            outcome.kind, outcome.detail = "retriable", str(exc)
        outcome.request_id = state.request_id
        outcome.text = "".join(state.text)
        outcome.finish = state.finish
        outcome.largest_gap_s = state.largest_gap_s
        outcome.largest_gap_at = state.largest_gap_at
        outcome.tokens = state.tokens
        if state.done and outcome.kind == "hung":
            outcome.kind = "whole"  # checked against the reference by the audit
        return outcome

    async def _resume(
        self, client: httpx.AsyncClient, state: StreamState, outcome: Outcome
    ) -> None:
        deadline = time.monotonic() + RESUME_FOR_S
        while not state.done:
            outcome.resumed += 1
            try:
                async with client.stream(
                    "GET",
                    f"/v1/chat/completions/{state.request_id}/stream",
                    headers={"Last-Event-ID": str(state.last_id)},
                ) as response:
                    if response.status_code == 200:
                        await _read(response, state)
                        continue
                    await response.aread()
                    outcome.detail = f"resume: HTTP {response.status_code}"
            except (httpx.HTTPError, Resume) as exc:
                outcome.detail = f"resume: {exc!r}"
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.5)  # the gateway is restarting: try again shortly

    async def run(self, streams: int) -> None:
        """Keep ``streams`` requests in flight until :meth:`stop`."""
        limits = httpx.Limits(max_connections=streams * 2, max_keepalive_connections=streams)
        timeout = httpx.Timeout(connect=5.0, read=IDLE_S, write=10.0, pool=30.0)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, limits=limits
        ) as client:

            async def slot(n: int) -> None:
                turn = 0
                while not self._stop.is_set():
                    prompt = (n + turn * streams) % len(self.prompts)
                    turn += 1
                    outcome = await self.one(client, prompt)
                    self.outcomes.append(outcome)
                    if outcome.kind != "whole":  # as a client would: back off, then retry
                        await asyncio.sleep(RETRY_AFTER_S)

            await asyncio.gather(*(slot(n) for n in range(streams)))

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        """Forget the outcomes, ready to :meth:`run` again."""
        self.outcomes = []
        self._stop.clear()


def audit(
    outcomes: list[Outcome], reference: dict[int, str], recorded: dict[str, str]
) -> dict[str, Any]:
    """Counts of each kind. A whole answer is checked against what the system itself recorded
    of it (the completion's text, as the history agent stored the turn): text the client got
    twice is *duplicated*, text it never got is *missing*. Against the fault-free reference, a
    difference is counted apart (``differs``): batched greedy decoding is not bit-identical to
    one sequence at a time, so it also happens with no fault at all (the control row)."""
    kinds: Counter[str] = Counter()
    duplicated = missing = differs = 0
    for outcome in outcomes:
        stored = recorded.get(outcome.request_id)
        if outcome.kind == "whole" and stored is not None and outcome.text != stored:
            outcome.kind = "mismatch"
            if len(outcome.text) > len(stored):
                duplicated += 1
            else:
                missing += 1
        if outcome.kind == "whole" and outcome.text != reference.get(outcome.prompt):
            differs += 1
        kinds[outcome.kind] += 1
    gaps = sorted(o.largest_gap_s for o in outcomes if o.kind in ("whole", "mismatch"))
    return {
        "sent": len(outcomes),
        "whole": kinds["whole"],
        "retriable": kinds["retriable"],
        "hung": kinds["hung"],
        "failed": kinds["failed"],
        "mismatch": kinds["mismatch"],
        "duplicated": duplicated,
        "missing": missing,
        "differs_from_reference": differs,
        "resumed": sum(1 for o in outcomes if o.resumed),
        "largest_gap_p99_s": round(gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))], 2)
        if gaps
        else None,
    }
