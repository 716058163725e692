"""The inference worker: a member of its model's consumer group that serves requests.

It holds at most ``max_inflight`` requests; when full it pauses its partitions, so overload shows
as consumer lag on the group. Offsets are committed only after a request's completion is on the
broker. Cancels arrive on ``chat.control``, which every worker reads in full.

The consumer plumbing (lifecycle, poll loop, pause on back-pressure, commits, rebalance hooks,
heartbeats) is :class:`chatbus.kafka.consumer_runtime.ConsumerRuntime`'s; this module is what a
worker does with a request.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from chatbus.errors import ChatbusError, InvalidEvent
from chatbus.health import Health
from chatbus.history import ContextStore, HistoryRepository
from chatbus.kafka import EventPublisher, decode_event, make_consumer
from chatbus.kafka.consumer_runtime import ConsumerRuntime, Fetched
from chatbus.kafka.dlq import reject_request
from chatbus.kafka.groups import inference_group
from chatbus.kafka.startup import start_client
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.tracing import Hop, RequestTrace, now_ms
from inference_consumers import metrics
from inference_consumers.engine import InferenceEngine
from inference_consumers.offsets import OffsetTracker
from inference_consumers.progress import Progress, ProgressStore
from inference_consumers.request_stream import RequestStreamer, StreamState
from inference_consumers.resume import ReplyReader
from schemas.events import CancelRequest, ChatRequest, ErrorInfo
from schemas.topics import TopicName

log = get_logger(__name__)

_RECENT_CANCELS = 10_000
HOLD_ACK_TIMEOUT_S = 10.0  # a revoke waits this long for held streams' sends to be acknowledged
# A worker renews the leases of the streams it serves every LEASE_RENEW_S; one that dies loses
# them LEASE_MS later (about when its group notices). A stream on a partition that moved away
# publishes only until LEASE_MARGIN_S before its lease could lapse.
LEASE_MS = 1_000
LEASE_RENEW_S = 0.25
LEASE_MARGIN_S = 0.25
WATCH_POLL_S = 0.1  # how often a stream served elsewhere is looked at


def lease_deadline(sent_at: float) -> float:
    """Until when (monotonic) a lease claimed or renewed by a call sent at ``sent_at`` lets a
    stream on a moved partition publish: before Redis can let the lease lapse."""
    return sent_at + LEASE_MS / 1000 - LEASE_MARGIN_S


def group_id_for(settings: Settings, model_name: str) -> str:
    """One consumer group per model."""
    return inference_group(settings, model_name)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InferenceWorker(ConsumerRuntime):
    """Consumes requests for one model and serves them on an engine."""

    component = "worker"
    dlq_consumer = "inference"
    restart_on = (KafkaError, ChatbusError)  # a broker hiccup restarts a loop, with backoff

    def __init__(
        self,
        settings: Settings,
        engine: InferenceEngine,
        *,
        input_topic: str | None = None,
        worker_id: str | None = None,
        health: Health | None = None,
    ) -> None:
        worker_id = worker_id or settings.worker.id or default_worker_id()
        super().__init__(
            settings,
            group=group_id_for(settings, engine.model_name),
            topics=[settings.topic(input_topic or settings.worker.input_topic)],
            client_id=f"worker-{worker_id}",
            health=health,
            max_poll_interval_ms=300_000,
            # a dead worker's streams stall until the group notices: worker.session_timeout_ms
            session_timeout_ms=settings.inference_session_timeout_ms,
            heartbeat_interval_ms=settings.inference_heartbeat_interval_ms,
        )
        self._engine = engine
        self.worker_id = worker_id
        self._publisher = EventPublisher(settings, client_id=f"worker-{self.worker_id}")
        self._history = HistoryRepository(settings)
        self._context = ContextStore(settings, self._history)
        self._streamer = RequestStreamer(
            settings, engine, self._publisher, self.worker_id, context=self._context
        )
        self._control: AIOKafkaConsumer | None = None
        self._offsets = OffsetTracker()
        self._active: dict[str, StreamState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._by_partition: dict[TopicPartition, set[str]] = {}
        self._records: dict[str, tuple[TopicPartition, int]] = {}  # request → its record
        self._held: set[str] = set()  # requests revoked and not yet settled by an assignment
        self._watching: set[str] = set()  # requests another member serves under its lease
        self._recent_cancels: OrderedDict[str, str] = OrderedDict()  # request_id → reason
        self._progress = ProgressStore(settings, worker_id, lease_ms=LEASE_MS)
        self._replies = ReplyReader(settings, client_id=f"worker-{worker_id}-resume")
        self._drain_timeout_s = 30.0
        self.peak_inflight = 0  # most requests held at once
        self.completed = 0  # requests this worker answered to the end
        self.left_to_other_models = 0  # requests for a model another group serves
        self.resumed = 0  # requests continued after what an earlier attempt streamed
        self.held_kept = 0  # streams held by a rebalance that went on where they were
        self.held_handed_off = 0  # streams held by a rebalance, then handed over
        self.held_moved = 0  # streams held by a rebalance that moved, finished here under lease
        self.watched = 0  # requests found served by another member under its lease

    # --- lifecycle -------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Engine, stores, publisher and the control topic's reader, before joining the group
        (closed in reverse order on stop)."""
        await self._engine.start()
        self.closing(self._engine.stop)
        self.closing(self._history.close)
        self.closing(self._context.close)
        self.closing(self._progress.stop)
        await self._publisher.start()
        self.closing(self._publisher.stop)
        await self._replies.start()
        self.closing(self._replies.stop)
        self._control = make_consumer(
            self.settings,
            group_id=None,
            client_id=f"worker-{self.worker_id}-control",
            auto_offset_reset="latest",
        )
        await start_client(self.settings, self._control)
        self.closing(self._control.stop)
        control_tps = [
            TopicPartition(self.settings.topic(TopicName.CONTROL), p)
            for p in sorted(await self._publisher.partitions_for(TopicName.CONTROL))
        ]
        self._control.assign(control_tps)
        await self._control.seek_to_end(*control_tps)
        self.spawn_loop("control", self._control_loop)
        self.spawn_loop("leases", self._lease_loop)
        log.info(
            "worker_serving",
            worker_id=self.worker_id,
            model=self._engine.model_name,
            max_inflight=self.settings.worker.max_inflight,
        )

    async def stop(self, *, drain_timeout_s: float = 30.0) -> None:
        """Stop taking work, finish what is in flight (up to the timeout), leave the group."""
        self._drain_timeout_s = drain_timeout_s
        await super().stop()

    async def on_stop(self) -> None:
        """Finish what is in flight (up to the drain timeout); hand the rest to the group."""
        await self._hand_off(set(self._watching), wait=False)  # others serve those: stop looking
        pending = list(self._tasks.values())
        if not pending:
            return
        log.info("draining", inflight=len(pending))
        _, late = await asyncio.wait(pending, timeout=self._drain_timeout_s)
        if late:  # not finished in time: hand them to the group instead
            await self._hand_off(set(self._active))
        left = [task for task in self._tasks.values() if not task.done()]
        for task in left:  # not even handed over: uncommitted, so served again elsewhere
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def on_loops_ended(self) -> None:
        await self._commit()

    @property
    def inflight(self) -> int:
        return len(self._active)

    @property
    def context(self) -> ContextStore:
        """The conversation context this worker reads (its Redis and MongoDB counters)."""
        return self._context

    @property
    def admission_pauses(self) -> int:
        """Times the partitions were paused for want of a slot (or to stop)."""
        return self.back_pressure_pauses

    # --- loops -----------------------------------------------------------------------------
    def capacity(self) -> int:
        """Free slots: a request that another member serves (watched) takes none."""
        return self.settings.worker.max_inflight - len(self._active) + len(self._watching)

    async def on_batch(self, fetched: Fetched) -> None:
        for tp, records in fetched.items():
            for record in records:
                await self._admit(tp, record)

    async def _control_loop(self) -> None:
        control = self._control
        assert control is not None
        while not self.stopping:
            self.beat("control")
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

    async def _lease_loop(self) -> None:
        """Renew the leases of the streams this worker serves; stop those another member took,
        and those on a moved partition whose lease could not be renewed in time."""
        while not (self.stopping and not self._active):
            self.beat("leases")
            serving = [
                request_id
                for request_id, state in self._active.items()
                if state.lease_held and not state.handing_off
            ]
            sent = time.monotonic()
            lost = await self._progress.renew(serving)
            if lost is not None:
                for request_id in serving:
                    state = self._active.get(request_id)
                    if state is not None and request_id not in lost:
                        state.lease_until = lease_deadline(sent)
                if lost:
                    log.warning("leases_lost", requests=sorted(lost))
            expired = {
                request_id
                for request_id, state in self._active.items()
                if state.moved and state.handed_over and not state.handing_off
            }
            if lost or expired:
                await self._hand_off((lost or set()) | expired, wait=False)
            await asyncio.sleep(LEASE_RENEW_S)

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
        metrics.OCCUPANCY.labels(model).set(len(self._active) / self.settings.worker.max_inflight)

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
        if event.model != self._engine.model_name and event.model in self.settings.served_models:
            # Another model's request: its own group (another model's workers) serves it.
            self.left_to_other_models += 1
            self._offsets.finished(tp, record.offset)
            await self._commit()
            return
        if event.request_id in self._active:  # a redelivery of what we already serve
            if self._records.get(event.request_id) != (tp, record.offset):
                self._offsets.finished(tp, record.offset)  # a copy at another offset: done
            else:  # the same record, fetched again after its partition came back: in flight
                self._active[event.request_id].moved = False
                self._by_partition.setdefault(tp, set()).add(event.request_id)
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
        self._records[event.request_id] = (tp, record.offset)
        self._by_partition.setdefault(tp, set()).add(event.request_id)
        self.peak_inflight = max(self.peak_inflight, len(self._active))
        self._report_inflight()
        self._tasks[event.request_id] = asyncio.create_task(
            self._serve(tp, record.offset, state), name=f"serve-{event.request_id}"
        )

    async def _serve(self, tp: TopicPartition, offset: int, state: StreamState) -> None:
        request = state.request
        bound = log.bind(
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            trace_id=state.trace.trace_id if state.trace else None,
        )
        try:
            claimed_at = time.monotonic()
            progress = await self._progress.begin(request.request_id, state.since_ms)
            state.lease_until = lease_deadline(claimed_at)
            state.lease_held = progress.kind != "leased"
            if progress.kind == "leased":  # its partition moved here; its worker serves it on
                bound.info("watching", owner=progress.owner)
                watched = await self._watch(state, progress)
                if watched is None:
                    bound.info("watch_ended")
                    return  # the partition went on: its next owner looks at the request
                progress = watched
            if progress.kind == "done":  # redelivered after it was answered: nothing to do
                bound.info("already_done")
            else:
                if progress.kind == "started":  # a member died or handed it over: continue it
                    state.resumed = await self._replies.published_so_far(
                        request.reply_to.partition,
                        request.request_id,
                        progress.since_ms,
                    )
                    metrics.FAILOVERS.labels(self._engine.model_name).inc()
                    self.resumed += 1
                    bound.info(
                        "resuming",
                        next_seq=state.resumed.next_seq,
                        tokens=len(state.resumed.token_ids),
                    )
                completion = await self._streamer.run(state)
                if completion is None:
                    bound.info("handed_off", next_seq=state.next_seq, moved=state.moved)
                    await self._progress.release(request.request_id)
                    return  # the offset stays uncommitted: the partition's next owner resumes
                await self._progress.done(request.request_id)
                self.completed += 1
                bound.info(
                    "request_done",
                    finish_reason=completion.finish_reason,
                    completion_tokens=completion.usage.completion_tokens,
                    ttft_ms=completion.timings.time_to_first_token_ms,
                    total_ms=round(completion.timings.total_ms, 1),
                )
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
                await self._streamer.fail(
                    state, ErrorInfo(code="internal_error", message=f"worker error: {exc}")
                )
            except KafkaError:
                return
        finally:
            self._active.pop(request.request_id, None)
            self._tasks.pop(request.request_id, None)
            self._records.pop(request.request_id, None)
            self._held.discard(request.request_id)
            self._by_partition.get(tp, set()).discard(request.request_id)
            self._report_inflight()
            self.capacity_freed()
        self._offsets.finished(tp, offset)
        await self._commit()

    async def _watch(self, state: StreamState, progress: Progress) -> Progress | None:
        """Wait while another member serves this request under its lease: ``done`` when it has
        answered it, ``started`` once its lease is gone and this worker took it (resume it),
        None when this worker let the partition go first."""
        request_id = state.request.request_id
        self.watched += 1
        self._watching.add(request_id)
        self.capacity_freed()
        unknown_since: float | None = None
        try:
            while not state.handing_off:
                lease = await self._progress.lease_state(request_id)
                if lease == "unknown":  # Redis is down: its worker stops within a lease
                    unknown_since = unknown_since or time.monotonic()
                    lease = "free" if time.monotonic() - unknown_since > LEASE_MS / 1000 else "held"
                if lease == "done":
                    return Progress("done")
                if lease == "free":
                    claimed_at = time.monotonic()
                    if not await self._progress.take(request_id):  # taken ("" or no answer)
                        state.lease_until = lease_deadline(claimed_at)
                        state.lease_held = True
                        return Progress("started", progress.since_ms)
                await asyncio.sleep(WATCH_POLL_S)
            return None
        finally:
            self._watching.discard(request_id)

    async def _reject_invalid(
        self, record: ConsumerRecord[bytes, bytes], exc: InvalidEvent
    ) -> None:
        """DLQ the message and, when the requester can be told, end its stream with the reason."""
        await reject_request(
            self._publisher,
            record,
            error=exc.reason,
            consumer=self.dlq_consumer,
            member=self.worker_id,
            worker_id=self.worker_id,
        )

    async def _hand_off(self, request_ids: set[str], *, wait: bool = True) -> None:
        """Stop these streams without a final chunk (the partition's next owner continues
        them); ``wait``: until their tasks have ended."""
        tasks = [self._tasks[i] for i in request_ids if i in self._tasks]
        for request_id in request_ids:
            self._held.discard(request_id)
            state = self._active.get(request_id)
            if state is not None:
                state.handing_off = True
                if state.engine_id:
                    await self._engine.cancel(state.engine_id)
                state.hold.open()  # it publishes nothing more: it sees handing_off
        if tasks:
            log.info("handing_off", inflight=len(tasks))
            if wait:
                await asyncio.wait(tasks, timeout=30)

    async def _hold(self, request_ids: set[str]) -> None:
        """Hold these streams until the next assignment says whether they stay: they generate
        on but publish nothing; returns once what they sent is on the broker."""
        states = [self._active[i] for i in request_ids if i in self._active]
        if not states:
            return
        await asyncio.gather(*(state.hold.close() for state in states))
        # a stream whose last publish was under way may have ended meanwhile: nothing to hold
        states = [s for s in states if self._active.get(s.request.request_id) is s]
        self._held.update(state.request.request_id for state in states)
        sending = [s.last_send for s in states if s.last_send and not s.last_send.done()]
        if sending:
            await asyncio.wait(sending, timeout=HOLD_ACK_TIMEOUT_S)
        log.info("holding", inflight=len(states))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Held streams whose partition came back go on publishing; the others are handed over
        (their partition's new owner continues them after what is on the broker)."""
        kept: list[str] = []
        moved: list[str] = []
        gone: set[str] = set()
        now = time.monotonic()
        for request_id in sorted(self._held):
            state, record = self._active.get(request_id), self._records.get(request_id)
            if state is None or record is None:  # it ended while held
                continue
            tp, offset = record
            if tp in assigned:
                self._offsets.started(tp, offset)
                self._by_partition.setdefault(tp, set()).add(request_id)
                state.moved = False
                state.hold.open()
                kept.append(request_id)
            elif state.lease_held and now < state.lease_until:
                state.moved = True  # the new owner watches it while its lease lives
                state.hold.open()
                moved.append(request_id)
            else:
                gone.add(request_id)
        self._held.clear()
        self.held_kept += len(kept)
        self.held_moved += len(moved)
        self.held_handed_off += len(gone)
        model = self._engine.model_name
        metrics.HELD_STREAMS.labels(model, "kept").inc(len(kept))
        metrics.HELD_STREAMS.labels(model, "moved").inc(len(moved))
        metrics.HELD_STREAMS.labels(model, "handed_off").inc(len(gone))
        await self._hand_off(gone, wait=False)
        if kept or moved or gone:
            log.info("held_streams_settled", kept=len(kept), moved=len(moved), handed_off=len(gone))

    # --- offsets ---------------------------------------------------------------------------
    async def _commit(self) -> None:
        """Commit what is answered to the end, up to the first request still in flight."""
        committed = await self.commit(self._offsets.committable())
        if committed:
            self._offsets.mark_committed(committed)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Hold the revoked partitions' streams until the assignment (stopping: hand them
        over), commit, then let the partitions go.

        A held stream publishes nothing until :meth:`on_assigned` gives its partition back
        (it goes on where it was, its cache intact) or not (it is handed over: generation stops
        within a decode step, and the new owner resumes after what is on the reply partition).
        """
        ids: set[str] = set()
        for tp in revoked:
            ids |= self._by_partition.get(tp, set())
        if self.stopping:
            await self._hand_off(ids)
        else:
            await self._hold(ids)
        await self._commit()
        self._offsets.forget(revoked)
        for tp in revoked:
            self._by_partition.pop(tp, None)
