"""The inference worker: a member of its model's consumer group that serves requests.

It holds at most ``max_inflight`` requests; when full it pauses its partitions, so overload shows
as consumer lag on the group. Offsets are committed only after a request's completion is on the
broker. Cancels arrive on ``chat.control``, which every worker reads in full.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from chatbus.errors import ChatbusError, InvalidEvent
from chatbus.kafka import EventPublisher, decode_event, make_consumer
from chatbus.kafka.dlq import send_to_dlq
from chatbus.kafka.groups import inference_group
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.tracing import Hop, RequestTrace, now_ms
from inference_consumers import metrics
from inference_consumers.engine import InferenceEngine
from inference_consumers.offsets import OffsetTracker
from inference_consumers.progress import ProgressStore
from inference_consumers.request_stream import RequestStreamer, StreamState
from inference_consumers.resume import published_so_far
from schemas.events import CancelRequest, ChatRequest, ErrorInfo, ReplyTo, TokenChunk
from schemas.topics import TopicName
from stream_processors.history import ContextStore, HistoryRepository

log = get_logger(__name__)

_RECENT_CANCELS = 10_000


def group_id_for(settings: Settings, model_name: str) -> str:
    """One consumer group per model."""
    return inference_group(settings, model_name)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: InferenceWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}"
                                                          for tp in assigned))


class InferenceWorker:
    """Consumes requests for one model and serves them on an engine."""

    def __init__(self, settings: Settings, engine: InferenceEngine, *,
                 input_topic: str | None = None, worker_id: str | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._input_topic = input_topic or settings.inference_input_topic
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._publisher = EventPublisher(settings, client_id=f"worker-{self.worker_id}")
        self._history = HistoryRepository(settings)
        self._context = ContextStore(settings, self._history)
        self._streamer = RequestStreamer(settings, engine, self._publisher, self.worker_id,
                                         context=self._context)
        self._consumer: AIOKafkaConsumer | None = None
        self._control: AIOKafkaConsumer | None = None
        self._offsets = OffsetTracker()
        self._active: dict[str, StreamState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._by_partition: dict[TopicPartition, set[str]] = {}
        self._recent_cancels: OrderedDict[str, str] = OrderedDict()  # request_id → reason
        self._progress = ProgressStore(settings)
        self._slot_freed = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False
        self._paused = False
        self.peak_inflight = 0  # most requests held at once
        self.admission_pauses = 0  # times the partitions were paused for want of a slot
        self.completed = 0  # requests this worker answered to the end
        self.left_to_other_models = 0  # requests for a model another group serves
        self.ready = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self._engine.start()
        await self._publisher.start()
        self._control = make_consumer(self._settings, group_id=None,
                                      client_id=f"worker-{self.worker_id}-control",
                                      auto_offset_reset="latest")
        await self._control.start()
        control_tps = [TopicPartition(self._settings.topic(TopicName.CONTROL), p)
                       for p in sorted(await self._publisher.partitions_for(TopicName.CONTROL))]
        self._control.assign(control_tps)
        await self._control.seek_to_end(*control_tps)
        self._consumer = make_consumer(
            self._settings, group_id=group_id_for(self._settings, self._engine.model_name),
            client_id=f"worker-{self.worker_id}", max_poll_interval_ms=300_000,
            session_timeout_ms=self._settings.session_timeout_ms,
            heartbeat_interval_ms=self._settings.heartbeat_interval_ms)
        self._consumer.subscribe([self._settings.topic(self._input_topic)],
                                 listener=_Rebalance(self))
        await self._consumer.start()
        self._background = [
            asyncio.create_task(self._supervised(self._consume_loop), name="consume"),
            asyncio.create_task(self._supervised(self._control_loop), name="control")]
        log.info("worker_started", worker_id=self.worker_id, model=self._engine.model_name,
                 max_inflight=self._settings.max_inflight)

    async def stop(self, *, drain_timeout_s: float = 30.0) -> None:
        """Stop taking work, finish what is in flight (up to the timeout), leave the group."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._slot_freed.set()
        if self._consumer is not None and self._consumer.assignment():
            self._consumer.pause(*self._consumer.assignment())
        pending = list(self._tasks.values())
        if pending:
            log.info("draining", inflight=len(pending))
            _, late = await asyncio.wait(pending, timeout=drain_timeout_s)
            if late:  # not finished in time: hand them to the group instead
                await self._hand_off(set(self._active))
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._commit()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._control is not None:
            await self._control.stop()
        await self._publisher.stop()
        await self._progress.stop()
        await self._context.close()
        self._history.close()
        await self._engine.stop()
        self._started = False
        log.info("worker_stopped", worker_id=self.worker_id)

    async def __aenter__(self) -> InferenceWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def inflight(self) -> int:
        return len(self._active)

    @property
    def running(self) -> bool:
        """Started, not stopping, and its consume and control loops are alive."""
        return (self._started and not self._stopping and bool(self._background)
                and not any(task.done() for task in self._background))

    # --- loops -----------------------------------------------------------------------------
    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop``; a broker hiccup restarts it with backoff instead of killing the worker."""
        backoff = 0.1
        while not self._stopping:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except (KafkaError, ChatbusError) as exc:
                log.warning("loop_restarting", loop=loop.__name__, error=repr(exc),
                            retry_in_s=backoff)
                await asyncio.sleep(backoff)  # backoff before retrying the broker
                backoff = min(backoff * 2, 5.0)

    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        capacity = self._settings.max_inflight
        while not self._stopping:
            free = capacity - len(self._active)
            if free <= 0:
                self._set_paused(consumer, True)
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._set_paused(consumer, False)
            batches = await consumer.getmany(timeout_ms=200, max_records=free)
            self.ready.set()
            for tp, records in batches.items():
                for record in records:
                    await self._admit(tp, record)

    def _set_paused(self, consumer: AIOKafkaConsumer, paused: bool) -> None:
        if paused == self._paused:
            return
        assignment = consumer.assignment()
        if paused:
            consumer.pause(*assignment)
            self.admission_pauses += 1
        else:
            consumer.resume(*assignment)
        self._paused = paused
        log.debug("admission_paused" if paused else "admission_resumed",
                  inflight=len(self._active))

    async def _control_loop(self) -> None:
        control = self._control
        assert control is not None
        while not self._stopping:
            batches = await control.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        event = decode_event(record.topic, record.value, ("chat.cancel",))
                    except InvalidEvent as exc:
                        log.warning("invalid_control_event", error=str(exc))
                        continue
                    assert isinstance(event, CancelRequest)
                    await self._cancel(event.request_id, event.reason)

    async def _cancel(self, request_id: str, reason: str) -> None:
        state = self._active.get(request_id)
        if state is None:
            self._recent_cancels[request_id] = reason
            while len(self._recent_cancels) > _RECENT_CANCELS:
                self._recent_cancels.popitem(last=False)
            return
        state.cancel_requested = True
        state.cancel_reason = reason
        if state.engine_id:  # not yet generating: run() sees cancel_requested before it starts
            await self._engine.cancel(state.engine_id)
        log.info("cancel_requested", request_id=request_id, reason=reason)

    def _report_inflight(self) -> None:
        model = self._engine.model_name
        metrics.INFLIGHT.labels(model).set(len(self._active))
        metrics.OCCUPANCY.labels(model).set(len(self._active) / self._settings.max_inflight)

    # --- one request -----------------------------------------------------------------------
    async def _admit(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        polled_ms = now_ms()  # this batch's records are admitted right after the poll
        self._offsets.started(tp, record.offset)
        try:
            event = decode_event(record.topic, record.value, ("chat.request",))
        except InvalidEvent as exc:
            await self._reject_invalid(record, exc)
            self._offsets.finished(tp, record.offset)
            await self._commit()
            return
        assert isinstance(event, ChatRequest)
        if event.model != self._engine.model_name and event.model in self._settings.served_models:
            # Another model's request: its own group (another model's workers) serves it.
            self.left_to_other_models += 1
            self._offsets.finished(tp, record.offset)
            await self._commit()
            return
        if event.request_id in self._active:  # a redelivery of what we already serve
            self._offsets.finished(tp, record.offset)
            return
        state = StreamState(event)
        state.trace = RequestTrace.next_hop(record.headers)  # a span of the request's trace
        state.trace.stamp(Hop.WORKER_IN, polled_ms)
        state.since_ms = record.timestamp
        state.queue_wait_ms = max(0.0, time.time() * 1000 - record.timestamp)
        metrics.QUEUE_WAIT.labels(self._engine.model_name).observe(state.queue_wait_ms / 1000)
        reason = self._recent_cancels.pop(event.request_id, None)
        if reason is not None:
            state.cancel_requested = True
            state.cancel_reason = reason
        self._active[event.request_id] = state
        self._by_partition.setdefault(tp, set()).add(event.request_id)
        self.peak_inflight = max(self.peak_inflight, len(self._active))
        self._report_inflight()
        self._tasks[event.request_id] = asyncio.create_task(
            self._serve(tp, record.offset, state), name=f"serve-{event.request_id}")

    async def _serve(self, tp: TopicPartition, offset: int, state: StreamState) -> None:
        request = state.request
        bound = log.bind(request_id=request.request_id, conversation_id=request.conversation_id,
                         trace_id=state.trace.trace_id if state.trace else None)
        try:
            progress = await self._progress.begin(request.request_id, state.since_ms)
            if progress.kind == "done":  # redelivered after it was answered: nothing to do
                bound.info("already_done")
            else:
                if progress.kind == "started":  # a member died or handed it over: continue it
                    state.resumed = await published_so_far(
                        self._settings, request.reply_to.partition, request.request_id,
                        progress.since_ms)
                    metrics.FAILOVERS.labels(self._engine.model_name).inc()
                    bound.info("resuming", next_seq=state.resumed.next_seq,
                               tokens=len(state.resumed.token_ids))
                completion = await self._streamer.run(state)
                if completion is None:
                    bound.info("handed_off", next_seq=state.next_seq)
                    return  # the offset stays uncommitted: the partition's next owner resumes
                await self._progress.done(request.request_id)
                self.completed += 1
                bound.info("request_done", finish_reason=completion.finish_reason,
                           completion_tokens=completion.usage.completion_tokens,
                           ttft_ms=completion.timings.time_to_first_token_ms,
                           total_ms=round(completion.timings.total_ms, 1))
        except asyncio.CancelledError:
            raise
        except KafkaError as exc:
            # The answer could not be published: leave the offset uncommitted so the request is
            # served again (by us after a restart, or by another member of the group).
            bound.error("publish_failed", error=repr(exc))
            return
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the worker
            bound.exception("request_failed")
            try:
                await self._streamer.fail(state, ErrorInfo(code="internal_error",
                                                           message=f"worker error: {exc}"))
            except KafkaError:
                return
        finally:
            self._active.pop(request.request_id, None)
            self._tasks.pop(request.request_id, None)
            self._by_partition.get(tp, set()).discard(request.request_id)
            self._report_inflight()
            self._slot_freed.set()
        self._offsets.finished(tp, offset)
        await self._commit()

    async def _reject_invalid(self, record: ConsumerRecord[bytes, bytes],
                              exc: InvalidEvent) -> None:
        """DLQ the message and, when the requester can be told, end its stream with the reason."""
        consumer_name = f"inference:{self.worker_id}"
        await send_to_dlq(self._publisher, record, error=exc.reason, consumer=consumer_name)
        metrics.DEAD_LETTERS.labels(consumer_name, record.topic).inc()
        reply = _reply_address(record.value)
        if reply is None:
            return
        request_id, conversation_id, reply_to = reply

        chunk = TokenChunk(request_id=request_id, conversation_id=conversation_id, seq=0,
                           finish_reason="error", worker_id=self.worker_id,
                           error=ErrorInfo(code="invalid_request", message=exc.reason))
        await self._publisher.publish(TopicName.TOKENS, chunk, partition=reply_to.partition)

    async def _hand_off(self, request_ids: set[str]) -> None:
        tasks = [self._tasks[i] for i in request_ids if i in self._tasks]
        for request_id in request_ids:
            state = self._active.get(request_id)
            if state is not None:
                state.handing_off = True
                if state.engine_id:
                    await self._engine.cancel(state.engine_id)
        if tasks:
            log.info("handing_off", inflight=len(tasks))
            await asyncio.wait(tasks, timeout=30)

    # --- offsets ---------------------------------------------------------------------------
    async def _commit(self) -> None:
        consumer = self._consumer
        offsets = self._offsets.committable()
        if consumer is None or not offsets:
            return
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self._offsets.mark_committed(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("commit_failed", error=repr(exc))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Hand over what we hold of the revoked partitions, commit, then let them go.

        Generation stops within a decode step and what was streamed stays on the reply
        partition; whichever member gets the partition resumes after it (often us again).
        """
        ids: set[str] = set()
        for tp in revoked:
            ids |= self._by_partition.get(tp, set())
        await self._hand_off(ids)
        await self._commit()
        self._offsets.forget(revoked)
        for tp in revoked:
            self._by_partition.pop(tp, None)


def _reply_address(value: bytes | None) -> tuple[str, str, ReplyTo] | None:
    """request_id, conversation_id and reply_to of a message that failed validation, if any."""
    try:
        raw = json.loads(value or b"")
        reply_to = ReplyTo.model_validate(raw["reply_to"])
        request_id, conversation_id = str(raw["request_id"]), str(raw["conversation_id"])

        TokenChunk(request_id=request_id, conversation_id=conversation_id, seq=0)
    except Exception:  # noqa: BLE001 - anything unusable means: nobody to tell
        return None
    return request_id, conversation_id, reply_to
