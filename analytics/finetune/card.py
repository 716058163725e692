"""The data card: what went into the dataset, what was dropped and why, and how it is balanced —
``data_card.json`` for programs and ``data_card.md`` for people (the same facts)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from analytics.lexicon import AXES

FORMAT = "chatbus.dataset_card/1"

REASONS = {
    "no_answer": "no completion archived (the client gave up, or the request was lost)",
    "flagged": "a moderation verdict (input or output) flagged it",
    "finish_content_filter": "cut by output moderation: a cut answer is not a good target",
    "finish_cancelled": "stopped by the client: the answer is cut",
    "finish_error": "the worker failed: the answer is cut or missing",
    "finish_length": "cut at max_tokens: a model would learn to stop mid-sentence",
    "refused": "the answer starts like a refusal (analytics.lexicon.REFUSAL_PATTERN)",
    "empty_answer": "the answer is empty or white space",
    "rated_down": "the user's latest rating is down",
}
RULES = (
    "A turn is one request: its messages as archived (ChatRequest.messages) and its answer "
    "(Completion.text) as the last, assistant, message.",
    "Kept: rated up (the latest rating per request wins), or unrated; dropped for the first of "
    "the reasons below that applies, whatever the rating.",
    "Personal data: the verdicts' PII spans, then the archiver's [REDACTED:<kind>], then a regex "
    "net (e-mails, card-like numbers, phone numbers) become [<kind>] placeholders, in every "
    "message and the answer.",
    "Exact duplicates (same normalised messages and answer) and near duplicates (MinHash LSH over "
    "word n-grams of the messages and answer, Jaccard similarity above the threshold) are "
    "dropped; the best-ranked turn stays: rated up first, then the earliest request.",
    "Split by conversation: validation when sha256('<seed>:<conversation_id>')[:13] / 16^13 < "
    "validation_fraction; a conversation is in one split only.",
    "Balance: a prompt (last user message) with exactly one lexicon term gets a copy for each "
    "other term of its axis, the term swapped in every message and the answer (case kept); the "
    "copies stay in their original's split.",
)


def build(
    *,
    stats: dict[str, Any],
    parameters: dict[str, Any],
    input_root: str,
    output: str,
    files: dict[str, str],
    created_at: datetime,
    seconds: float,
) -> dict[str, Any]:
    """The card as a JSON-ready dict."""
    return {
        "format": FORMAT,
        "created_at": created_at.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "input": input_root,
        "output": output,
        "files": files,
        "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()},
        "counts": {
            "turns_in": stats["turns_in"],
            "kept_after_filters": stats["kept_after_filters"],
            "kept_by_source": stats["kept_by_source"],
            "dropped": stats["dropped"],
            "duplicates": stats["duplicates"],
            "originals": stats["originals"],
            "counterfactuals": stats["counterfactuals"],
            "rows": stats["rows"],
        },
        "drop_reasons": {r: REASONS.get(r, r) for r in stats["dropped"]},
        "redactions": stats["redactions"],
        "splits": stats["splits"],
        "balance": stats["balance"],
        "rules": list(RULES),
    }


def to_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2, ensure_ascii=False) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def to_markdown(card: dict[str, Any]) -> str:
    counts = card["counts"]
    params = card["parameters"]
    lines = [
        "# Data card: chatbus chat fine-tuning set",
        "",
        f"Built {card['created_at']} in {card['seconds']} s from `{card['input']}`.",
        "",
        "## Files",
        "",
        *_table(("what", "where"), list(card["files"].items())),
        'JSONL: one `{"messages": [{"role": …, "content": …}, …]}` a line (OpenAI\'s chat '
        "fine-tuning format), the answer as the last, assistant, message. Parquet columns: "
        "request_id, conversation_id, model, messages, answer, source, axis, term, "
        "counterfactual_of.",
        "",
        "## Counts",
        "",
        *_table(
            ("step", "turns"),
            [
                ("turns in the archive", counts["turns_in"]),
                ("kept after the filters", counts["kept_after_filters"]),
                ("… rated up", counts["kept_by_source"]["rated_up"]),
                ("… unrated", counts["kept_by_source"]["unrated"]),
                ("exact duplicates dropped", counts["duplicates"]["exact"]),
                ("near duplicates dropped", counts["duplicates"]["near"]),
                ("originals in the dataset", counts["originals"]),
                ("counterfactual copies added", counts["counterfactuals"]),
                ("rows in the dataset", counts["rows"]),
            ],
        ),
        "## Dropped, by reason (the first that applies)",
        "",
        *_table(
            ("reason", "turns", "why"),
            [(r, n, card["drop_reasons"][r]) for r, n in counts["dropped"].items()],
        ),
        "## Personal data redacted",
        "",
        *_table(
            ("source", "redactions"),
            [
                ("verdict PII spans", card["redactions"]["spans"]),
                ("archiver placeholders normalised", card["redactions"]["archiver"]),
                ("regex: e-mail", card["redactions"]["email"]),
                ("regex: phone", card["redactions"]["phone"]),
                ("regex: card-like number", card["redactions"]["payment_card"]),
                ("total", card["redactions"]["total"]),
                ("turns with any", card["redactions"]["turns"]),
            ],
        ),
        "## Splits",
        "",
        *_table(
            ("split", "rows", "conversations", "rated up", "unrated", "counterfactual"),
            [
                (
                    split,
                    s["rows"],
                    s["conversations"],
                    s["rated_up"],
                    s["unrated"],
                    s["counterfactual"],
                )
                for split, s in card["splits"].items()
            ],
        ),
        "## Demographic balance (rows whose prompt holds one lexicon term)",
        "",
        *_table(
            ("axis", "term", "before", "after", "after: train", "after: validation"),
            [
                (
                    axis,
                    term,
                    card["balance"]["before"][axis][term],
                    card["balance"]["after"][axis][term],
                    card["balance"]["after_by_split"]["train"][axis][term],
                    card["balance"]["after_by_split"]["validation"][axis][term],
                )
                for axis, terms in AXES.items()
                for term in terms
            ],
        ),
        "## Parameters",
        "",
        *_table(("parameter", "value"), [(k, v) for k, v in params.items()]),
        "## Rules",
        "",
        *[f"- {rule}" for rule in card["rules"]],
        "",
    ]
    return "\n".join(lines)
