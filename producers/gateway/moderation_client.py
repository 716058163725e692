"""The gateway's client of the processors' moderation check (``POST /v1/moderations`` on their
ops port, :mod:`schemas.moderation_check`); its errors say what to start or set."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from chatbus.errors import ServiceUnavailable
from schemas.moderation_check import ModerationCheck, ModerationCheckResult


class ModerationClient:
    """Asks the processors to judge texts (one HTTP client for the gateway's lifetime)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self._url = url.rstrip("/") + "/v1/moderations"
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def stop(self) -> None:
        await self._http.aclose()

    async def check(self, texts: list[str]) -> ModerationCheckResult:
        payload = ModerationCheck(texts=texts).model_dump_json()
        try:
            reply = await self._http.post(
                self._url, content=payload, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"cannot reach the moderation service at {self._url} ({exc!r}); is "
                "`chatbus processors` running (make run starts it), and does "
                "CHATBUS_MODERATION_SERVICE_URL point at its ops port?"
            ) from exc
        if reply.status_code != 200:
            raise ServiceUnavailable(
                f"the moderation service answered {reply.status_code}: {reply.text[:300]}"
            )
        try:
            return ModerationCheckResult.model_validate_json(reply.content)
        except ValidationError as exc:
            raise ServiceUnavailable(
                f"the moderation service's answer is malformed: {exc}"
            ) from exc
