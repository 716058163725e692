"""The OpenAI-compatible HTTP gateway: ``POST /v1/chat/completions`` and ``/v1/responses``
(package ``responses``, a second view of the same chat requests) over the bus.

router (``routes``) → admission (keys, rate limits) → serving (``ChatCompletionService``, on the
``ChatBackend`` interface) → the bus (one ``ChatClient`` per process on a leased reply
partition). ``protocol`` holds OpenAI's wire format, ``errors`` its error shape.
"""

from producers.gateway.app import create_app
from producers.gateway.runtime import GatewayRuntime
from producers.gateway.server import run_gateway, uvicorn_config

__all__ = ["GatewayRuntime", "create_app", "run_gateway", "uvicorn_config"]
