"""chatbus itself: one ``chatbus worker`` process on fresh topics, driven through ``ChatClient``.

Besides what the client sees, the worker's ``Completion`` events (``chat.completions``) are read
to split each request's time to first token into stages: Kafka to the worker (``queue_wait``),
the worker's own TTFT (admission → first engine token) and the rest (chunk publish → client).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from contextlib import AsyncExitStack

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.stages import WorkerTimings
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.system import READY_TIMEOUT_S, ManagedSystem
from benchmarks.inference.workload import Messages
from chatbus.errors import InvalidEvent
from chatbus.kafka import decode_event, make_consumer
from chatbus.kafka.topic_setup import admin_client, ensure_topics
from chatbus.polling import eventually
from chatbus.settings import Settings
from infra.local import process
from producers.sdk import ChatClient
from schemas.events import Completion, SamplingParams
from schemas.topics import TOPICS, TopicName

STOP_TIMEOUT_S = 60.0


class BusSystem(ManagedSystem):
    """Requests over Kafka to a worker process this object starts and stops."""

    name = "chatbus-bus"

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        run_id = uuid.uuid4().hex[:10]
        self.settings: Settings = config.settings.model_copy(
            update={"topic_prefix": f"bench-{run_id}."}
        )
        self._process_name = f"bench-worker-{run_id}"
        self._stack = AsyncExitStack()
        self._client: ChatClient | None = None
        self._completions: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self.completions: dict[str, Completion] = {}

    def worker_env(self) -> dict[str, str]:
        s = self.settings
        worker = s.replace(
            inference_input_topic="chat.requests",  # the bus, no moderation
            model_path=s.resolved_model_path,
            worker_id=self._process_name,
            metrics_port=0,
        )
        return worker.as_env() | {"HF_HUB_OFFLINE": "1"}

    @property
    def worker_pid(self) -> int | None:
        return process.running_pid(self.settings, self._process_name)

    def processes(self) -> dict[str, int]:
        found = {
            "worker": self.worker_pid,
            "kafka": process.running_pid(self._config.settings, "kafka"),
        }
        return {name: pid for name, pid in found.items() if pid}

    async def _start(self) -> None:
        await ensure_topics(self.settings)
        self._stack.push_async_callback(self._delete_topics)
        argv = [sys.executable, "-m", "chatbus.cli", "worker"]
        await asyncio.to_thread(
            process.spawn, self.settings, self._process_name, argv, self.worker_env()
        )
        self._stack.push_async_callback(self._stop_worker)
        self._client = await self._stack.enter_async_context(
            ChatClient(self.settings, client_id="chatbus-bench")
        )
        await self._start_completions_reader()
        await self._first_answer()

    async def _stop(self) -> None:
        await self._stack.aclose()

    async def _stop_worker(self) -> None:
        await asyncio.to_thread(process.stop, self.settings, self._process_name, STOP_TIMEOUT_S)

    async def _delete_topics(self) -> None:
        async with admin_client(self.settings) as admin:
            await admin.delete_topics([self.settings.topic(t) for t in TOPICS])

    async def _start_completions_reader(self) -> None:
        topic = self.settings.topic(TopicName.COMPLETIONS)
        # No group: the consumer takes every partition of the topic, from its end.
        consumer = make_consumer(
            self.settings,
            topic,
            group_id=None,
            client_id="chatbus-bench-completions",
            auto_offset_reset="latest",
        )
        await consumer.start()
        self._stack.push_async_callback(consumer.stop)

        async def assigned() -> set[TopicPartition]:
            return set(consumer.assignment())

        for tp in await eventually(assigned, timeout_s=30, what=f"partitions of {topic}"):
            await consumer.position(tp)  # resolve "latest" now, before any request is sent
        self._reader = asyncio.create_task(self._read_completions(consumer), name="completions")
        self._stack.push_async_callback(self._cancel_reader)

    async def _cancel_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read_completions(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            try:
                event = decode_event(record.topic, record.value, ("chat.completion",))
            except InvalidEvent:
                continue
            assert isinstance(event, Completion)
            self.completions[event.request_id] = event

    async def _first_answer(self) -> None:
        """Wait (with a deadline) until the worker has loaded the model and answered once."""
        answer = asyncio.create_task(self.stream([{"role": "user", "content": "warm up"}], 4))

        async def served() -> bool:
            if answer.done():
                answer.result()  # raises what the request raised
                return True
            if (
                await asyncio.to_thread(process.running_pid, self.settings, self._process_name)
                is None
            ):
                raise BenchError(
                    "chatbus worker exited; see "
                    f"{process.log_file(self.settings, self._process_name)}"
                )
            return False

        try:
            await eventually(
                served,
                timeout_s=self._ready_timeout_s,
                interval=0.2,
                what="the chatbus worker's first answer",
            )
        finally:
            if not answer.done():
                answer.cancel()
                await asyncio.gather(answer, return_exceptions=True)

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        client = self._client
        if client is None:
            raise BenchError("the chatbus client is not started")
        sampling = SamplingParams(
            temperature=self._config.temperature,
            top_p=self._config.top_p,
            max_tokens=max_new_tokens,
        )
        trace = StreamTrace(sent_at=time.perf_counter())
        request = await client.send(messages, model=self.settings.model.name, sampling=sampling)
        trace.request_id = request.request_id
        async for chunk in client.chunks(request.request_id, timeout_s=self._ready_timeout_s):
            now = time.perf_counter()
            trace.add(now, len(chunk.token_ids))
            if chunk.is_last:
                trace.finish(now, chunk.finish_reason)
        return trace

    async def worker_timings(
        self, request_ids: list[str], timeout_s: float = 30.0
    ) -> dict[str, WorkerTimings]:
        """The worker's own timings of ``request_ids`` (waits for their completions)."""

        async def all_in() -> bool:
            return all(i in self.completions for i in request_ids)

        try:
            await eventually(all_in, timeout_s=timeout_s, what="the requests' completions")
        except TimeoutError:
            pass  # report on those that arrived
        return {
            i: WorkerTimings(c.timings.queue_wait_ms, c.timings.time_to_first_token_ms)
            for i in request_ids
            if (c := self.completions.get(i)) is not None
        }
