"""OpenAI's Responses API (``/v1/responses``) as a view of the bus's chat requests.

``protocol`` (request, response object, ids) · ``translate`` (what is served, input → chat
messages) · ``events`` (the streamed events) · ``serving`` (:class:`ResponsesService`, on the
chat service) · ``store`` (stored responses in MongoDB) · ``routes`` (the HTTP routes) ·
``websocket`` (OpenAI's WebSocket mode on the same path).
"""

from producers.gateway.responses.serving import ResponsesService
from producers.gateway.responses.store import MongoResponseStore, ResponseStore

__all__ = ["MongoResponseStore", "ResponseStore", "ResponsesService"]
