"""Streams that survive a reconnect, on a scripted backend: the same events after any point,
another user's stream not found, an abandoned answer kept for the grace period, background
responses, and the replay's ordering of chunks."""

from __future__ import annotations

from typing import Any

import pytest

from producers.gateway.errors import APIError
from producers.gateway.responses.serving import ResponsesService
from producers.gateway.resume import StreamKeeper
from producers.gateway.serving import Answer, ValidRequest
from producers.replay import SeqOrder
from schemas.events import TokenChunk
from tests.unit.fake_backend import MemoryResponseStore, MemoryStreamDirectory
from tests.unit.test_gateway_serving import body, events, service
from tests.unit.test_responses_serving import parse_sse, request

GRACE_S = 10.0


class Sleeps:
    """An injectable sleep: records each wait and runs ``during`` in it (another gateway
    resuming the stream meanwhile, say)."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.during: list[Any] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        for work in self.during:
            await work()


def keeper(directory: MemoryStreamDirectory, sleeps: Sleeps | None = None) -> StreamKeeper:
    return StreamKeeper(directory, grace_s=GRACE_S, sleep=sleeps or Sleeps())


async def streamed_chat(**fields: Any) -> tuple[Any, Any, list[str], MemoryStreamDirectory]:
    directory = MemoryStreamDirectory()
    svc, backend = service(keeper=keeper(directory))
    answer = await svc.submit(
        svc.validate(body(stream=True, **fields)), user_id="alice", prompt_tokens=2
    )
    return svc, backend, [e async for e in svc.stream(answer)], directory


# --- chat completions -----------------------------------------------------------------------
@pytest.mark.parametrize("starting_after", [-1, 0, 1, 2, 3, 4, 99])
async def test_a_resumed_chat_stream_is_every_event_after_the_last_one_seen(
    starting_after: int,
) -> None:
    _, backend, original, directory = await streamed_chat(stream_options={"include_usage": True})
    elsewhere, _ = service(keeper=keeper(directory))  # another gateway, same bus and Redis
    elsewhere._backend = backend
    origin = await elsewhere.origin("alice", "req-" + "0" * 31 + "1")
    resumed = await elsewhere.replay(origin)
    again = [e async for e in elsewhere.stream(resumed, starting_after=starting_after)]
    if starting_after < len(original) - 1:
        assert again == original[starting_after + 1 :]  # the same events, numbered the same
    else:  # beyond the last event: nothing replayed, and [DONE] still ends it
        assert again == ["data: [DONE]\n\n"]
    assert backend.replayed[0][1] == origin.request_id


async def test_the_chat_stream_of_another_user_or_an_unknown_one_is_not_found() -> None:
    svc, _, _, _ = await streamed_chat()
    for user, request_id in (("mallory", "req-" + "0" * 31 + "1"), ("alice", "req-" + "f" * 32)):
        with pytest.raises(APIError) as err:
            await svc.origin(user, request_id)
        assert err.value.status == 404 and err.value.body.error.code == "stream_not_found"


async def test_a_resumed_stream_keeps_the_origin_the_first_stream_recorded() -> None:
    _, _, original, directory = await streamed_chat()
    origin = directory.origins["req-" + "0" * 31 + "1"]
    assert (origin.user_id, origin.model, origin.prompt_tokens) == ("alice", "chatbus-tiny", 2)
    assert [e["choices"][0]["delta"].get("content") for e in events(original)[1:3]] == [
        "Hel",
        "lo",
    ]


# --- the grace period -------------------------------------------------------------------------
async def abandoned(sleeps: Sleeps) -> tuple[Any, Any, MemoryStreamDirectory, str]:
    directory = MemoryStreamDirectory()
    svc, backend = service(keeper=keeper(directory, sleeps))
    answer = await svc.submit(svc.validate(body(stream=True)), user_id="alice", prompt_tokens=2)
    stream = svc.stream(answer)
    await anext(stream)
    await anext(stream)  # the first piece of text: the stream is marked followed
    await stream.aclose()  # the client goes away
    return svc, backend, directory, answer.request_id


async def test_an_answer_nobody_resumes_is_cancelled_after_the_grace_period() -> None:
    sleeps = Sleeps()

    async def own_mark_expires() -> None:
        directory.expire_marks()

    sleeps.during.append(own_mark_expires)
    svc, backend, directory, request_id = await abandoned(sleeps)
    await svc.drain()
    assert backend.cancelled == [request_id]
    assert sleeps.waits and sleeps.waits[0] > GRACE_S  # it waited the grace period first


async def test_an_answer_resumed_within_the_grace_period_is_not_cancelled() -> None:
    sleeps = Sleeps()

    async def resumed_elsewhere() -> None:
        directory.expire_marks()  # our own mark is older than the grace period
        await directory.mark_followed(request_id, GRACE_S)  # someone else follows it now

    sleeps.during.append(resumed_elsewhere)
    svc, backend, directory, request_id = await abandoned(sleeps)
    await svc.drain()
    assert backend.cancelled == []


async def test_with_no_grace_period_an_abandoned_answer_is_cancelled_at_once() -> None:
    svc, backend = service()  # no keeper: nothing is resumable
    answer = await svc.submit(svc.validate(body(stream=True)), user_id="alice", prompt_tokens=2)
    stream = svc.stream(answer)
    await anext(stream)
    await stream.aclose()
    await svc.drain()
    assert backend.cancelled == [answer.request_id]


# --- responses ---------------------------------------------------------------------------------
def responses_on(directory: MemoryStreamDirectory, store: MemoryResponseStore) -> Any:
    chat, backend = service(keeper=keeper(directory))
    return ResponsesService(chat, store, clock=lambda: 1_700_000_001.0), backend


@pytest.mark.parametrize("starting_after", [-1, 3, 5, 9])
async def test_a_resumed_response_stream_is_the_same_events_after_a_sequence_number(
    starting_after: int,
) -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, backend = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    original = parse_sse([e async for e in svc.stream(run)])
    elsewhere, _ = responses_on(directory, store)
    elsewhere.chat._backend = backend
    resumed = await elsewhere.resume("alice", run.id, starting_after=starting_after)
    again = parse_sse([e async for e in resumed])
    assert again == original[starting_after + 1 :]
    assert again[-1]["type"] == "response.completed"


async def test_a_response_whose_chunks_are_gone_is_rebuilt_from_the_store() -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, _ = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    await svc.complete(run)
    directory.origins.clear()  # past the resume TTL
    rebuilt = parse_sse([e async for e in await svc.resume("alice", run.id)])
    assert [e["type"] for e in rebuilt][-2:] == ["response.output_item.done", "response.completed"]
    assert "".join(e["delta"] for e in rebuilt if e["type"].endswith(".delta")) == "Hello!"


async def test_another_users_response_stream_is_not_found() -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, _ = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    await svc.complete(run)
    with pytest.raises(APIError) as err:
        await svc.resume("mallory", run.id)
    assert err.value.status == 404


async def test_a_background_response_returns_queued_and_is_stored_when_it_ends() -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, _ = responses_on(directory, store)
    queued = await svc.open_background(
        request(background=True), user_id="alice", submit=submit_as(svc, "alice")
    )
    assert (queued.status, queued.background, queued.output) == ("queued", True, [])
    await svc.chat.drain()  # the gateway follows it with no client attached
    done = await svc.retrieve("alice", queued.id)
    assert done.status == "completed"
    assert done.output[0].content[0].text == "Hello!"
    assert done.usage is not None and done.usage.output_tokens == 4


async def test_a_background_response_must_be_stored() -> None:
    svc, _ = responses_on(MemoryStreamDirectory(), MemoryResponseStore())
    with pytest.raises(APIError) as err:
        await svc.open_background(
            request(background=True, store=False), user_id="alice", submit=submit_as(svc, "alice")
        )
    assert err.value.body.error.param == "store"


async def test_a_background_response_refused_before_the_bus_is_an_http_error() -> None:
    svc, _ = responses_on(MemoryStreamDirectory(), MemoryResponseStore())

    async def over_limit(valid: ValidRequest, conversation: str | None, sent: Any) -> Answer:
        raise APIError(429, "Rate limit reached.", code="rate_limit_exceeded")

    with pytest.raises(APIError) as err:
        await svc.open_background(request(background=True), user_id="alice", submit=over_limit)
    assert err.value.status == 429


def submit_as(svc: ResponsesService, user: str) -> Any:
    async def submit(valid: ValidRequest, conversation: str | None, sent: Any = None) -> Answer:
        return await svc.chat.submit(
            valid,
            user_id=user,
            prompt_tokens=2,
            conversation_id=conversation or "conv-1",
            on_sent=sent,
        )

    return submit


# --- the replay's order ---------------------------------------------------------------------
def chunk(seq: int) -> TokenChunk:
    return TokenChunk(request_id="req-1", conversation_id="c", seq=seq, text=str(seq))


def test_replayed_chunks_come_in_seq_order_each_once() -> None:
    order = SeqOrder()
    ready = [c.seq for s in (0, 2, 1, 1, 0, 3, 2) for c in order.add(chunk(s))]
    assert ready == [0, 1, 2, 3]


async def test_a_running_response_nobody_follows_is_adopted_when_polled() -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, backend = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    assert run.saving is not None
    await run.saving  # stored in_progress; then its gateway dies: nobody follows it
    later_chat, _ = service(keeper=keeper(directory))
    later_chat._backend = backend
    later = ResponsesService(later_chat, store, clock=lambda: 1_700_000_000.0 + 3600)
    polled = await later.retrieve("alice", run.id)
    assert polled.status == "in_progress"
    await later_chat.drain()  # the adopting gateway follows it to the end from the bus
    assert (await later.retrieve("alice", run.id)).status == "completed"
    assert store.saved[run.id].response.output[0].content[0].text == "Hello!"


async def test_a_running_response_someone_follows_is_left_to_them() -> None:
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, backend = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    assert run.saving is not None
    await run.saving
    await directory.mark_followed(run.answer.request_id, GRACE_S)
    later_chat, _ = service(keeper=keeper(directory))
    later_chat._backend = backend
    later = ResponsesService(later_chat, store, clock=lambda: 1_700_000_000.0 + 3600)
    await later.retrieve("alice", run.id)
    await later_chat.drain()
    assert backend.replayed == []  # not adopted


async def test_a_running_response_whose_gateway_lives_is_left_to_it() -> None:
    """A client that left on a live gateway: that gateway ends it (its grace period), a poll
    elsewhere does not take it over."""
    directory, store = MemoryStreamDirectory(), MemoryResponseStore()
    svc, backend = responses_on(directory, store)
    run = await svc.open(request(), user_id="alice", submit=submit_as(svc, "alice"))
    assert run.saving is not None
    await run.saving
    directory.live_owners.add("")  # the gateway that began it (owner "" here) still runs
    later_chat, _ = service(keeper=keeper(directory))
    later_chat._backend = backend
    later = ResponsesService(later_chat, store, clock=lambda: 1_700_000_000.0 + 3600)
    await later.retrieve("alice", run.id)
    await later_chat.drain()
    assert backend.replayed == []
