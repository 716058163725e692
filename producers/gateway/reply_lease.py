"""A gateway's lease on its reply partition of ``chat.tokens``, held in Redis.

Each gateway instance reads exactly one partition, so its read cost follows its own traffic, not
the total; two gateways never share one. The lease is ``SET key owner NX PX ttl``, renewed every
third of the TTL by a background task (only while we still own it), and deleted on stop. A
gateway that dies lets its lease expire after the TTL and the partition becomes free again.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatbus.errors import ConfigurationError
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import redis_errors
from schemas.topics import TopicName

log = get_logger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def default_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class NoFreePartition(ConfigurationError):
    """Every partition of the reply topic is leased by another gateway."""


class ReplyPartitionLease:
    """Owns one partition of the token topic while started."""

    def __init__(
        self, settings: Settings, redis: aioredis.Redis, *, owner: str | None = None
    ) -> None:
        self._settings = settings
        self._redis = redis
        self.owner = owner or settings.gateway.instance_id or default_owner()
        self._ttl_ms = int(settings.gateway.lease_ttl_s * 1000)
        self._topic = settings.topic(TopicName.TOKENS)
        self._renew: Any = redis.register_script(_RENEW)
        self._release: Any = redis.register_script(_RELEASE)
        self._renewer: asyncio.Task[None] | None = None
        self.partition: int | None = None
        self.lost = False  # True when renewal found someone else holding our partition

    def key(self, partition: int) -> str:
        """The Redis key of ``partition``'s lease (its value: the owner holding it)."""
        return f"chatbus:reply-lease:{self._topic}:{partition}"

    async def acquire(self, partitions: set[int]) -> int:
        """Lease a free partition of ``partitions`` and start renewing it; returns it."""
        if self.partition is not None:
            return self.partition
        order = sorted(partitions)
        random.shuffle(order)  # spread concurrent starters over the partitions
        for partition in order:
            with redis_errors("lease a reply partition"):
                won = await self._redis.set(
                    self.key(partition), self.owner, nx=True, px=self._ttl_ms
                )
            if won:
                self.partition = partition
                self._renewer = asyncio.create_task(self._renew_loop(), name="reply-lease")
                log.info(
                    "reply_partition_leased",
                    topic=self._topic,
                    partition=partition,
                    owner=self.owner,
                )
                return partition
        raise NoFreePartition(
            f"all {len(order)} partitions of {self._topic} are leased by other gateways; "
            "each gateway needs one of its own: raise CHATBUS_TOPIC_PARTITIONS and add "
            "partitions to the topic (or run fewer gateways)"
        )

    async def release(self) -> None:
        """Stop renewing and give the partition back (safe to call twice)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self.partition is None:
            return
        partition, self.partition = self.partition, None
        try:
            await self._release(keys=[self.key(partition)], args=[self.owner])
        except RedisError as exc:  # it expires on its own after the TTL
            log.warning("reply_lease_release_failed", partition=partition, error=repr(exc))

    async def renew_once(self) -> bool:
        """Extend the lease; re-take it if it expired meanwhile. False when someone else has it."""
        assert self.partition is not None
        key = self.key(self.partition)
        if await self._renew(keys=[key], args=[self.owner, self._ttl_ms]):
            return True
        return bool(await self._redis.set(key, self.owner, nx=True, px=self._ttl_ms))

    async def _renew_loop(self) -> None:
        interval = self._ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)  # the renewal period, not a wait for an event
            try:
                ok = await self.renew_once()
            except RedisError as exc:
                log.warning("reply_lease_renew_failed", partition=self.partition, error=repr(exc))
                continue
            if not ok and not self.lost:
                self.lost = True
                log.error("reply_lease_lost", partition=self.partition, owner=self.owner)
            elif ok and self.lost:
                self.lost = False
