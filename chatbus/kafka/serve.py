"""Run one long-lived process of chatbus: health endpoint, signals, lag reporter, start and stop.

Every long-lived consumer process goes through here:

* :func:`health_endpoint` serves ``/metrics``, ``/livez`` and ``/readyz`` (:mod:`chatbus.health`)
  on ``CHATBUS_METRICS_PORT`` for as long as the block runs;
* :func:`serve` runs an asyncio component (a :class:`Service`: the inference worker, the
  archiver) inside one: it starts the component and the lag reporter of its consumer group
  (``chatbus_consumer_lag_records``), waits for SIGTERM/SIGINT or for a loop of the component to
  fail, then stops both (the component drains, flushes, commits and leaves its group). A failed
  loop ends the process with an error, so whatever restarts processes restarts it;
* the stream processors run inside Faust's own worker (it owns their event loop and signals), so
  they use :func:`health_endpoint` and a :class:`~chatbus.kafka.lag.LagReporter` directly
  (``stream_processors/serve.py``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

from chatbus.errors import ChatbusError
from chatbus.health import Health, HealthServer, PostHandler
from chatbus.kafka.lag import LagReporter
from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)

__all__ = ["Service", "health_endpoint", "serve", "stop_signals"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol):
    """A long-lived component :func:`serve` can run (a consumer runtime is one)."""

    @property
    def group(self) -> str:
        """The consumer group whose lag the process reports."""
        ...

    @property
    def topics(self) -> list[str]:
        """The topics the group subscribes to."""
        ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def failed(self) -> BaseException:
        """Returns when a background loop ended on its own: what it raised."""
        ...


@contextmanager
def health_endpoint(
    settings: Settings, component: str, routes: Mapping[str, PostHandler] | None = None
) -> Iterator[Health]:
    """The process's :class:`Health`, served on ``settings.metrics_port`` (0: not served), with
    ``routes`` beside it (a mapping the process may fill once it has what they need)."""
    health = Health(component)
    server = (
        HealthServer(health, settings.metrics_port, settings.metrics_host, routes=routes)
        if settings.metrics_port
        else None
    )
    if server is not None:
        server.start()
    try:
        yield health
    finally:
        if server is not None:
            server.stop()


@asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event SIGTERM or SIGINT sets, for the block."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


async def serve(
    settings: Settings,
    component: str,
    build: Callable[[Health], Service],
    *,
    ready: str | None = None,
    routes: Mapping[str, PostHandler] | None = None,
) -> None:
    """Run ``build(health)`` until SIGTERM/SIGINT (then stop it) or until one of its loops
    fails (then stop it and raise). ``ready``: the readiness reason once started, for a
    component that does not report readiness itself; ``routes``: POST routes of its ops port
    (``build`` may fill the mapping)."""
    failed: BaseException | None = None
    with health_endpoint(settings, component, routes) as health:
        service = build(health)
        lag = LagReporter(settings, service.group, topics=service.topics)
        async with stop_signals() as stop:
            try:
                await service.start()
                await lag.start()
                if ready is not None:
                    health.set_ready(True, ready)
                failed = await _until_stopped(stop, service)
                if failed is None:
                    log.info("stop_signal", component=component)
                health.set_ready(False, "stopping")
            finally:
                try:
                    await lag.stop()
                finally:
                    await service.stop()
    if failed is not None:
        raise ChatbusError(
            f"the {component}'s loop failed ({type(failed).__name__}: {failed}); "
            "what it had not committed is redone after a restart"
        ) from failed


async def _until_stopped(stop: asyncio.Event, service: Service) -> BaseException | None:
    """Wait for the signal (None) or for a loop of ``service`` to fail (its error)."""
    signalled = asyncio.create_task(stop.wait(), name="stop-signal")
    failing = asyncio.create_task(service.failed(), name="loop-failure")
    try:
        await asyncio.wait({signalled, failing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (signalled, failing):
            task.cancel()
        await asyncio.gather(signalled, failing, return_exceptions=True)
    if failing.cancelled():
        return None
    return failing.exception() or failing.result()
