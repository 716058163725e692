"""Which models are really being served: those whose worker group has live members right now.

``GET /v1/models`` lists the configured models (``CHATBUS_GATEWAY_MODELS``, or the local ones)
whose consumer group the broker shows with at least one member, asked at most every
``TTL_S`` seconds. A configured model with no worker up is left out of the list but still
accepted (its requests wait on the bus until a worker joins, which is what an SRE scales on);
a model that is not configured is refused with 404 ``model_not_found``.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.errors import KafkaError

from chatbus.errors import ChatbusError
from chatbus.kafka.groups import inference_group, live_groups
from chatbus.logging import get_logger
from chatbus.settings import Settings

__all__ = ["ServedModels"]

log = get_logger(__name__)

TTL_S = 5.0
LOOKUP_TIMEOUT_S = 3.0


class ServedModels:
    """The configured models that have a live worker group, cached for ``ttl_s``."""

    def __init__(self, settings: Settings, ttl_s: float = TTL_S) -> None:
        self._settings = settings
        self._ttl_s = ttl_s
        self._cached: tuple[str, ...] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> tuple[str, ...]:
        return self._settings.served_models

    async def live(self) -> tuple[str, ...]:
        async with self._lock:
            if self._cached is None or time.monotonic() - self._at > self._ttl_s:
                self._cached = await self._lookup()
                self._at = time.monotonic()
            return self._cached

    async def _lookup(self) -> tuple[str, ...]:
        groups = {inference_group(self._settings, m): m for m in self.configured}
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                live = await live_groups(self._settings, groups)
        except (KafkaError, ChatbusError, OSError, TimeoutError) as exc:
            # The broker cannot say: list what is configured rather than nothing.
            log.warning("served_models_unknown", error=repr(exc))
            return self.configured
        return tuple(m for g, m in groups.items() if g in live)
