"""Conversations and turns in MongoDB (FerretDB locally), written idempotently.

``conversations``: ``{_id: conversation_id, user_id, title, created_at, updated_at, turn_ids}``
``turns``: ``{_id: request_id, conversation_id, user_id, created_at, created_us (the same in
microseconds, for ordering), messages, use_history, model,
answer, finish_reason, usage, timings, worker_id, completed_at, error, verdicts.{input,output}}``

Every write is an upsert keyed by ``_id`` with ``$set``/``$setOnInsert``/``$min``/``$max``, so
replaying any event (a restart, a redelivery) leaves the same documents. A conversation's turn
count is the length of its ``turn_ids``, which every event of a turn adds its id to
(``$addToSet``: idempotent, and a crash between writing a turn and adding it is healed by the
turn's next event or its replay); ids of turns recorded before their conversation exists wait in
``uncounted_turns`` (``{_id: conversation_id, turn_ids}``) until it is created. FerretDB cannot
use an index for a count, so counting a conversation's turns on every write scanned every turn
of every conversation (the soak's throughput fell as the history grew). For the
same reason every write and every hot read filters by ``_id`` alone and checks the owner in
Python. FerretDB v1 on PostgreSQL passes such an equality down as ``_jsonb->'_id' @> …``, which
its own indexes cannot serve: each lookup read the whole table until
:mod:`chatbus.history.ferretdb_lookup` added the indexes that can (``ensure_indexes`` does).
A conversation is owned by the user of its first event:
an event naming another user's conversation raises :class:`ConversationOwnedByOther`. Only
operators FerretDB v1.24 supports are used (no transactions, no aggregation). FerretDB v1 does
*not* apply concurrent updates of one document atomically (the last whole-document write wins),
so one process must not update a turn from two threads at once: the history agent uses one
writer thread.

pymongo is synchronous here: callers on an event loop run these methods in a thread. pymongo
errors become :class:`~chatbus.errors.ServiceUnavailable` (:func:`chatbus.stores.mongo_errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from chatbus.errors import ChatbusError
from chatbus.history.ferretdb_lookup import ensure_lookup_indexes
from chatbus.history.storable import StorableCollection
from chatbus.history.turns import ContextTurn, select_context
from chatbus.settings import Settings
from chatbus.stores import Document, mongo_client, mongo_errors
from schemas.events import (
    Appeal,
    ChatMessage,
    ChatRequest,
    Completion,
    ModerationVerdict,
    Rating,
)

CONVERSATIONS = "conversations"
TURNS = "turns"
UNCOUNTED = "uncounted_turns"
# the fields each collection is looked up by with an equality filter (ferretdb_lookup)
LOOKUPS = {
    CONVERSATIONS: ("_id", "user_id"),
    TURNS: ("_id", "conversation_id", "user_id"),
    UNCOUNTED: ("_id",),
}


class ConversationOwnedByOther(ChatbusError):
    """An event names a conversation that belongs to another user (it is not recorded)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A turn moderation refused: the request blocked (``input``) or the answer stopped."""

    request_id: str
    conversation_id: str
    stage: Literal["input", "output"]
    categories: list[str]


@dataclass(frozen=True, slots=True)
class Answer:
    """A turn that has an answer to rate: whose it is, where, and which model gave it."""

    request_id: str
    conversation_id: str
    model: str


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    user_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    turn_count: int

    @classmethod
    def from_document(cls, doc: Document) -> Conversation:
        return cls(
            id=str(doc["_id"]),
            user_id=str(doc["user_id"]),
            title=str(doc.get("title") or ""),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            turn_count=len(doc.get("turn_ids") or ()),
        )


def _micros(at: datetime) -> int:
    """Microseconds since the epoch: orders turns finer than BSON dates (milliseconds)."""
    return int(at.timestamp() * 1_000_000)


def title_of(messages: Sequence[ChatMessage], limit: int) -> str:
    """The first user message, on one line, cut to ``limit`` characters."""
    text = next((m.content for m in messages if m.role == "user"), "")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HistoryRepository:
    """Reads and writes the history collections; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: MongoClient[Document] | None = None,
    ) -> None:
        self._settings = settings
        self._owns_client = client is None
        self._client: MongoClient[Document] = client or mongo_client(settings, tz_aware=True)
        db = self._client[settings.mongo.db]
        # every write and lookup without NUL characters: PostgreSQL under FerretDB refuses them
        self._conversations = cast(Collection[Document], StorableCollection(db[CONVERSATIONS]))
        self._turns = cast(Collection[Document], StorableCollection(db[TURNS]))
        self._uncounted = cast(Collection[Document], StorableCollection(db[UNCOUNTED]))

    @staticmethod
    def _upsert(collection: Collection[Document], selector: Document, update: Document) -> bool:
        """An upsert keyed by ``_id``; True when it inserted the document. Two racing upserts
        of one new ``_id`` make one fail with a duplicate key, and its retry finds the document
        and updates it."""
        try:
            return collection.update_one(selector, update, upsert=True).upserted_id is not None
        except DuplicateKeyError:
            return collection.update_one(selector, update, upsert=True).upserted_id is not None

    def _upsert_turn(self, conversation_id: str, selector: Document, update: Document) -> None:
        """Upsert a turn and count it in its conversation (or, before the conversation exists,
        where its creation will find it); idempotent."""
        self._upsert(self._turns, selector, update)
        added = {"$addToSet": {"turn_ids": selector["_id"]}}
        if self._conversations.update_one({"_id": conversation_id}, added).matched_count == 0:
            self._uncounted.update_one({"_id": conversation_id}, added, upsert=True)

    def ensure_indexes(self) -> None:
        with mongo_errors("create the history indexes"):
            self._conversations.create_index(
                [("user_id", ASCENDING), ("updated_at", DESCENDING)], name="by_user_recent"
            )
            self._turns.create_index(
                [("conversation_id", ASCENDING), ("created_at", ASCENDING)],
                name="by_conversation_time",
            )
            self._turns.create_index([("user_id", ASCENDING)], name="by_user")
            build_info = self._client.admin.command("buildInfo")
        ensure_lookup_indexes(self._settings, build_info, LOOKUPS)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # --- writes ----------------------------------------------------------------------------
    def claim_conversation(
        self, user_id: str, conversation_id: str, *, title: str = "", at: datetime | None = None
    ) -> bool:
        """Create ``conversation_id`` for ``user_id`` unless it exists; False if another's.

        Every filter is the ``_id`` alone: FerretDB pushes only that down to its storage; a
        filter with another field makes it read and decode every conversation."""
        now = at or datetime.now(UTC)
        with mongo_errors("create a conversation"):
            found = self._conversations.find_one(
                {"_id": conversation_id}, {"user_id": 1, "title": 1}
            )
            if found is None:
                try:
                    self._conversations.insert_one(
                        {
                            "_id": conversation_id,
                            "user_id": user_id,
                            "title": title,
                            "created_at": now,
                            "updated_at": now,
                            "turn_ids": self._turns_recorded(conversation_id),
                        }
                    )
                    return True
                except DuplicateKeyError:  # created meanwhile: judge the one that won
                    found = self._conversations.find_one(
                        {"_id": conversation_id}, {"user_id": 1, "title": 1}
                    )
                    if found is None:
                        raise
            if found.get("user_id") != user_id:
                return False
            update: Document = {"$max": {"updated_at": now}}
            if title and not found.get("title"):
                update["$set"] = {"title": title}
            self._conversations.update_one({"_id": conversation_id}, update)
        return True

    def record_request(self, request: ChatRequest) -> None:
        """The user's side of a turn (and the conversation, created on its first request)."""
        title = title_of(request.messages, self._settings.history.title_chars)
        if not self.claim_conversation(
            request.user_id, request.conversation_id, title=title, at=request.created_at
        ):
            raise ConversationOwnedByOther(
                f"conversation {request.conversation_id} belongs to another user than "
                f"{request.user_id}"
            )
        with mongo_errors("record a request"):
            self._upsert_turn(
                request.conversation_id,
                {"_id": request.request_id},
                {
                    "$set": {
                        "conversation_id": request.conversation_id,
                        "user_id": request.user_id,
                        "model": request.model,
                        "messages": [m.model_dump() for m in request.messages],
                        "use_history": request.use_history,
                    },
                    "$min": {
                        "created_at": request.created_at,
                        "created_us": _micros(request.created_at),
                    },
                },
            )

    def record_completion(self, completion: Completion) -> ContextTurn:
        """The answer's side of a turn; returns the turn as context (messages may be missing
        when the request is not recorded yet)."""
        with mongo_errors("record a completion"):
            selector = {"_id": completion.request_id}
            update: Document = {
                "$set": {
                    "conversation_id": completion.conversation_id,
                    "user_id": completion.user_id,
                    "model": completion.model,
                    "answer": completion.text,
                    "finish_reason": completion.finish_reason,
                    "usage": completion.usage.model_dump(),
                    "timings": completion.timings.model_dump(),
                    "worker_id": completion.worker_id,
                    "error": (
                        completion.error.model_dump() if completion.error is not None else None
                    ),
                    "completed_at": completion.created_at,
                },
                "$min": {
                    "created_at": completion.created_at,
                    "created_us": _micros(completion.created_at),
                },
            }
            self._upsert_turn(completion.conversation_id, selector, update)
            doc = self._turns.find_one(selector)
            self._conversations.update_one(
                {"_id": completion.conversation_id}, {"$max": {"updated_at": completion.created_at}}
            )
        assert doc is not None  # just upserted
        return ContextTurn.from_document(doc)

    def record_verdict(self, verdict: ModerationVerdict) -> None:
        """A moderation verdict on a turn (one per stage; a replay overwrites it with itself)."""
        entry = {
            "event_id": verdict.event_id,
            "flagged": verdict.flagged,
            "action": verdict.action,
            "categories": sorted(c for c, hit in verdict.categories.items() if hit),
            "category_scores": verdict.category_scores,
            "pii": [span.model_dump() for span in verdict.pii],
            "at": verdict.created_at,
        }
        with mongo_errors("record a verdict"):
            self._upsert_turn(
                verdict.conversation_id,
                {"_id": verdict.request_id},
                {
                    "$set": {
                        f"verdicts.{verdict.stage}": entry,
                        "conversation_id": verdict.conversation_id,
                        "user_id": verdict.user_id,
                    },
                    "$min": {
                        "created_at": verdict.created_at,
                        "created_us": _micros(verdict.created_at),
                    },
                },
            )

    def record_appeal(self, appeal: Appeal) -> None:
        """A user's appeal of a refusal, on its turn (a second appeal replaces the first)."""
        entry = {
            "event_id": appeal.event_id,
            "stage": appeal.stage,
            "categories": appeal.categories,
            "comment": appeal.comment,
            "at": appeal.created_at,
        }
        with mongo_errors("record an appeal"):
            turn = self._turns.find_one({"_id": appeal.request_id}, {"user_id": 1})
            if turn is not None and turn.get("user_id") == appeal.user_id:
                self._turns.update_one({"_id": appeal.request_id}, {"$set": {"appeal": entry}})

    def record_rating(self, rating: Rating) -> None:
        """A user's rating of their answer, on its turn (a second rating replaces the first;
        a rating of another user's turn is ignored: the gateway checked it, this is the guard)."""
        entry = {
            "event_id": rating.event_id,
            "rating": rating.rating,
            "category": rating.category,
            "comment": rating.comment,
            "at": rating.created_at,
            "at_us": _micros(rating.created_at),
        }
        with mongo_errors("record a rating"):
            turn = self._turns.find_one({"_id": rating.request_id}, {"user_id": 1, "rating": 1})
            if turn is None or turn.get("user_id") != rating.user_id:
                return
            if (turn.get("rating") or {}).get("at_us", 0) > entry["at_us"]:
                return  # an older rating replayed after a newer one: the newer stands
            self._turns.update_one({"_id": rating.request_id}, {"$set": {"rating": entry}})

    def answer_of(self, user_id: str, request_id: str) -> Answer | None:
        """``user_id``'s answered turn ``request_id`` (None: not theirs, unknown, or not
        answered yet)."""
        with mongo_errors("read a turn"):
            doc = self._turns.find_one(
                {"_id": request_id}, {"user_id": 1, "conversation_id": 1, "model": 1, "answer": 1}
            )
        if doc is None or doc.get("user_id") != user_id or doc.get("answer") is None:
            return None
        return Answer(request_id, str(doc["conversation_id"]), str(doc.get("model") or ""))

    def refusal_of(self, user_id: str, request_id: str) -> Refusal | None:
        """How moderation refused ``user_id``'s request ``request_id`` (None: not theirs, not
        recorded yet, or not refused)."""
        with mongo_errors("read a turn"):
            doc = self._turns.find_one({"_id": request_id})  # by _id alone: see claim
        if doc is None or doc.get("user_id") != user_id:
            return None
        verdicts = doc.get("verdicts") or {}
        for stage in ("input", "output"):
            verdict = verdicts.get(stage) or {}
            if verdict.get("flagged"):
                return Refusal(
                    request_id, str(doc["conversation_id"]), stage, list(verdict["categories"])
                )
        if doc.get("finish_reason") == "content_filter":
            return Refusal(request_id, str(doc["conversation_id"]), "input", [])
        return None

    def _turns_recorded(self, conversation_id: str) -> list[str]:
        """Ids of turns recorded before their conversation was created (its events can arrive
        before its claim), taken over by the conversation being created."""
        waiting = self._uncounted.find_one({"_id": conversation_id})
        if waiting is None:
            return []
        self._uncounted.delete_one({"_id": conversation_id})
        return [str(i) for i in waiting.get("turn_ids") or ()]

    def list_conversations(self, user_id: str, *, limit: int = 100) -> list[Conversation]:
        """The user's conversations, most recently updated first."""
        with mongo_errors("list conversations"):
            docs = list(
                self._conversations.find({"user_id": user_id})
                .sort([("updated_at", DESCENDING), ("_id", ASCENDING)])
                .limit(limit)
            )
        return [Conversation.from_document(d) for d in docs]

    def get_conversation(
        self, user_id: str, conversation_id: str
    ) -> tuple[Conversation, list[Document]] | None:
        """The conversation and its turns (oldest first); None when absent or another's."""
        with mongo_errors("read a conversation"):
            doc = self._conversations.find_one({"_id": conversation_id})
            if doc is None or doc.get("user_id") != user_id:
                return None
            turns = list(
                self._turns.find({"conversation_id": conversation_id, "user_id": user_id}).sort(
                    [("created_at", ASCENDING), ("_id", ASCENDING)]
                )
            )
        return Conversation.from_document(doc), turns

    def owner_of(self, conversation_id: str) -> str | None:
        with mongo_errors("read a conversation"):
            doc = self._conversations.find_one({"_id": conversation_id}, {"user_id": 1})
        return None if doc is None else str(doc["user_id"])

    def context_turns(
        self, conversation_id: str, *, exclude: str | None = None
    ) -> list[ContextTurn]:
        """The conversation's context (oldest first) by the settings' budget."""
        settings = self._settings
        with mongo_errors("read a conversation's context"):
            docs = list(
                self._turns.find(
                    {
                        "conversation_id": conversation_id,
                        "finish_reason": {"$in": ["stop", "length", "cancelled"]},
                    }
                )
                .sort([("created_at", DESCENDING)])
                .limit(settings.history.context_max_turns + 1)
            )
        return select_context(
            (ContextTurn.from_document(d) for d in docs),
            max_turns=settings.history.context_max_turns,
            max_chars=settings.history.context_max_chars,
            exclude=exclude,
        )

    # --- deletes ---------------------------------------------------------------------------
    def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        """Delete the user's conversation and its turns; False when absent or another's."""
        with mongo_errors("delete a conversation"):
            result = self._conversations.delete_one({"_id": conversation_id, "user_id": user_id})
            if result.deleted_count == 0:
                return False
            self._turns.delete_many({"conversation_id": conversation_id})
        return True

    def delete_user(self, user_id: str) -> list[str]:
        """Delete every conversation and turn of ``user_id``; returns the conversation ids."""
        with mongo_errors("delete a user's history"):
            ids = [
                str(d["_id"]) for d in self._conversations.find({"user_id": user_id}, {"_id": 1})
            ]
            self._turns.delete_many({"user_id": user_id})
            if ids:
                self._turns.delete_many({"conversation_id": {"$in": ids}})
            self._conversations.delete_many({"user_id": user_id})
        return ids
