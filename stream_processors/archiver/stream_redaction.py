"""Personal data split across the token chunks of one answer, redacted in the archive.

A worker streams an answer a few characters at a time, so a card or phone number is almost never
inside one chunk: redacting each chunk alone finds nothing. :class:`TokenStreamRedactor` (one per
``chat.tokens`` partition; a request's chunks share its partition, in order) reads each chunk
against the answer's preceding text (:data:`CONTEXT_CHARS` of it) and redacts every span that
touches the new chunk — in the new chunk and in each earlier chunk of that request still in the
batch being built, whose line it rewrites. Each touched chunk shows ``[REDACTED:<kind>]`` where
its part of the span was and loses its ``token_ids``.

Where a flush falls inside a span, the part already uploaded stays as it was; the rest is
redacted. After a restart or a rebalance the archiver reads the :data:`CONTEXT_RECORDS` records
before a partition's resume point again, as context only (:meth:`TokenStreamRedactor.context`),
so an answer that began before it is read with its beginning. A repeated chunk (a ``seq`` seen
before) adds nothing to the context and is redacted as its first copy was; a chunk of no known
answer (no ``request_id``) is redacted on its own.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream_processors.archiver.batch import PartitionBatch
from stream_processors.archiver.redaction import redact_text
from stream_processors.moderation.pii import find_pii

CONTEXT_CHARS = 256  # longer than any phone or card number, and than all but absurd emails
MAX_OPEN_REQUESTS = 10_000  # per partition; the least recently streamed is forgotten first
CONTEXT_RECORDS = 5_000  # read again, as context only, before a partition's resume point
_DIGIT = re.compile(r"\d")
_PLACED_KEPT = 128  # where recent chunks sat, for repeats; pruned to the context beyond this


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # in the answer's text, from its first character
    end: int
    kind: str


class _Chunk(NamedTuple):
    batch: weakref.ref[PartitionBatch]  # not keeping an uploaded batch alive
    line: int  # its index in that batch
    start: int
    end: int
    text: str  # as the worker sent it
    record: dict[str, Any]


@dataclass(slots=True)
class _Answer:
    text: str = ""  # the answer's last characters, as sent
    offset: int = 0  # where ``text`` starts in the answer
    last_seq: int = -1
    placed: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, start, end)
    chunks: list[_Chunk] = field(default_factory=list)  # those that can still be rewritten
    spans: list[Span] = field(default_factory=list)


class TokenStreamRedactor:
    """The redaction state of one ``chat.tokens`` partition."""

    def __init__(self) -> None:
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._batch: weakref.ref[PartitionBatch] | None = None  # the one being built

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, batch: PartitionBatch, index: int, record: dict[str, Any]) -> int:
        """Redact chunk ``record`` (line ``index`` of ``batch``, not yet redacted) and the earlier
        chunks of its answer still in ``batch``; returns how many new spans were found."""
        text = record.get("text")
        if not isinstance(text, str):
            return 0
        answer, seq = self._answer(record)
        if answer is None:  # no answer to read it with: the chunk alone
            return _alone(batch, index, record, text)
        if seq is not None and seq <= answer.last_seq:  # a duplicate: as its first copy was
            return _as_placed(answer, batch, index, record, text, seq)
        ref = self._batch
        if ref is None or ref() is not batch:
            ref = self._batch = weakref.ref(batch)
        start = self._extend(answer, text, seq)
        chunk = _Chunk(ref, index, start, start + len(text), text, record)
        chunks = answer.chunks
        if chunks and chunks[-1].batch is not ref:
            chunks.clear()  # all in a batch already uploaded
        elif chunks and chunks[0].end <= answer.offset:  # before the context: out of reach
            drop = 1
            while drop < len(chunks) and chunks[drop].end <= answer.offset:
                drop += 1
            del chunks[:drop]
        chunks.append(chunk)
        if answer.spans:  # kept while a chunk they cover can still be rewritten
            floor = min(answer.offset, chunks[0].start)
            answer.spans = [s for s in answer.spans if s.end > floor]
        # A new span ends inside the new chunk: a number's last character is a digit there; an
        # address needs an '@' in the context. Neither: nothing to look for.
        if "@" not in answer.text and _DIGIT.search(text) is None:
            return 0
        found = [
            Span(answer.offset + m.start, answer.offset + m.end, m.kind)
            for m in find_pii(answer.text)
        ]
        new = [s for s in found if s.end > chunk.start and s not in answer.spans]
        if not new:
            return 0
        counted = sum(1 for s in new if not any(_overlap(s, old) for old in answer.spans))
        answer.spans.extend(new)
        for c in chunks:
            if any(_overlap(s, c) for s in new):
                c.record["text"] = render(c.text, c.start, answer.spans)
                c.record["token_ids"] = []
                batch.replace(c.line, c.record)
        return counted

    def context(self, record: dict[str, Any]) -> None:
        """Read chunk ``record`` only as context for the chunks after it (it was archived
        before: the records before a partition's resume point)."""
        text = record.get("text")
        answer, seq = self._answer(record)
        if (
            answer is None
            or not isinstance(text, str)
            or (seq is not None and seq <= answer.last_seq)
        ):
            return
        self._extend(answer, text, seq)

    def _answer(self, record: dict[str, Any]) -> tuple[_Answer | None, int | None]:
        """The state of ``record``'s answer, most recent last (dropped at its last chunk), and
        the chunk's ``seq`` when it has one."""
        request_id, seq = record.get("request_id"), record.get("seq")
        if record.get("type") != "chat.token" or not isinstance(request_id, str) or not request_id:
            return None, None
        answer = self._answers.pop(request_id, None) or _Answer()
        if not record.get("finish_reason"):
            self._answers[request_id] = answer
            while len(self._answers) > MAX_OPEN_REQUESTS:
                self._answers.popitem(last=False)
        return answer, seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @staticmethod
    def _extend(answer: _Answer, text: str, seq: int | None) -> int:
        """Append ``text`` to ``answer``'s context; returns where it starts in the answer."""
        start = answer.offset + len(answer.text)
        answer.text += text
        cut = max(0, len(answer.text) - len(text) - CONTEXT_CHARS)
        if cut:
            answer.text, answer.offset = answer.text[cut:], answer.offset + cut
        if seq is not None:
            answer.last_seq = seq
            answer.placed.append((seq, start, start + len(text)))
            if len(answer.placed) > _PLACED_KEPT:
                answer.placed = [p for p in answer.placed if p[2] > answer.offset]
        return start


def _alone(batch: PartitionBatch, index: int, record: dict[str, Any], text: str) -> int:
    redacted, found = redact_text(text)
    if found:
        record["text"], record["token_ids"] = redacted, []
        batch.replace(index, record)
    return found


def _as_placed(
    answer: _Answer, batch: PartitionBatch, index: int, record: dict[str, Any], text: str, seq: int
) -> int:
    """A chunk seen before: redacted where its first copy sat, when the context still holds
    it; otherwise on its own."""
    where = next(
        (
            start
            for s, start, end in answer.placed
            if s == seq and end - start == len(text) and end > answer.offset
        ),
        None,
    )
    if where is None:
        return _alone(batch, index, record, text)
    redacted = render(text, where, answer.spans)
    if redacted != text:
        record["text"], record["token_ids"] = redacted, []
        batch.replace(index, record)
    return 0


def render(text: str, start: int, spans: list[Span]) -> str:
    """``text`` (which starts at ``start`` in its answer) with the parts inside ``spans``
    replaced by ``[REDACTED:<kind>]``, one marker per run of overlapping spans."""
    end = start + len(text)
    parts = sorted(
        (max(s.start, start), min(s.end, end), s.kind, s.end - s.start)
        for s in spans
        if s.start < end and s.end > start
    )
    merged: list[list[Any]] = []  # [from, to, kind, length of the longest span]
    for lo, hi, kind, length in parts:
        if merged and lo < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], hi)
            if length > last[3]:
                last[2], last[3] = kind, length
        else:
            merged.append([lo, hi, kind, length])
    out, at = [], start
    for lo, hi, kind, _ in merged:
        out.append(text[at - start : lo - start])
        out.append(f"[REDACTED:{kind}]")
        at = hi
    out.append(text[at - start :])
    return "".join(out)


def _overlap(a: Span, b: Span | _Chunk) -> bool:
    return a.start < b.end and b.start < a.end
