"""Personal data split across the token chunks of one answer, redacted in the archive.

A worker streams an answer a few characters at a time, so a card or phone number is almost never
inside one chunk: redacting each chunk alone finds nothing. :class:`TokenStreamRedactor` (one per
``chat.tokens`` partition; a request's chunks share its partition, in order) reads each chunk
against the answer's preceding text (:data:`CONTEXT_CHARS` of it) and redacts every span that
touches the new chunk — in the new chunk and in each earlier chunk of that request still in the
batch being built, whose line it rewrites. A span is cut only where a flush falls inside it: the
part already uploaded stays as it was. Each touched chunk shows ``[REDACTED:<kind>]`` where its
part of the span was and loses its ``token_ids``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from stream_processors.archiver.batch import PartitionBatch
from stream_processors.moderation.pii import find_pii

CONTEXT_CHARS = 256  # longer than any phone or card number, and than all but absurd emails
MAX_OPEN_REQUESTS = 10_000  # per partition; the least recently streamed is forgotten first
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # in the answer's text, from its first character
    end: int
    kind: str


@dataclass(slots=True)
class _Chunk:
    batch: PartitionBatch
    index: int  # its line in ``batch``
    start: int
    text: str  # as the worker sent it
    record: dict[str, Any]

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(slots=True)
class _Answer:
    text: str = ""  # the answer's last characters, as sent
    offset: int = 0  # where ``text`` starts in the answer
    chunks: list[_Chunk] = field(default_factory=list)  # those that can still be rewritten
    spans: list[Span] = field(default_factory=list)


class TokenStreamRedactor:
    """The redaction state of one ``chat.tokens`` partition."""

    def __init__(self) -> None:
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, batch: PartitionBatch, index: int, record: dict[str, Any]) -> int:
        """Redact chunk ``record`` (line ``index`` of ``batch``, not yet redacted) and the earlier
        chunks of its answer still in ``batch``; returns how many new spans were found."""
        request_id, text = record.get("request_id"), record.get("text")
        if record.get("type") != "chat.token" or not isinstance(request_id, str) \
                or not isinstance(text, str):
            return 0
        answer = self._answers.pop(request_id, None) or _Answer()
        if not record.get("finish_reason"):
            self._answers[request_id] = answer  # most recent last
            while len(self._answers) > MAX_OPEN_REQUESTS:
                self._answers.popitem(last=False)
        chunk = _Chunk(batch, index, answer.offset + len(answer.text), text, record)
        answer.text += text
        cut = max(0, len(answer.text) - len(text) - CONTEXT_CHARS)
        if cut:
            answer.text, answer.offset = answer.text[cut:], answer.offset + cut
            answer.spans = [s for s in answer.spans if s.end > answer.offset]
        chunks = answer.chunks
        if chunks and chunks[-1].batch is not batch:
            chunks.clear()  # all in a batch already uploaded
        drop = 0
        while drop < len(chunks) and chunks[drop].end <= answer.offset:
            drop += 1  # before the context: no new span can reach them
        if drop:
            del chunks[:drop]
        chunks.append(chunk)
        # A new span ends inside the new chunk: a number's last character is a digit there; an
        # address needs an '@' in the context. Neither: nothing to look for.
        if "@" not in answer.text and _DIGIT.search(text) is None:
            return 0
        found = [Span(answer.offset + m.start, answer.offset + m.end, m.kind)
                 for m in find_pii(answer.text)]
        new = [s for s in found if s.end > chunk.start and s not in answer.spans]
        if not new:
            return 0
        counted = sum(1 for s in new if not any(_overlap(s, old) for old in answer.spans))
        answer.spans.extend(new)
        for c in answer.chunks:
            if any(_overlap(s, c) for s in new):
                c.record["text"] = render(c.text, c.start, answer.spans)
                c.record["token_ids"] = []
                batch.replace(c.index, c.record)
        return counted


def render(text: str, start: int, spans: list[Span]) -> str:
    """``text`` (which starts at ``start`` in its answer) with the parts inside ``spans``
    replaced by ``[REDACTED:<kind>]``, one marker per run of overlapping spans."""
    end = start + len(text)
    parts = sorted((max(s.start, start), min(s.end, end), s.kind, s.end - s.start)
                   for s in spans if s.start < end and s.end > start)
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
        out.append(text[at - start:lo - start])
        out.append(f"[REDACTED:{kind}]")
        at = hi
    out.append(text[at - start:])
    return "".join(out)


def _overlap(a: Span, b: Span | _Chunk) -> bool:
    return a.start < b.end and b.start < a.end
