"""Input moderation on the bus, as two Faust agents.

``chat.requests`` ──validate──► ``<app>-requests-by-user`` (internal, keyed by user_id)
                   │ invalid → ``chat.dlq`` (+ an ``invalid_request`` chunk to the requester)
``<app>-requests-by-user`` ──classify──► ``chat.moderation`` (every verdict)
                   ├─ approved → ``chat.requests.approved`` (unchanged bytes, key conversation_id)
                   └─ blocked  → terminal ``content_filter`` chunk on the reply partition
                                 + ``Completion(finish_reason=content_filter)``

Tracing: ``validate`` continues the request's trace (a new span, stamp ``moderation_in``) and
carries it through the internal topic; ``classify`` stamps ``moderation_out`` and publishes the
approved request with the incoming headers, its trace headers replaced (docs/tracing.md).

The hop through the internal topic co-partitions the abuse table with its key (user_id), so one
user's score lives on one partition whichever conversation the request belongs to. Every effect
is awaited (acks=all) before the agent takes the next event, and Faust commits the offset after
that: at-least-once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from mode import Service

from chatbus.errors import ChatbusError, InvalidEvent, require_started
from chatbus.kafka import EventPublisher, decode_event
from chatbus.kafka.dlq import reject_request, send_to_dlq
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.tracing import Hop, RequestTrace, header_list, with_trace
from schemas.events import CancelRequest, ChatRequest, ModerationVerdict
from schemas.moderation_check import ModerationCheck, ModerationCheckResult, TextJudgement
from schemas.topics import TopicName
from stream_processors import metrics
from stream_processors.moderation.abuse import AbusePolicy, AbuseState
from stream_processors.moderation.categories import thresholds_from
from stream_processors.moderation.classifier import Classifier, build_classifier
from stream_processors.moderation.moderator import (
    MODERATION_WORKER_ID,
    Decision,
    InputModerator,
    refusal_events,
)
from stream_processors.moderation.output_watch import Window, judge_output

log = get_logger(__name__)

CONSUMER_NAME = "moderation"


class ClassifierNotReady(ChatbusError):
    retriable = True


class ModerationRuntime(Service):  # type: ignore[misc]
    """What the agents share: the publisher, the classifier (loaded in a thread), the executor."""

    def __init__(
        self, settings: Settings, *, classifier: Classifier | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.policy = AbusePolicy.from_settings(settings)
        self._thresholds = thresholds_from(settings)  # fail fast on a bad setting
        self._classifier = classifier
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderation")
        self._publisher: EventPublisher | None = None  # aiokafka wants a running loop
        self._moderator: asyncio.Future[InputModerator] | None = None
        self._loaded: InputModerator | None = None  # for other threads (the moderation check)

    def _build_moderator(self) -> InputModerator:
        classifier = self._classifier or build_classifier(self.settings)
        classifier.classify("warm up")  # load the model now, not on the first request
        log.info("classifier_ready", classifier=classifier.name)
        self._loaded = InputModerator(
            classifier, self._thresholds, self.policy, self.settings.moderation.refusals
        )
        return self._loaded

    @property
    def publisher(self) -> EventPublisher:
        return require_started(self._publisher, "runtime")

    @property
    def classifier_ready(self) -> bool:
        """Whether the classifier is loaded and warm (readiness waits for it: no cold first
        request); a load that failed is not ready."""
        loading = self._moderator
        return (
            loading is not None
            and loading.done()
            and not loading.cancelled()
            and loading.exception() is None
        )

    async def on_start(self) -> None:
        self._publisher = EventPublisher(
            self.settings, client_id=f"{self.settings.kafka.client_id}-moderation"
        )
        await self._publisher.start()
        self._load()

    async def on_stop(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("moderation_stopped")

    def _load(self) -> asyncio.Future[InputModerator]:
        if self._moderator is None:
            loop = asyncio.get_running_loop()
            self._moderator = loop.run_in_executor(self._executor, self._build_moderator)
        return self._moderator

    async def assess(self, request: ChatRequest, abuse: AbuseState) -> Decision:
        """Classify off the event loop (one thread: the model is not shared between threads)."""
        moderator = await self._load()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        decision = await loop.run_in_executor(
            self._executor, moderator.assess, request, abuse, time.time()
        )
        metrics.CLASSIFY_SECONDS.observe(time.perf_counter() - started)
        return decision

    async def judge_output(self, window: Window) -> tuple[ModerationVerdict, CancelRequest | None]:
        """Classify one window of a streaming answer, off the event loop."""
        moderator = await self._load()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        result = await loop.run_in_executor(
            self._executor, judge_output, moderator.classifier, moderator.thresholds, window
        )
        metrics.CLASSIFY_SECONDS.observe(time.perf_counter() - started)
        return result

    def check(self, check: ModerationCheck, timeout_s: float = 30.0) -> ModerationCheckResult:
        """Judge ``check``'s texts as input moderation would, from another thread (the ops
        server's), on the moderation thread; :class:`ClassifierNotReady` while it loads."""
        moderator = self._loaded
        if moderator is None:
            raise ClassifierNotReady("the moderation classifier is still loading; retry shortly")
        started = time.perf_counter()
        judged = self._executor.submit(lambda: [moderator.judge(t) for t in check.texts])
        results = judged.result(timeout_s)
        metrics.CLASSIFY_SECONDS.observe(time.perf_counter() - started)
        return ModerationCheckResult(
            classifier=moderator.classifier.name,
            results=[
                TextJudgement(
                    flagged=any(categories.values()),
                    categories=categories,
                    category_scores={c: round(s, 4) for c, s in scores.items()},
                )
                for scores, categories in results
            ],
        )

    async def dead_letter(self, message: Any, exc: InvalidEvent, consumer: str) -> None:
        """DLQ a message that is not a valid event of its topic (nobody to tell)."""
        await send_to_dlq(self.publisher, message, error=exc.reason, consumer=consumer)

    async def reject_invalid(self, message: Any, exc: InvalidEvent) -> None:
        """DLQ the message; when its requester can be told, end its stream with the reason."""
        await reject_request(
            self.publisher,
            message,
            error=exc.reason,
            consumer=CONSUMER_NAME,
            worker_id=MODERATION_WORKER_ID,
        )

    async def publish(
        self,
        request: ChatRequest,
        raw: bytes,
        decision: Decision,
        trace: RequestTrace | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """The verdict, then either the approved request or the refusal (all acked).

        The approved request keeps the incoming ``headers``, with ``trace`` (stamped
        ``moderation_out`` now) in place of theirs.
        """
        verdict = decision.verdict
        sends = [await self.publisher.send(TopicName.MODERATION, verdict)]
        if decision.refusal is None:
            if trace is not None:
                trace.stamp(Hop.MODERATION_OUT)
                headers = with_trace(headers, trace)
            sends.append(
                await self.publisher.producer.send(
                    self.settings.topic(TopicName.REQUESTS_APPROVED),
                    raw,
                    key=request.conversation_id.encode(),
                    headers=list(headers) or None,
                )
            )
        else:
            chunk, completion = refusal_events(request, decision.refusal)
            sends.append(
                await self.publisher.send(
                    TopicName.TOKENS, chunk, partition=request.reply_to.partition
                )
            )
            sends.append(await self.publisher.send(TopicName.COMPLETIONS, completion))
        await asyncio.gather(*sends)
        metrics.VERDICTS.labels("input", verdict.action).inc()
        for category in decision.flagged:
            metrics.FLAGGED.labels("input", category).inc()
        for span in verdict.pii:
            metrics.PII.labels(span.kind).inc()


def register(app: faust.App, settings: Settings, runtime: ModerationRuntime) -> None:
    """Declare the moderation topics, table and agents on ``app``."""
    partitions = settings.kafka.topic_partitions
    requests = app.topic(
        settings.topic(TopicName.REQUESTS), key_serializer="raw", value_serializer="raw"
    )
    by_user = app.topic(
        f"{app.conf.id}-requests-by-user",
        internal=True,
        partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    abuse_scores = app.Table(
        "abuse-scores",
        default=None,
        partitions=partitions,
        help="Per-user decayed violation score and block expiry.",
    )

    @app.agent(requests, name="moderation-validate")
    async def validate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            trace = RequestTrace.next_hop(message.headers)
            trace.stamp(Hop.MODERATION_IN)
            try:
                request = decode_event(message.topic, message.value, ("chat.request",))
            except InvalidEvent as exc:
                await runtime.reject_invalid(message, exc)
                continue
            assert isinstance(request, ChatRequest)
            await by_user.send(
                key=request.user_id.encode(),
                value=message.value,
                headers=with_trace(message.headers, trace),
            )

    @app.agent(by_user, name="moderation-classify")
    async def classify(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            raw = event.message.value
            headers = header_list(event.message.headers)
            request = ChatRequest.model_validate_json(raw)  # validated upstream
            trace = RequestTrace.from_headers(headers) or RequestTrace.next_hop(headers)
            bound = log.bind(
                request_id=request.request_id,
                trace_id=trace.trace_id,
                conversation_id=request.conversation_id,
                user_id=request.user_id,
            )
            state = AbuseState.from_json(abuse_scores.get(request.user_id))
            decision = await runtime.assess(request, state)
            if decision.abuse is not None:
                abuse_scores[request.user_id] = decision.abuse.to_json()
            await runtime.publish(request, raw, decision, trace, headers)
            bound.info(
                "moderated",
                action=decision.verdict.action,
                flagged=list(decision.flagged),
                pii=len(decision.verdict.pii),
                abuse_score=round(decision.abuse.score, 3) if decision.abuse else None,
            )
