"""Output moderation on the bus: judge answers while they stream, stop the GPU on a violation.

``chat.tokens`` ──windows──► classify ──► nothing while the answer passes (a window that
                                          passes publishes no verdict)
                                     └─ flagged → ``chat.control`` cancel(reason=content_filter)
                                                  + ``chat.moderation`` verdict (stage ``output``)
                                        the worker stops within a decode step and ends the
                                        stream with ``finish_reason=content_filter``

A chunk that is not a valid event goes to ``chat.dlq`` (this group sees each message of
``chat.tokens`` once; the client skips such a chunk). ``chat.control`` is read by every worker
in full, so none of them can dead-letter it once: the ``control-audit`` agent here does, for a
message no worker could use (a cancel that is not a valid event).
"""

from __future__ import annotations

import faust

from chatbus.errors import InvalidEvent
from chatbus.kafka import decode_event
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.events import TokenChunk
from schemas.topics import TopicName
from stream_processors import metrics
from stream_processors.agents.moderation import ModerationRuntime
from stream_processors.moderation.output_watch import OutputWatch

log = get_logger(__name__)

OUTPUT_CONSUMER = "moderation-output"
CONTROL_CONSUMER = "control-audit"


def register(app: faust.App, settings: Settings, runtime: ModerationRuntime) -> None:
    """Declare the output-moderation agent on ``app``."""
    tokens = app.topic(
        settings.topic(TopicName.TOKENS), key_serializer="raw", value_serializer="raw"
    )
    watch = OutputWatch(
        settings.moderation.output_window_chars, settings.moderation.output_overlap_chars
    )

    @app.agent(tokens, name="moderation-output")
    async def moderate_output(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                chunk = decode_event(message.topic, message.value, ("chat.token",))
            except InvalidEvent as exc:
                await runtime.dead_letter(message, exc, OUTPUT_CONSUMER)
                continue
            assert isinstance(chunk, TokenChunk)
            window, overrun = watch.add(chunk)
            if overrun is not None:
                metrics.OUTPUT_OVERRUN.observe(overrun)
                log.info("output_overrun", request_id=chunk.request_id, tokens=overrun)
            if window is None:
                continue
            verdict, cancel = await runtime.judge_output(window)
            if cancel is not None:
                watch.stop(window)
                sent = await runtime.publisher.send(TopicName.CONTROL, cancel)
                await runtime.publisher.publish(TopicName.MODERATION, verdict)
                await sent
                metrics.VERDICTS.labels("output", verdict.action).inc()
                for category, hit in verdict.categories.items():
                    if hit:
                        metrics.FLAGGED.labels("output", category).inc()
                log.info(
                    "output_stopped",
                    request_id=chunk.request_id,
                    tokens_seen=window.tokens_seen,
                    flagged=[c for c, hit in verdict.categories.items() if hit],
                )


def register_control_audit(app: faust.App, settings: Settings, runtime: ModerationRuntime) -> None:
    """Dead-letter what lands on ``chat.control`` and is not a cancel (each message once, by
    this group: the workers read the topic without a group and only skip such a message)."""
    control = app.topic(
        settings.topic(TopicName.CONTROL), key_serializer="raw", value_serializer="raw"
    )

    @app.agent(control, name=CONTROL_CONSUMER)
    async def audit_control(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                decode_event(message.topic, message.value, ("chat.cancel",))
            except InvalidEvent as exc:
                await runtime.dead_letter(message, exc, CONTROL_CONSUMER)
