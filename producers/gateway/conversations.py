"""Conversations over HTTP: list, read, create, delete, and continuing one by id.

``GET /v1/conversations``            the caller's conversations, most recently updated first
``POST /v1/conversations``           a new, empty conversation (optional ``title``)
``GET /v1/conversations/{id}``       one conversation and its turns, oldest first
``DELETE /v1/conversations/{id}``    the conversation, its turns and its cached context
``POST /v1/chat/completions`` with ``conversation_id`` (the openai SDK: ``extra_body``)
                                     continues it: ``messages`` are the new message(s) only, the
                                     worker prepends the stored context

A conversation another user owns answers exactly like one that does not exist: 404, never 403.
Every chat answer carries ``x-conversation-id``. The store is the history processor's MongoDB
(through :class:`HistoryRepository`, run in threads) and its Redis context cache.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import HTTPConnection

from chatbus.errors import ChatbusError
from chatbus.history import ContextStore, Conversation, HistoryRepository
from chatbus.history.repository import Answer, Refusal, title_of
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import Document
from producers.gateway.admission import authenticate, response_headers
from producers.gateway.errors import APIError, from_validation
from schemas.events import ChatMessage, new_id

log = get_logger(__name__)

CONVERSATION_HEADER = "x-conversation-id"
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def not_found(conversation_id: str) -> APIError:
    return APIError(
        404,
        f"No conversation found with id '{conversation_id}'.",
        param="conversation_id",
        code="conversation_not_found",
    )


# --- protocol -------------------------------------------------------------------------------
class ConversationObject(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    title: str
    created_at: int
    updated_at: int
    turn_count: int

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationObject:
        return cls(
            id=conversation.id,
            title=conversation.title,
            created_at=int(conversation.created_at.timestamp()),
            updated_at=int(conversation.updated_at.timestamp()),
            turn_count=conversation.turn_count,
        )


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationObject]


class TurnObject(BaseModel):
    request_id: str
    created_at: int
    model: str | None = None
    messages: list[ChatMessage]
    answer: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    verdicts: dict[str, Any] = Field(default_factory=dict)
    rating: dict[str, Any] | None = Field(
        None, description="The user's rating of the answer: rating (up/down), category, comment."
    )

    @classmethod
    def of(cls, doc: Document) -> TurnObject:
        verdicts = {
            stage: {k: v for k, v in entry.items() if k in ("flagged", "action", "categories")}
            for stage, entry in (doc.get("verdicts") or {}).items()
        }
        created = doc.get("created_at")
        return cls(
            request_id=str(doc["_id"]),
            created_at=int(created.timestamp()) if isinstance(created, datetime) else 0,
            model=doc.get("model"),
            messages=doc.get("messages") or [],
            answer=doc.get("answer"),
            finish_reason=doc.get("finish_reason"),
            usage=doc.get("usage"),
            verdicts=verdicts,
            rating={k: v for k, v in rated.items() if k in ("rating", "category", "comment")}
            if (rated := doc.get("rating"))
            else None,
        )


class ConversationDetail(ConversationObject):
    turns: list[TurnObject]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field("", max_length=200)


# --- serving --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpenedConversation:
    """The conversation a chat request belongs to; ``continued``: it asks for the context."""

    id: str
    continued: bool


class ConversationService:
    """The gateway's view of the history store, for one user at a time."""

    def __init__(self, settings: Settings, repository: HistoryRepository | None = None) -> None:
        self._settings = settings
        self._repository = repository or HistoryRepository(settings)
        self._context = ContextStore(settings, self._repository)
        # Claims of new conversations still being written, by id: a new conversation's request
        # goes on the bus without waiting for the document store (its id is fresh and random,
        # nobody else can claim it); continuing it waits for its claim here.
        self._claiming: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        await asyncio.to_thread(self._repository.ensure_indexes)

    async def stop(self) -> None:
        pending = list(self._claiming.values())
        if pending:  # claims in flight land before the store closes
            await asyncio.gather(*pending, return_exceptions=True)
        await self._context.close()
        self._repository.close()

    async def open(
        self, user: str, conversation_id: str | None, messages: list[ChatMessage]
    ) -> OpenedConversation:
        """Continue ``conversation_id`` (404 unless it is the user's) or start a new one."""
        if conversation_id is not None:
            claiming = self._claiming.get(conversation_id)
            if claiming is not None:
                await asyncio.gather(claiming, return_exceptions=True)
            owner = await asyncio.to_thread(self._repository.owner_of, conversation_id)
            if owner != user:
                raise not_found(conversation_id)
            return OpenedConversation(conversation_id, continued=True)
        conversation_id = new_id("conv")
        task = asyncio.create_task(
            self._claim_in_background(
                user, conversation_id, title_of(messages, self._settings.history.title_chars)
            ),
            name=f"claim-{conversation_id}",
        )
        self._claiming[conversation_id] = task
        task.add_done_callback(lambda _: self._claiming.pop(conversation_id, None))
        return OpenedConversation(conversation_id, continued=False)

    async def _claim_in_background(self, user: str, conversation_id: str, title: str) -> None:
        try:
            await self._claim(user, conversation_id, title)
        except ChatbusError as exc:  # chat keeps working: the processor records it later
            log.warning("conversation_not_claimed", conversation_id=conversation_id, error=str(exc))

    async def create(self, user: str, title: str = "") -> str:
        conversation_id = new_id("conv")
        await self._claim(user, conversation_id, title)
        return conversation_id

    async def _claim(self, user: str, conversation_id: str, title: str) -> None:
        await asyncio.to_thread(
            self._repository.claim_conversation, user, conversation_id, title=title
        )

    async def list(self, user: str, limit: int) -> ConversationList:
        found = await asyncio.to_thread(self._repository.list_conversations, user, limit=limit)
        return ConversationList(data=[ConversationObject.of(c) for c in found])

    async def get(self, user: str, conversation_id: str) -> ConversationDetail:
        found = None
        if _ID.match(conversation_id):
            found = await asyncio.to_thread(
                self._repository.get_conversation, user, conversation_id
            )
        if found is None:
            raise not_found(conversation_id)
        conversation, turns = found
        return ConversationDetail(
            **ConversationObject.of(conversation).model_dump(),
            turns=[TurnObject.of(t) for t in turns],
        )

    async def answer(self, user: str, request_id: str) -> Answer | None:
        """``user``'s answered turn (None: not theirs, unknown, or not answered yet)."""
        return await asyncio.to_thread(self._repository.answer_of, user, request_id)

    async def refusal(self, user: str, request_id: str) -> Refusal | None:
        """How moderation refused ``user``'s request (None: not theirs, unknown, not refused)."""
        return await asyncio.to_thread(self._repository.refusal_of, user, request_id)

    async def delete(self, user: str, conversation_id: str) -> ConversationDeleted:
        deleted = _ID.match(conversation_id) is not None and await asyncio.to_thread(
            self._repository.delete_conversation, user, conversation_id
        )
        if not deleted:
            raise not_found(conversation_id)
        await self._context.forget(conversation_id)
        return ConversationDeleted(id=conversation_id)


def set_conversation_header(request: HTTPConnection, conversation_id: str) -> None:
    """Every response to this request (errors and streams included) names the conversation."""
    response_headers(request)[CONVERSATION_HEADER] = conversation_id


# --- routes ---------------------------------------------------------------------------------
router = APIRouter()


def _service(request: Request) -> tuple[Any, ConversationService]:
    runtime = request.app.state.gateway
    return runtime, runtime.conversations


@router.get("/v1/conversations")
async def list_conversations(request: Request, limit: int = 100) -> ConversationList:
    runtime, conversations = _service(request)
    principal = await authenticate(request, runtime.keys)
    return await conversations.list(principal.user, max(1, min(limit, 1000)))


@router.post("/v1/conversations")
async def create_conversation(request: Request) -> ConversationObject:
    runtime, conversations = _service(request)
    principal = await authenticate(request, runtime.keys)
    raw = await request.body()
    try:
        body = CreateConversation.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise from_validation(exc) from None
    conversation_id = await conversations.create(principal.user, body.title)
    set_conversation_header(request, conversation_id)
    detail = await conversations.get(principal.user, conversation_id)
    return ConversationObject(**detail.model_dump(exclude={"turns"}))


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(request: Request, conversation_id: str) -> ConversationDetail:
    runtime, conversations = _service(request)
    principal = await authenticate(request, runtime.keys)
    return await conversations.get(principal.user, conversation_id)


@router.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(request: Request, conversation_id: str) -> ConversationDeleted:
    runtime, conversations = _service(request)
    principal = await authenticate(request, runtime.keys)
    return await conversations.delete(principal.user, conversation_id)
