"""What one gateway process holds while it runs, started in order and stopped in reverse.

Redis (leases, rate limits) → PostgreSQL (API keys, budgets, usage) → MongoDB (conversations,
stored responses) → the prompt
tokenizer → the reply-partition lease and the one :class:`ChatClient` that multiplexes every
request of the process. ``stop`` closes whatever ``start`` opened, in ``finally`` order, even
when ``start`` failed half-way.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from chatbus.api_keys import ApiKeyStore
from chatbus.errors import require_started
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import redis_client, redis_errors
from producers.gateway.backend import BusChatBackend, TokenizerPromptCounter
from producers.gateway.budget import BudgetBook
from producers.gateway.conversations import ConversationService
from producers.gateway.moderation_client import ModerationClient
from producers.gateway.rate_limit import RateLimiter
from producers.gateway.reply_lease import ReplyPartitionLease
from producers.gateway.responses import MongoResponseStore, ResponsesService
from producers.gateway.resume import RedisStreamDirectory, StreamKeeper
from producers.gateway.served_models import ServedModels
from producers.gateway.serving import ChatCompletionService
from producers.sdk import ChatClient

log = get_logger(__name__)


class GatewayRuntime:
    """The gateway's long-lived resources; ``start``/``stop`` are safe to call twice."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack: AsyncExitStack | None = None
        self._keys: ApiKeyStore | None = None
        self._budgets: BudgetBook | None = None
        self._limiter: RateLimiter | None = None
        self._lease: ReplyPartitionLease | None = None
        self._service: ChatCompletionService | None = None
        self._client: ChatClient | None = None
        self._conversations: ConversationService | None = None
        self._responses: ResponsesService | None = None
        self._moderation: ModerationClient | None = None
        self.models = ServedModels(settings)

    @property
    def keys(self) -> ApiKeyStore:
        return require_started(self._keys, "gateway")

    @property
    def budgets(self) -> BudgetBook:
        return require_started(self._budgets, "gateway")

    @property
    def limiter(self) -> RateLimiter:
        return require_started(self._limiter, "gateway")

    @property
    def lease(self) -> ReplyPartitionLease:
        return require_started(self._lease, "gateway")

    @property
    def conversations(self) -> ConversationService:
        return require_started(self._conversations, "gateway")

    @property
    def service(self) -> ChatCompletionService:
        return require_started(self._service, "gateway")

    @property
    def responses(self) -> ResponsesService:
        return require_started(self._responses, "gateway")

    @property
    def moderation(self) -> ModerationClient:
        return require_started(self._moderation, "gateway")

    @property
    def bus(self) -> ChatClient:
        """The gateway's client of the bus (its producer publishes appeals too)."""
        return require_started(self._client, "gateway")

    @property
    def reply_partition(self) -> int | None:
        return None if self._lease is None else self._lease.partition

    async def start(self) -> None:
        if self._stack is not None:
            return
        settings = self.settings
        stack = AsyncExitStack()
        self._stack = stack
        try:
            redis = redis_client(settings)
            stack.push_async_callback(redis.aclose)
            with redis_errors(f"start the gateway ({settings.redis.url})"):
                await redis.ping()
            self._limiter = RateLimiter(
                redis,
                prefix=settings.kafka.topic_prefix,
                requests_per_minute=settings.gateway.requests_per_minute,
                tokens_per_minute=settings.gateway.tokens_per_minute,
            )
            keys = ApiKeyStore(settings)
            stack.push_async_callback(keys.stop)
            await keys.start()
            self._keys = keys
            self._budgets = BudgetBook(keys.pool, cache_s=settings.postgres.usage_cache_s)
            conversations = ConversationService(settings)
            stack.push_async_callback(conversations.stop)
            await conversations.start()
            self._conversations = conversations
            stored_responses = MongoResponseStore(settings)
            stack.push_async_callback(stored_responses.stop)
            await stored_responses.start()
            counter = await TokenizerPromptCounter.load(settings.resolved_model_path)
            lease = ReplyPartitionLease(settings, redis)
            stack.push_async_callback(lease.release)
            self._lease = lease
            client = ChatClient(
                settings, client_id=f"gateway-{lease.owner}", choose_partition=lease.acquire
            )
            await client.start()
            stack.push_async_callback(client.stop)
            self._client = client
            keeper = StreamKeeper(
                RedisStreamDirectory(
                    redis,
                    prefix=settings.kafka.topic_prefix,
                    ttl_s=settings.gateway.resume_ttl_s,
                    lease_key=lease.key,
                ),
                grace_s=settings.gateway.resume_grace_s,
            )
            service = ChatCompletionService(
                BusChatBackend(client, settings),
                counter,
                models=settings.served_models,
                default_max_tokens=settings.model.default_max_tokens,
                max_messages=settings.gateway.max_messages,
                keeper=keeper,
                request_timeout_s=settings.gateway.request_timeout_s,
                owner=lease.owner,
            )
            stack.push_async_callback(service.drain)  # pending cancels go out before the client
            self._service = service
            self._responses = ResponsesService(service, stored_responses)
            moderation = ModerationClient(settings.moderation.service_url)
            stack.push_async_callback(moderation.stop)
            self._moderation = moderation
        except BaseException:
            await self.stop()
            raise
        log.info(
            "gateway_started",
            reply_partition=lease.partition,
            owner=lease.owner,
            models=list(settings.served_models),
        )

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()
        finally:
            self._service = self._client = None
            self._responses = None
            self._moderation = None
            self._keys = self._limiter = None
            self._conversations = None
            self._lease = None
            log.info("gateway_stopped")
