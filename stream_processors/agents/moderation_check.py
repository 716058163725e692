"""``POST /v1/moderations`` on the processors' ops port: the moderation check.

The gateway's ``/v1/moderations`` forwards a :class:`~schemas.moderation_check.ModerationCheck`
here, so a client's check is judged by the very classifier (already loaded and warm), thresholds
and parent-category rule that moderate chat requests, with no second copy of the model in the
gateway. Called in the ops server's thread; the texts are judged on the moderation thread.
"""

from __future__ import annotations

import json
from concurrent.futures import TimeoutError as FutureTimeout

from pydantic import ValidationError

from chatbus.health import PostHandler
from schemas.moderation_check import ModerationCheck
from stream_processors.agents.moderation import ClassifierNotReady, ModerationRuntime

PATH = "/v1/moderations"


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"message": message}}).encode()


def check_handler(runtime: ModerationRuntime, timeout_s: float = 30.0) -> PostHandler:
    def handle(body: bytes) -> tuple[int, bytes]:
        try:
            check = ModerationCheck.model_validate_json(body)
        except ValidationError as exc:
            return _error(400, f"not a moderation check: {exc.errors()[0]['msg']}")
        try:
            result = runtime.check(check, timeout_s)
        except ClassifierNotReady as exc:
            return _error(503, str(exc))
        except FutureTimeout:
            return _error(503, f"the classifier did not answer within {timeout_s:.0f} s")
        return 200, result.model_dump_json().encode()

    return handle
