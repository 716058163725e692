"""Which turns form a prompt's context (pure logic, no services)."""

from __future__ import annotations

from chatbus.history.turns import ContextTurn, context_messages, select_context
from schemas.events import ChatMessage


def turn(
    n: int,
    *,
    answer: str = "answer",
    finish: str | None = "stop",
    use_history: bool = True,
    text: str = "question",
) -> ContextTurn:
    return ContextTurn(
        request_id=f"req-{n}",
        created_at=float(n),
        messages=(ChatMessage(role="user", content=f"{text} {n}"),),
        answer=f"{answer} {n}" if answer else "",
        finish_reason=finish,
        use_history=use_history,
    )


def ids(turns: list[ContextTurn]) -> list[str]:
    return [t.request_id for t in turns]


def test_turns_come_oldest_first_whatever_their_order_and_exclude_the_request_served() -> None:
    turns = [turn(3), turn(1, use_history=False), turn(2), turn(4)]
    assert ids(select_context(turns, max_turns=10, max_chars=10_000, exclude="req-4")) == [
        "req-1",
        "req-2",
        "req-3",
    ]


def test_only_answered_turns_count() -> None:
    turns = [
        turn(1, use_history=False),
        turn(2, finish="error"),
        turn(3, finish=None),
        turn(4, finish="content_filter"),
        turn(5, finish="cancelled", answer=""),
        turn(6, finish="length"),
    ]
    assert ids(select_context(turns, max_turns=10, max_chars=10_000)) == ["req-1", "req-6"]


def test_a_turn_without_use_history_carried_the_transcript_so_nothing_older_counts() -> None:
    turns = [turn(1, use_history=False), turn(2), turn(3, use_history=False), turn(4)]
    assert ids(select_context(turns, max_turns=10, max_chars=10_000)) == ["req-3", "req-4"]


def test_the_newest_turns_within_the_turn_and_character_budget() -> None:
    turns = [turn(n, use_history=n > 1) for n in range(1, 11)]
    assert ids(select_context(turns, max_turns=3, max_chars=10_000)) == ["req-8", "req-9", "req-10"]
    one = turns[-1].chars()
    assert ids(select_context(turns, max_turns=10, max_chars=2 * one + 1)) == ["req-9", "req-10"]
    # the newest turn always counts, even over budget: the worker trims by tokens
    assert ids(select_context(turns, max_turns=10, max_chars=1)) == ["req-10"]


def test_context_messages_interleave_requests_and_answers() -> None:
    messages = context_messages([turn(1, use_history=False), turn(2)])
    assert [(m.role, m.content) for m in messages] == [
        ("user", "question 1"),
        ("assistant", "answer 1"),
        ("user", "question 2"),
        ("assistant", "answer 2"),
    ]


def test_a_turn_survives_its_json_round_trip() -> None:
    original = turn(7, finish="length")
    assert ContextTurn.from_json(original.to_json()) == original
