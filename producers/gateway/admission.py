"""Who may send a request, and whether their key has room for it right now.

Both steps leave what the response must say in the request's state: the ``x-ratelimit-*``
headers (on every answer to an authenticated request, errors included) and, on refusal, a 401
or a 429 with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from chatbus.api_keys import KeyVerifier, Principal
from producers.gateway import metrics
from producers.gateway.budget import BudgetBook
from producers.gateway.errors import APIError
from producers.gateway.protocol import UsageInfo
from producers.gateway.rate_limit import Decision, Kind, RateLimiter

HEADERS_STATE = "chatbus_headers"  # request.state field: headers added to the response


def response_headers(request: HTTPConnection) -> dict[str, str]:
    """The headers collected for this request's response (created on first use)."""
    headers: dict[str, str] | None = getattr(request.state, HEADERS_STATE, None)
    if headers is None:
        headers = {}
        setattr(request.state, HEADERS_STATE, headers)
    return headers


#: The WebSocket subprotocol a browser offers with ``bearer.<key>`` beside it: a browser cannot
#: set ``Authorization`` on a WebSocket handshake, so it sends the key this way.
BROWSER_PROTOCOL = "chatbus.v1"


def browser_key(connection: HTTPConnection) -> str | None:
    """The key a browser's WebSocket handshake offers as subprotocol ``bearer.<key>`` (beside
    :data:`BROWSER_PROTOCOL`), or None."""
    offered = [p.strip() for p in connection.headers.get("sec-websocket-protocol", "").split(",")]
    if BROWSER_PROTOCOL not in offered:
        return None
    return next((p.removeprefix("bearer.") for p in offered if p.startswith("bearer.")), None)


async def authenticate(request: HTTPConnection, keys: KeyVerifier) -> Principal:
    """The principal of ``Authorization: Bearer <key>`` (a request's, or a WebSocket handshake's,
    where a browser may offer it as a subprotocol instead: :func:`browser_key`); 401 in OpenAI's
    shape otherwise."""
    header = request.headers.get("authorization", "")
    if not header and request.scope["type"] == "websocket" and (key := browser_key(request)):
        header = f"Bearer {key}"
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer "
            "cb-...'; create one with `chatbus keys create --user NAME`.",
            code="missing_api_key",
        )
    principal = await keys.verify(key)
    if principal is None:
        raise APIError(401, f"Incorrect API key provided: {_redact(key)}.", code="invalid_api_key")
    return principal


def _redact(key: str) -> str:
    return key[:5] + "*" * 4 + key[-4:] if len(key) > 12 else "*" * len(key)


@dataclass
class Reservation:
    """Tokens reserved for one answer; :meth:`settle` replaces them by the actual usage."""

    limiter: RateLimiter
    key_id: str
    window: int
    reserved: int
    settled: bool = field(default=False)

    async def settle(self, usage: UsageInfo) -> None:
        if self.settled:
            return
        self.settled = True
        await self.limiter.settle(self.key_id, self.window, self.reserved, usage.total_tokens)


class Limits:
    """The rate limits of one request's key."""

    def __init__(
        self,
        limiter: RateLimiter,
        principal: Principal,
        request: HTTPConnection,
        budgets: BudgetBook | None = None,
    ) -> None:
        self._limiter = limiter
        self._principal = principal
        self._headers = response_headers(request)
        self._budgets = budgets

    async def _admit(self, kind: Kind, amount: int) -> Decision:
        principal = self._principal
        own = principal.requests_per_minute if kind == "requests" else principal.tokens_per_minute
        decision = await self._limiter.admit(principal.key_id, kind, amount, own)
        self._headers.update(decision.quota.headers())
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(kind).inc()
            what = "requests" if kind == "requests" else f"tokens (this request needs {amount})"
            raise APIError(
                429,
                f"Rate limit reached for {what} per minute: limit {decision.quota.limit}, "
                f"used {decision.quota.used}. Try again in {decision.retry_after_s} s.",
                type=kind,
                code="rate_limit_exceeded",
                headers={"retry-after": str(decision.retry_after_s)},
            )
        return decision

    async def admit_request(self) -> None:
        if self._budgets is not None:
            await self._budgets.admit(self._principal, self._headers)
        await self._admit("requests", 1)

    async def reserve_tokens(self, amount: int) -> Reservation:
        decision = await self._admit("tokens", amount)
        return Reservation(self._limiter, self._principal.key_id, decision.window, amount)
