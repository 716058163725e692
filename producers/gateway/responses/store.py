"""Stored responses: what ``GET``/``DELETE``/``cancel``/``input_items`` and a follow-up read.

MongoDB collection ``responses`` (in ``CHATBUS_MONGO_DB``), one document per response:
``{_id: response_id, user_id, request_id, conversation_id, status, created_at, updated_at,
response (the response object as JSON), input_items (JSON)}``. The two objects are kept as JSON
strings: ``metadata`` keys are the client's and may hold characters MongoDB field names may not.
Every read and write is scoped to its user, so another user's response is simply not found.
pymongo errors become :class:`~chatbus.errors.ServiceUnavailable` (a 503).
"""

from __future__ import annotations

import abc
import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import TypeAdapter

from chatbus.history.ferretdb_lookup import ensure_lookup_indexes
from chatbus.history.storable import StorableCollection
from chatbus.settings import Settings
from chatbus.stores import Document, async_mongo_client, mongo_errors
from producers.gateway.responses.protocol import InputItem, ResponseObject

COLLECTION = "responses"
_WHAT = "read or write stored responses"
_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


@dataclass(frozen=True)
class StoredResponse:
    """A response as stored: its object, its input, and where it lives on the bus."""

    response: ResponseObject
    input_items: list[InputItem]
    user_id: str
    request_id: str
    conversation_id: str

    def to_document(self) -> Document:
        return {
            "_id": self.response.id,
            "user_id": self.user_id,
            "request_id": self.request_id,
            "conversation_id": self.conversation_id,
            "status": self.response.status,
            "created_at": datetime.fromtimestamp(self.response.created_at, UTC),
            "updated_at": datetime.now(UTC),
            "response": self.response.model_dump_json(),
            "input_items": _ITEMS.dump_json(self.input_items).decode(),
        }

    @classmethod
    def from_document(cls, doc: Document) -> StoredResponse:
        return cls(
            response=ResponseObject.model_validate_json(doc["response"]),
            input_items=_ITEMS.validate_python(json.loads(doc["input_items"])),
            user_id=str(doc["user_id"]),
            request_id=str(doc["request_id"]),
            conversation_id=str(doc["conversation_id"]),
        )


class ResponseStore(abc.ABC):
    """Where responses are kept; every lookup is one user's."""

    @abc.abstractmethod
    async def save(self, stored: StoredResponse) -> None:
        """Write the whole response (insert or replace)."""

    @abc.abstractmethod
    async def get(self, user_id: str, response_id: str) -> StoredResponse | None:
        """The user's response, or None (unknown, or someone else's)."""

    @abc.abstractmethod
    async def delete(self, user_id: str, response_id: str) -> bool:
        """Remove the user's response; False when there was none."""


class MongoResponseStore(ResponseStore):
    """Responses in MongoDB (FerretDB locally), through the core's asyncio client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = async_mongo_client(settings)
        # no NUL characters in what is written or looked up (PostgreSQL under FerretDB refuses
        # them): the ids are patterned and the bodies JSON text today, any new field is covered
        self._collection = StorableCollection(self._client[settings.mongo.db][COLLECTION])

    async def start(self) -> None:
        with mongo_errors(_WHAT):
            await self._collection.create_index("user_id")
            build_info = await self._client.admin.command("buildInfo")
        lookups = {COLLECTION: ("_id",)}
        await asyncio.to_thread(ensure_lookup_indexes, self._settings, build_info, lookups)

    async def stop(self) -> None:
        await self._client.close()

    async def save(self, stored: StoredResponse) -> None:
        doc = stored.to_document()
        with mongo_errors(_WHAT):
            await self._collection.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def get(self, user_id: str, response_id: str) -> StoredResponse | None:
        with mongo_errors(_WHAT):
            doc = await self._collection.find_one({"_id": response_id, "user_id": user_id})
        return None if doc is None else StoredResponse.from_document(doc)

    async def delete(self, user_id: str, response_id: str) -> bool:
        with mongo_errors(_WHAT):
            result = await self._collection.delete_one({"_id": response_id, "user_id": user_id})
        return bool(result.deleted_count)
