"""How one request becomes chunks and a completion, on a scripted engine (no model, no broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from chatbus.settings import Settings
from inference_consumers.engine.scripted import ScriptedEngine
from inference_consumers.publish_hold import PublishHold
from inference_consumers.request_stream import RequestStreamer, StreamState, with_default_system
from inference_consumers.resume import Published
from schemas.events import ChatRequest, Completion, SamplingParams, TokenChunk


class _Step:
    def __await__(self) -> Any:
        yield  # hand control to the event loop once, like a decode step does


async def decode_step() -> None:
    await _Step()


class Recorder:
    """A :class:`Publisher` that keeps what would go on each topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, BaseModel]] = []

    async def send(self, topic: str, event: BaseModel, **_: Any) -> asyncio.Future[None]:
        self.sent.append((topic, event))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def publish(self, topic: str, event: BaseModel, **kw: Any) -> None:
        await (await self.send(topic, event, **kw))

    def chunks(self) -> list[TokenChunk]:
        return [e for t, e in self.sent if isinstance(e, TokenChunk)]

    def completion(self) -> Completion:
        (completion,) = [e for t, e in self.sent if isinstance(e, Completion)]
        return completion


def streamer(script: str, **settings: Any) -> tuple[RequestStreamer, ScriptedEngine, Recorder]:
    engine, recorder = ScriptedEngine(script, max_context=64), Recorder()
    # No default system prompt: these tests count the prompt's bytes exactly.
    config = Settings(chunk_max_tokens=4, chunk_max_ms=10_000, default_system_prompt="", **settings)
    return RequestStreamer(config, engine, recorder, "w1"), engine, recorder


def request(content: str = "hi", **sampling: Any) -> ChatRequest:
    return ChatRequest(
        model="scripted",
        messages=[{"role": "user", "content": content}],
        reply_to={"partition": 0},
        sampling=SamplingParams(**sampling),
    )


async def test_chunks_carry_every_token_once_and_the_completion_matches() -> None:
    run, _, out = streamer("hello world")
    completion = await run.run(StreamState(request(max_tokens=32)))
    chunks = out.chunks()
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[0].text == "h", "the first token is sent at once"
    assert all(len(c.token_ids) <= 4 for c in chunks)
    assert "".join(c.text for c in chunks) == "hello world" == out.completion().text
    assert completion is not None and completion.finish_reason == "stop"
    assert completion.usage.completion_tokens == 11 and completion.usage.prompt_tokens == 2
    assert chunks[-1].usage == completion.usage, "the last chunk tells the client its usage"


async def test_a_stop_sequence_ends_the_answer_before_it_and_stops_the_engine() -> None:
    run, engine, _ = streamer("one. two. three.")
    state = StreamState(request(max_tokens=32, stop=[" two"]))
    completion = await run.run(state)
    assert completion is not None and completion.text == "one."
    assert completion.finish_reason == "stop"
    assert engine.cancelled == {state.engine_id}
    assert state.engine_id.startswith(completion.request_id + "@")


async def test_a_resumed_request_prefills_what_was_streamed_and_continues_its_seq() -> None:
    run, engine, out = streamer("de")
    state = StreamState(request("prompt", max_tokens=5))
    state.resumed = Published(token_ids=list(b"abc"), text="abc", next_seq=2)
    completion = await run.run(state)
    (generation,) = engine.requests
    assert list(generation.prompt_ids) == list(b"prompt") + list(b"abc")
    assert generation.max_new_tokens == 2
    assert [c.seq for c in out.chunks()] == [2, 3]
    assert completion is not None and completion.text == "abcde"
    assert completion.usage.completion_tokens == 5 and completion.usage.prompt_tokens == 6


async def test_a_request_that_had_streamed_everything_is_only_completed() -> None:
    run, engine, out = streamer("unused")
    state = StreamState(request(max_tokens=3))
    state.resumed = Published(
        token_ids=list(b"xyz"), text="xyz", next_seq=4, finish_reason="length"
    )
    completion = await run.run(state)
    assert engine.requests == [] and out.chunks() == []
    assert completion is not None and completion.text == "xyz"


async def streaming(
    run: RequestStreamer, out: Recorder, state: StreamState
) -> asyncio.Task[Completion | None]:
    """``run.run(state)`` as a task, once its first chunk is out (the scripted engine stepped
    until then)."""
    task = asyncio.create_task(run.run(state))
    while not out.chunks():
        await decode_step()
    return task


async def hand_off(
    engine: ScriptedEngine, state: StreamState, task: asyncio.Task[Completion | None]
) -> None:
    """Let go of ``state``'s request mid-stream, as a revoked partition does."""
    state.handing_off = True
    await engine.cancel(state.engine_id)
    assert await task is None


async def test_handing_off_publishes_no_final_chunk_and_no_completion() -> None:
    run, engine, out = streamer("a long answer that goes on")
    state = StreamState(request(max_tokens=20))
    task = await streaming(run, out, state)
    await hand_off(engine, state, task)
    assert all(c.finish_reason is None for c in out.chunks())
    assert not [e for _, e in out.sent if isinstance(e, Completion)]


@pytest.mark.parametrize("model, code", [("other", "model_not_found")])
async def test_a_request_for_another_model_is_refused(model: str, code: str) -> None:
    run, _, out = streamer("x")
    bad = request().model_copy(update={"model": model})
    completion = await run.run(StreamState(bad))
    assert completion is not None and completion.finish_reason == "error"
    (chunk,) = out.chunks()
    assert chunk.error is not None and chunk.error.code == code


async def test_a_prompt_over_the_context_is_refused_naming_messages() -> None:
    run, _, out = streamer("x")
    await run.run(StreamState(request("p" * 60, max_tokens=10)))
    (chunk,) = out.chunks()
    assert chunk.error is not None and chunk.error.code == "context_length_exceeded"
    assert chunk.error.param == "messages"


async def test_a_stop_by_output_moderation_ends_as_content_filter() -> None:
    run, engine, out = streamer("a long answer that goes on")
    state = StreamState(request(max_tokens=20))
    task = await streaming(run, out, state)
    state.cancel_requested, state.cancel_reason = True, "content_filter"
    await engine.cancel(state.engine_id)
    completion = await task
    assert completion is not None and completion.finish_reason == "content_filter"
    assert out.chunks()[-1].finish_reason == "content_filter"


async def test_a_request_handed_off_and_resumed_on_the_same_engine_runs_again() -> None:
    run, engine, out = streamer("abcdefghijklmnop")
    first = StreamState(request(max_tokens=16))
    task = await streaming(run, out, first)
    await hand_off(engine, first, task)
    streamed = out.chunks()
    again = StreamState(first.request)
    again.resumed = Published(
        token_ids=[t for c in streamed for t in c.token_ids],
        text="".join(c.text for c in streamed),
        next_seq=len(streamed),
    )
    completion = await run.run(again)
    assert again.engine_id != first.engine_id, "each attempt has its own id in the engine"
    assert completion is not None and completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 16


def test_the_default_system_prompt_goes_first_only_when_there_is_none() -> None:
    user = [{"role": "user", "content": "hi"}]
    assert with_default_system(user, "Be kind.") == [
        {"role": "system", "content": "Be kind."},
        *user,
    ]
    own = [{"role": "system", "content": "Be terse."}, *user]
    assert with_default_system(own, "Be kind.") == own
    assert with_default_system(user, "") == user


async def held_mid_stream(
    script: str, max_tokens: int
) -> tuple[ScriptedEngine, Recorder, StreamState, asyncio.Task[Completion | None], int]:
    """A stream under way, then held (as a revoke holds it); what was sent before the hold."""
    run, engine, out = streamer(script)
    state = StreamState(request(max_tokens=max_tokens))
    task = await streaming(run, out, state)
    await state.hold.close()
    return engine, out, state, task, len(out.sent)


async def test_a_held_stream_publishes_nothing_until_its_hold_opens_then_all_of_it() -> None:
    _, out, state, task, before = await held_mid_stream("abcdefghijklmnop", 16)
    for _ in range(40):  # the engine goes on generating meanwhile
        await decode_step()
    assert len(out.sent) == before, "nothing reaches the broker while held"
    state.hold.open()
    completion = await task
    chunks = out.chunks()
    assert completion is not None and completion.finish_reason == "length"
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == "abcdefghijklmnop"


async def test_a_held_stream_handed_over_publishes_nothing_more() -> None:
    engine, out, state, task, before = await held_mid_stream("a long answer that goes on", 20)
    state.handing_off = True
    await engine.cancel(state.engine_id)
    state.hold.open()
    assert await task is None
    assert len(out.sent) == before
    assert not [e for _, e in out.sent if isinstance(e, Completion)]


async def test_a_moved_stream_publishes_under_its_lease_and_nothing_past_its_deadline() -> None:
    """A stream whose partition went to another member goes on while its lease lives; past the
    lease's deadline it publishes nothing more, final chunk and completion included."""
    _, out, state, task, before = await held_mid_stream("a long answer that goes on", 26)
    state.moved, state.lease_until = True, time.monotonic() + 60
    state.hold.open()
    while len(out.sent) < before + 2:  # it publishes on under its lease
        await decode_step()
    state.lease_until = time.monotonic()  # the lease could lapse now: another worker may resume
    published = len(out.sent)
    assert await task is None
    assert len(out.sent) == published
    assert not [e for _, e in out.sent if isinstance(e, Completion)]


async def test_closing_a_hold_waits_for_the_publish_under_way() -> None:
    hold, order = PublishHold(), []

    async def publish() -> None:
        async with hold.publishing():
            await decode_step()
            order.append("published")

    task = asyncio.create_task(publish())
    await decode_step()  # the publish is under way
    await hold.close()
    order.append("closed")
    await task
    assert order == ["published", "closed"]
    assert hold.held
