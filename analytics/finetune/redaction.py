"""Personal data out of a turn before it becomes a training example (plain Python, run by Spark
as a UDF).

Three passes, in this order, over every message of the request and over the answer:

1. **The verdicts' spans.** Moderation marks personal data with
   :class:`schemas.events.PiiSpan` (``kind``, ``message_index``, ``start``, ``end``): an
   input-stage span points into ``messages[message_index]``, an output-stage span into the
   answer. Each becomes ``[<kind>]`` — unless the text was already redacted by the archiver (its
   offsets then no longer point at the original), the span falls outside the text, or it overlaps a
   span applied before (counted as ``spans``).
2. **The archiver's placeholders.** An archive written by the archiver is already redacted:
   ``[REDACTED:email]`` and the like. They become the dataset's one placeholder form, ``[email]``,
   so a model learns one spelling (counted as ``archiver``).
3. **A regex safety net** over every text: e-mail addresses, card-like numbers (13 to 19 digits,
   optionally grouped by spaces or dashes; no Luhn check — the net errs toward redacting) and phone
   numbers (international ``+CC …`` or North American style, 7 to 15 digits), each as ``[<kind>]``
   (counted per kind).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

KINDS = ("email", "phone", "payment_card")
#: Text that may hold something to redact: none of the passes changes a text without one of these
#: (Java and Python syntax; ``\p{Nd}`` and Python's ``\d``: any decimal digit).
SUSPECT_JAVA = r"[@\p{Nd}]|\[REDACTED:"
_SUSPECT = re.compile(r"[@\d]|\[REDACTED:")
COUNTERS = ("archiver", "spans", "email", "phone", "payment_card")

ARCHIVER_PLACEHOLDER = re.compile(r"\[REDACTED:(email|phone|payment_card)\]")
EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"  # +44 20 7946 0958
    r"|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567, 555.123.4567
    r"|\d{3}[ .-]\d{4}"  # 555-1234
    r")(?![\w-])"
)
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", EMAIL),
    ("payment_card", CARD),  # before phones: a grouped card number also looks like a phone
    ("phone", PHONE),
)


def placeholder(kind: str) -> str:
    return f"[{kind}]"


def normalise_archiver(text: str) -> tuple[str, int]:
    """The archiver's ``[REDACTED:<kind>]`` as ``[<kind>]``; how many there were."""
    return ARCHIVER_PLACEHOLDER.subn(lambda m: placeholder(m.group(1)), text)


def apply_spans(text: str, spans: Iterable[tuple[str, int, int]]) -> tuple[str, int]:
    """``text`` with each ``(kind, start, end)`` span replaced by ``[kind]``; how many were.

    Nothing is applied to a text the archiver already redacted (the offsets are the original
    text's); a span outside the text, empty, or overlapping one applied before is skipped."""
    if ARCHIVER_PLACEHOLDER.search(text):
        return text, 0
    chosen: list[tuple[int, int, str]] = []
    for kind, start, end in sorted(spans, key=lambda s: (s[1], s[2])):
        if not 0 <= start < end <= len(text) or kind not in KINDS:
            continue
        if chosen and start < chosen[-1][1]:
            continue
        chosen.append((start, end, kind))
    for start, end, kind in reversed(chosen):
        text = text[:start] + placeholder(kind) + text[end:]
    return text, len(chosen)


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """The regex safety net: ``text`` with e-mails, card-like numbers and phone numbers
    replaced; how many of each."""
    found = dict.fromkeys(KINDS, 0)
    if _SUSPECT.search(text) is None:
        return text, found  # every kind needs an '@' or digits: most texts end here, cheaply
    for kind, pattern in _PATTERNS:

        def replace(match: re.Match[str], kind: str = kind) -> str:
            if kind == "phone" and not 7 <= sum(c.isdigit() for c in match.group()) <= 15:
                return match.group()
            found[kind] += 1
            return placeholder(kind)

        text = pattern.sub(replace, text)
    return text, found


def redact_turn(
    messages: Sequence[tuple[str, str]],
    answer: str,
    spans: Iterable[tuple[str, int, str, int, int]] = (),
) -> tuple[list[tuple[str, str]], str, dict[str, int]]:
    """A turn's ``(role, content)`` messages and answer with personal data replaced (the three
    passes of the module docstring); the counts by :data:`COUNTERS`.

    ``spans``: ``(stage, message_index, kind, start, end)`` from the turn's verdicts."""
    counts = dict.fromkeys(COUNTERS, 0)
    by_text: dict[int, list[tuple[str, int, int]]] = {}  # message index, -1 for the answer
    for stage, index, kind, start, end in spans:
        by_text.setdefault(-1 if stage == "output" else index, []).append((kind, start, end))

    def clean(text: str, key: int) -> str:
        if key in by_text:  # first: the spans' offsets are the original text's
            text, n = apply_spans(text, by_text[key])
            counts["spans"] += n
        text, n = normalise_archiver(text)
        counts["archiver"] += n
        text, found = scrub(text)
        for kind, n in found.items():
            counts[kind] += n
        return text

    out = [(role, clean(content, i)) for i, (role, content) in enumerate(messages)]
    return out, clean(answer, -1), counts


def redact_row(messages: Any, answer: str, spans: Any) -> tuple[Any, ...]:
    """:func:`redact_turn` over Spark rows: (messages as (role, content) pairs, answer, *counts)."""
    pairs = [(m["role"], m["content"] or "") for m in messages or []]
    span_tuples = [
        (s["stage"], s["message_index"], s["kind"], s["start"], s["end"]) for s in spans or []
    ]
    out, text, counts = redact_turn(pairs, answer or "", span_tuples)
    return (out, text, *(counts[c] for c in COUNTERS))


_MESSAGES = "array<struct<role: string, content: string>>"


def _suspect(column: Column) -> Column:
    return column.rlike(SUSPECT_JAVA)


def redacted(turns: DataFrame) -> DataFrame:
    """``turns`` (with ``messages``, ``answer`` and the verdicts' ``pii``) with personal data out
    of ``messages`` and ``answer`` (``pii`` dropped), and the counts of :data:`COUNTERS` as
    ``redacted_<counter>`` columns.

    Only the turns with a PII span, or an '@', a digit or an archiver placeholder somewhere, go
    through Python (:func:`redact_row`); the others cannot change and pass with zero counts. (A
    Python UDF under ``when`` would still run on every row: Spark evaluates them apart.)"""
    from pyspark.sql import functions as F

    counters = ", ".join(f"{c}: int" for c in COUNTERS)
    udf = F.udf(  # a lambda: pyspark reads no type hints from it (it warns on the function's)
        lambda messages, answer, spans: redact_row(messages, answer, spans),
        f"struct<messages: {_MESSAGES}, answer: string, {counters}>",
    )
    suspect = (
        F.coalesce(F.size("pii") > 0, F.lit(False))
        | F.exists("messages", lambda m: _suspect(m["content"]))
        | _suspect(F.col("answer"))
    )
    rest = [c for c in turns.columns if c not in ("messages", "answer", "pii")]
    changed = turns.where(suspect).withColumn("r", udf("messages", "answer", "pii"))
    unchanged = turns.where(~suspect)
    return changed.select(
        *rest,
        F.col("r.messages").alias("messages"),
        F.col("r.answer").alias("answer"),
        *[F.col(f"r.{c}").alias(f"redacted_{c}") for c in COUNTERS],
    ).unionByName(
        unchanged.select(
            *rest,
            "messages",
            "answer",
            *[F.lit(0).alias(f"redacted_{c}") for c in COUNTERS],
        )
    )
