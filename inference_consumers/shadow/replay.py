"""Replay recorded requests to a candidate model on shadow topics, and archive its answers.

A shadow run named ``NAME`` lives under the topic prefix ``<prefix>shadow.NAME.``: its own
``chat.requests``/``chat.requests.approved``/``chat.tokens``/``chat.completions``/
``chat.moderation`` topics and its own consumer groups, so nothing reaches a production topic,
a production group or a user. Each replayed request keeps its original ``request_id`` (the
reference that :mod:`analytics.jobs.compare` joins on), names the candidate as its model, and
is answered by an inference worker serving the candidate. Each answer is judged by the output
moderation classifier (a ``chat.moderation`` verdict of stage ``output``), and an archiver
writes the run's topics under the archive prefix ``<archive prefix>-shadow/NAME`` — in the same
layout as production's, so the Spark jobs read both.

The pieces are given, not built here (a worker, an archiver and a judge come from other
components): the ``chatbus shadow`` command wires the real ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition

from chatbus.errors import ChatbusError
from chatbus.kafka import EventPublisher, decode_event, make_consumer
from chatbus.kafka.groups import archiver_group
from chatbus.kafka.lag import group_offsets, log_offsets
from chatbus.kafka.topic_setup import delete_prefixed_topics, ensure_topics
from chatbus.logging import get_logger
from chatbus.polling import eventually
from chatbus.settings import Settings
from schemas.events import ChatRequest, Completion, ModerationVerdict
from schemas.topics import TopicName
from schemas.topics import topic as topic_entry

log = get_logger(__name__)

# (scores, flags) of one answer: what the output moderation classifier decides
Judge = Callable[[str], tuple[dict[str, float], dict[str, bool]]]
Component = Callable[[Settings], AbstractAsyncContextManager[Any]]


def shadow_settings(settings: Settings, name: str, *, model_name: str, model_path: str) -> Settings:
    """The settings of shadow run ``name``: its topic prefix, archive prefix and model."""
    return settings.replace(
        topic_prefix=f"{settings.kafka.topic_prefix}shadow.{name}.",
        archive_prefix=f"{settings.archive.prefix}-shadow/{name}",
        archive_flush_s=min(settings.archive.flush_s, 2.0),
        model_name=model_name,
        model_path=model_path,
    )


def archive_uri(settings: Settings) -> str:
    """Where the run's archive is, as Spark reads it."""
    return f"s3a://{settings.s3.bucket}/{settings.archive.prefix}"


@dataclass
class ShadowResult:
    name: str
    model: str
    replayed: int
    answered: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    completion_tokens: int = 0
    flagged: int = 0
    seconds: float = 0.0
    archive: str = ""
    missing: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def replayed(request: ChatRequest, model_name: str) -> ChatRequest:
    """The request as the candidate gets it: the same id, conversation, messages and sampling,
    the candidate's model name."""
    return request.model_copy(update={"model": model_name})


async def run_shadow(
    settings: Settings,
    requests: Sequence[ChatRequest],
    *,
    name: str,
    model_name: str,
    model_path: str,
    worker: Component,
    archiver: Component,
    judge: Judge | None,
    timeout_s: float = 3600.0,
    keep_topics: bool = False,
    on_answer: Callable[[int, int], None] | None = None,
) -> ShadowResult:
    """Replay ``requests`` to the candidate; wait (up to ``timeout_s``) for every answer and
    for the archive to hold all of the run's records; then delete the run's topics unless
    ``keep_topics``. ``on_answer(answered, total)`` reports progress."""
    shadow = shadow_settings(settings, name, model_name=model_name, model_path=model_path)
    if shadow.kafka.topic_prefix == settings.kafka.topic_prefix:
        raise ChatbusError("a shadow run needs a topic prefix of its own")
    result = ShadowResult(name, model_name, len(requests), archive=archive_uri(shadow))
    started = time.monotonic()
    deadline = started + timeout_s
    await ensure_topics(shadow)
    try:
        async with (
            EventPublisher(shadow, client_id=f"chatbus-shadow-{name}") as publisher,
            archiver(shadow),
            worker(shadow),
        ):
            completions = make_consumer(shadow, group_id=None, auto_offset_reset="earliest")
            await completions.start()
            try:
                topic = shadow.topic(TopicName.COMPLETIONS)
                count = topic_entry(TopicName.COMPLETIONS).partitions(shadow.kafka.topic_partitions)
                completions.assign([TopicPartition(topic, p) for p in range(count)])
                for request in requests:  # as asked and as approved: whichever workers read
                    candidate_request = replayed(request, model_name)
                    await publisher.send(TopicName.REQUESTS, candidate_request)
                    await publisher.send(TopicName.REQUESTS_APPROVED, candidate_request)
                await publisher.producer.flush()
                await _collect(completions, publisher, requests, result, judge, deadline, on_answer)
            finally:
                await completions.stop()
            await _archived(shadow, deadline)
    finally:
        result.seconds = time.monotonic() - started
        if not keep_topics:
            await delete_prefixed_topics(shadow)
    return result


async def _collect(
    consumer: Any,
    publisher: EventPublisher,
    requests: Sequence[ChatRequest],
    result: ShadowResult,
    judge: Judge | None,
    deadline: float,
    on_answer: Callable[[int, int], None] | None,
) -> None:
    by_id = {r.request_id: r for r in requests}
    waiting = set(by_id)
    while waiting and time.monotonic() < deadline:
        fetched = await consumer.getmany(timeout_ms=500)
        for records in fetched.values():
            for record in records:
                completion = decode_event(record.topic, record.value, ("chat.completion",))
                assert isinstance(completion, Completion)
                if completion.request_id not in waiting:
                    continue  # a redelivered answer: counted once
                waiting.discard(completion.request_id)
                result.answered += 1
                result.finish_reasons[completion.finish_reason] += 1
                if completion.usage is not None:
                    result.completion_tokens += completion.usage.completion_tokens
                if judge is not None and completion.text:
                    result.flagged += await _judge(publisher, by_id, completion, judge)
                if on_answer is not None:
                    on_answer(result.answered, result.replayed)
    result.missing = sorted(waiting)


async def _judge(
    publisher: EventPublisher,
    by_id: dict[str, ChatRequest],
    completion: Completion,
    judge: Judge,
) -> bool:
    """The output verdict on one answer (as production's output moderation writes it)."""
    scores, flags = await asyncio.to_thread(judge, completion.text)
    request = by_id[completion.request_id]
    verdict = ModerationVerdict(
        request_id=completion.request_id,
        conversation_id=completion.conversation_id,
        user_id=request.user_id,
        stage="output",
        flagged=any(flags.values()),
        categories=flags,
        category_scores=scores,
        action="stop_generation" if any(flags.values()) else "allow",
    )
    await publisher.publish(TopicName.MODERATION, verdict)
    return verdict.flagged


async def _archived(settings: Settings, deadline: float) -> None:
    """Wait until the archiver has committed every record of the run's topics."""
    topics = [settings.topic(t.value) for t in TopicName]
    group = archiver_group(settings)

    async def caught_up() -> bool:
        _starts, ends = await log_offsets(settings, topics)
        committed = await group_offsets(settings, group)
        return all(committed.get(tp, 0) >= end for tp, end in ends.items() if end)

    try:
        await eventually(
            caught_up,
            timeout_s=max(1.0, deadline - time.monotonic()),
            interval=0.5,
            what="the shadow archive to hold every record of the run",
        )
    except TimeoutError as exc:
        raise ChatbusError(
            f"{exc}: check the object store (`chatbus ops status`) and rerun with --keep-topics"
        ) from exc
