"""A gateway served in-process by uvicorn on a free port, API keys in the real MongoDB, and the
fixtures of a real worker + gateway (a pytest plugin of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from chatbus.api_keys import ApiKeyStore, create_key
from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.worker import InferenceWorker
from producers.gateway import GatewayRuntime, create_app


@dataclass
class RunningGateway:
    url: str
    runtime: GatewayRuntime

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """Serve a gateway until the block ends; fails fast when it cannot start."""
    runtime = GatewayRuntime(settings)
    config = uvicorn.Config(
        create_app(settings, runtime),
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="gateway")

    async def started() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("the gateway exited during startup")
        return server.started

    try:
        await eventually(started, timeout_s=60, what="the gateway to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningGateway(f"http://127.0.0.1:{port}", runtime)
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def api_key(settings: Settings, user: str) -> AsyncIterator[str]:
    """A fresh key of ``user``, deleted (with every key of that user) afterwards."""
    key, _ = await asyncio.to_thread(create_key, settings, user)
    try:
        yield key
    finally:
        await delete_keys_of(settings, user)


async def delete_keys_of(settings: Settings, user: str) -> None:
    """Every API key of ``user`` gone (a test's cleanup)."""
    store = ApiKeyStore(settings)
    await store.start()
    try:
        await store.delete_user(user)
    finally:
        await store.stop()


# --- fixtures: a real worker on the demo model and a real gateway in front of it -------------
@pytest.fixture
def settings(bus: Settings, demo_model_path: Path) -> Settings:
    return bus.replace(**{"model_path": demo_model_path, "max_inflight": 4})


@asynccontextmanager
async def running_worker(settings: Settings, worker_id: str) -> AsyncIterator[InferenceWorker]:
    """A worker on the settings' model, on CPU, until the block ends."""
    engine = TransformersEngine(
        settings.resolved_model_path,
        model_name=settings.model.name,
        device="cpu",
        max_batch=settings.worker.max_inflight,
    )
    async with InferenceWorker(settings, engine, worker_id=worker_id) as running:
        yield running


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[InferenceWorker]:
    async with running_worker(settings, "gateway-test-worker") as running:
        yield running


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def key(settings: Settings) -> AsyncIterator[str]:
    async with api_key(settings, f"user-{uuid.uuid4().hex[:8]}") as created:
        yield created
