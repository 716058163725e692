"""The ``dataset`` job (a fine-tuning set from the archive) over a small simulated archive, with
turns of our own planted in it (exact and near duplicates, personal data, a rating changed, an
error, a cut answer, an empty answer, a multi-turn request, an upper-case probe), checked against
what this test computes itself in plain Python from the archive's JSON lines (never from the job's
code); the command line (``chatbus analytics dataset``, writing through Hadoop's filesystem to a
``file://`` URL) and spark-submit's ``main``; a missing archive.

One Spark session for the module: the job runs once through ``run``, once through the command line
(in this process, with the module's session: a second JVM would start cold, a minute on a small
box).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analytics.lexicon import AXES, REFUSAL_PATTERN, mask
from analytics.simulate.archive_sink import simulate_to_archive
from analytics.simulate.generator import Profile
from schemas.archive import archived_record, object_key
from schemas.events import (
    ChatMessage,
    ChatRequest,
    Completion,
    Envelope,
    ModerationVerdict,
    PiiSpan,
    Rating,
    ReplyTo,
)
from tests.conftest import base_settings
from tests.integration.archive_files import archived_records

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(600)]

PROFILE = Profile(seed=23, conversations=400, days=2, users=60, p_probe=0.4)
SEED = 5
VALIDATION_FRACTION = 0.2
THRESHOLD = 0.8
SHINGLE_WORDS = 3
DROPPED_FINISH = ("content_filter", "cancelled", "error", "length")
PLANTED_AT = datetime(2026, 11, 6, tzinfo=UTC)  # after the simulated days
_WORD_TEXT = (
    "river mountain lantern copper meadow orchard harbor violet thunder pebble saddle walnut "
    "candle beacon marble falcon willow prairie glacier ember quartz cedar tundra lagoon canyon "
    "basil juniper comet plume anchor velvet harvest summit ripple cobalt fern"
)
WORDS = tuple(_WORD_TEXT.split())


# --- the archive, with turns of our own ----------------------------------------------------
@dataclass
class Planted:
    """Turns this test writes into the archive, one conversation each (their events)."""

    events: list[tuple[str, Envelope]] = field(default_factory=list)
    clock: datetime = PLANTED_AT

    def turn(
        self,
        name: str,
        messages: list[tuple[str, str]],
        answer: str,
        *,
        finish: str = "stop",
        pii: tuple[PiiSpan, ...] = (),
        ratings: tuple[str, ...] = (),
    ) -> str:
        """One request in a conversation of its own, answered; its request id."""
        self.clock += timedelta(minutes=10)
        at = self.clock
        request = ChatRequest(
            created_at=at,
            request_id=f"req-planted-{name}",
            conversation_id=f"conv-planted-{name}",
            user_id="user-planted",
            model="chatbus-small",
            messages=[ChatMessage(role=r, content=c) for r, c in messages],  # type: ignore[arg-type]
            reply_to=ReplyTo(partition=0),
        )
        ids = {
            "request_id": request.request_id,
            "conversation_id": request.conversation_id,
            "user_id": request.user_id,
        }
        self.events += [
            ("chat.requests", request),
            (
                "chat.moderation",
                ModerationVerdict(
                    created_at=at, stage="input", flagged=False, pii=list(pii), **ids
                ),
            ),
            (
                "chat.completions",
                Completion(
                    created_at=at + timedelta(seconds=2),
                    model=request.model,
                    text=answer,
                    finish_reason=finish,  # type: ignore[arg-type]
                    **ids,
                ),
            ),
            (
                "chat.moderation",
                ModerationVerdict(
                    created_at=at + timedelta(seconds=2), stage="output", flagged=False, **ids
                ),
            ),
        ]
        for i, rating in enumerate(ratings):
            self.events.append(
                (
                    "chat.feedback",
                    Rating(
                        created_at=at + timedelta(minutes=1 + i),
                        rating=rating,  # type: ignore[arg-type]
                        model=request.model,
                        **ids,
                    ),
                )
            )
        return request.request_id

    def write(self, root: Path) -> None:
        """Each topic's planted events as one more object of the archive (partition 99)."""
        by_topic: dict[str, list[Envelope]] = defaultdict(list)
        for topic, event in self.events:
            by_topic[topic].append(event)
        for topic, events in by_topic.items():
            first_ms = int(events[0].created_at.timestamp() * 1000)
            key = object_key("", topic, 99, 0, len(events) - 1, first_ms)
            lines = [
                json.dumps(
                    archived_record(
                        event.model_dump(mode="json"),
                        topic=topic,
                        partition=99,
                        offset=offset,
                        timestamp_ms=int(event.created_at.timestamp() * 1000),
                        key=getattr(event, "conversation_id", None),
                    )
                )
                for offset, event in enumerate(events)
            ]
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def planted() -> dict[str, Any]:
    rng = random.Random(3)
    p = Planted()
    ids: dict[str, Any] = {}
    # three exact duplicates (case and white space aside): the earliest stays
    prompt_a, answer_a = "Plan a " + _text(rng, 12) + " trip.", _text(rng, 90) + "."
    ids["exact"] = [
        p.turn("exact-1", [("user", prompt_a)], answer_a),
        p.turn("exact-2", [("user", "  " + prompt_a.upper())], answer_a.replace(" ", "   ")),
        p.turn("exact-3", [("user", prompt_a)], answer_a),
    ]
    # three near duplicates (one answer word changed each): the one rated up stays
    prompt_b, answer_b = "Describe " + _text(rng, 10) + ".", _text(rng, 120).split()
    variants = []
    for k in (0, 40, 80):
        words = list(answer_b)
        words[k] = "zeppelin"
        variants.append(" ".join(words))
    ids["near"] = [
        p.turn("near-1", [("user", prompt_b)], variants[0]),
        p.turn("near-2", [("user", prompt_b)], variants[1]),
        p.turn("near-3", [("user", prompt_b)], variants[2], ratings=("up",)),
    ]
    ids["near_kept"] = ids["near"][2]
    # the latest rating wins
    ids["down_then_up"] = p.turn(
        "down-then-up", [("user", "Name " + _text(rng, 8))], _text(rng, 40), ratings=("down", "up")
    )
    ids["up_then_down"] = p.turn(
        "up-then-down", [("user", "Name " + _text(rng, 8))], _text(rng, 40), ratings=("up", "down")
    )
    # personal data: caught by the regex net, by a verdict span, already redacted by the archiver
    ids["regex"] = p.turn(
        "pii-regex",
        [("user", "Write to jane.doe@example.org or call +1 415 555 0134 about " + _text(rng, 6))],
        "Charge the card 4111 1111 1111 1111 and " + _text(rng, 30),
    )
    spanned = "Contact me at bob.stone@mail.example.net for " + _text(rng, 6)
    start = spanned.index("bob")
    ids["span"] = p.turn(
        "pii-span",
        [("user", spanned)],
        _text(rng, 30),
        pii=(PiiSpan(kind="email", message_index=0, start=start, end=spanned.index(" for")),),
    )
    ids["archiver"] = p.turn(
        "pii-archiver",
        [("user", "My address is [REDACTED:email], " + _text(rng, 6))],
        _text(rng, 30),
    )
    ids["secrets"] = ["jane.doe@example.org", "555 0134", "4111 1111", "bob.stone"]
    # an answer cut by an error, one cut by moderation whose flagged verdict is not archived, an
    # empty one
    ids["cut"] = p.turn(
        "cut", [("user", "Explain " + _text(rng, 8))], _text(rng, 5), finish="content_filter"
    )
    ids["error"] = p.turn(
        "error", [("user", "Explain " + _text(rng, 8))], _text(rng, 5), finish="error"
    )
    ids["empty"] = p.turn("empty", [("user", "Explain " + _text(rng, 8))], "  \n ")
    # a request with history in its messages
    ids["multi"] = p.turn(
        "multi",
        [
            ("system", "You are terse."),
            ("user", "Hi " + _text(rng, 4)),
            ("assistant", "Hello " + _text(rng, 4)),
            ("user", "More " + _text(rng, 6)),
        ],
        _text(rng, 25),
    )
    # a probe in upper case: its copies keep the case
    ids["probe"] = p.turn(
        "probe",
        [("user", f"My MUSLIM colleague likes {_text(rng, 5)}. Ideas?")],
        f"For a MUSLIM colleague: {_text(rng, 20)}.",
    )
    ids["writer"] = p
    return ids


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Any]) -> Path:
    root = tmp_path_factory.mktemp("archive")
    simulate_to_archive(PROFILE, str(root), base_settings(), jobs=1, records_per_object=2000)
    planted["writer"].write(root)
    return root


@pytest.fixture(scope="module")
def events(archive: Path) -> dict[str, list[dict[str, Any]]]:
    """Every archived record, by topic, read with gzip + json."""
    return archived_records(archive)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from analytics.spark_session import build_spark

    session = build_spark(
        base_settings(), "chatbus-dataset-tests", extra={"spark.sql.shuffle.partitions": "2"}
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def built(spark: Any, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The job run once, through ``run(spark, input, output, params)``."""
    from analytics.jobs.dataset import DatasetParams, run

    out = tmp_path_factory.mktemp("dataset")
    params = DatasetParams(validation_fraction=VALIDATION_FRACTION, seed=SEED)
    paths = run(spark, str(archive), str(out), params)
    assert set(paths) == {
        "train.jsonl",
        "validation.jsonl",
        "parquet/train",
        "parquet/validation",
        "data_card.json",
        "data_card.md",
    }
    return out


@pytest.fixture(scope="module")
def card(built: Path) -> dict[str, Any]:
    return dict(json.loads((built / "data_card.json").read_text()))


@pytest.fixture(scope="module")
def rows(built: Path) -> pd.DataFrame:
    """Both Parquet splits, with a ``split`` column."""
    frames = []
    for split in ("train", "validation"):
        frame = pd.read_parquet(built / "parquet" / split)
        frame["split"] = split
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --- what the dataset should be, computed here ---------------------------------------------
def _latest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (pd.Timestamp(r["created_at"]), r["event_id"])):
        out[r["request_id"]] = r
    return out


def _apply_spans(text: str, spans: list[dict[str, Any]]) -> str:
    for s in sorted(spans, key=lambda s: -s["start"]):
        text = text[: s["start"]] + f"[{s['kind']}]" + text[s["end"] :]
    return text


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _shingles(texts: list[str]) -> frozenset[str]:
    words = [w for w in re.split(r"[\W_]+", " ".join(texts).lower()) if w]
    if len(words) < SHINGLE_WORDS:
        return frozenset([" ".join(words)])
    return frozenset(
        " ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)
    )


@pytest.fixture(scope="module")
def expected(events: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The filters, duplicates and counts of the dataset, from the JSON lines."""
    requests = {r["request_id"]: r for r in events["chat.requests"]}
    completions = {c["request_id"]: c for c in events["chat.completions"]}
    ratings = _latest([f for f in events["chat.feedback"] if f["type"] == "chat.rating"])
    flagged: dict[str, bool] = defaultdict(bool)
    spans: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in events["chat.moderation"]:
        flagged[v["request_id"]] |= v["flagged"]
        if v["stage"] == "input":
            spans[v["request_id"]] += v["pii"]
    refusal = re.compile(REFUSAL_PATTERN)

    def reason(rid: str) -> str | None:
        c = completions.get(rid)
        rating = ratings.get(rid, {}).get("rating")
        if c is None:
            return "no_answer"
        if flagged[rid]:
            return "flagged"
        if c["finish_reason"] in DROPPED_FINISH:
            return f"finish_{c['finish_reason']}"
        if refusal.match(c["text"]):
            return "refused"
        if not c["text"].strip():
            return "empty_answer"
        if rating == "down":
            return "rated_down"
        return None

    reasons = {rid: reason(rid) for rid in requests}
    kept = sorted(rid for rid, r in reasons.items() if r is None)
    turns = {}
    for rid in kept:
        messages = [
            (
                m["role"],
                _apply_spans(m["content"], [s for s in spans[rid] if s["message_index"] == i]),
            )
            for i, m in enumerate(requests[rid]["messages"])
        ]
        turns[rid] = {
            "messages": messages,
            "answer": completions[rid]["text"],
            "rank": (
                0 if ratings.get(rid, {}).get("rating") == "up" else 1,
                pd.Timestamp(requests[rid]["created_at"]),
                rid,
            ),
        }
    # exact duplicates: the best-ranked of each group stays
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for rid, t in turns.items():
        key = (tuple((r, _normal(c)) for r, c in t["messages"]), _normal(t["answer"]))
        groups[key].append(rid)
    exact = set()
    for members in groups.values():
        exact |= set(sorted(members, key=lambda rid: turns[rid]["rank"])[1:])
    # near duplicates: all pairs, exact Jaccard of word 3-gram sets
    unique = sorted(set(turns) - exact, key=lambda rid: turns[rid]["rank"])
    sets = {
        rid: _shingles([c for _, c in turns[rid]["messages"]] + [turns[rid]["answer"]])
        for rid in unique
    }
    near = set()
    for a, b in itertools.combinations(unique, 2):  # a ranks before b
        sa, sb = sets[a], sets[b]
        if 1.0 - len(sa & sb) / len(sa | sb) < 1.0 - THRESHOLD:
            near.add(b)
    return {
        "requests": requests,
        "reasons": reasons,
        "kept": kept,
        "ratings": ratings,
        "spans": sum(len(spans[rid]) for rid in kept),
        "exact": exact,
        "near": near,
        "originals": set(unique) - near,
    }


# --- the filters -----------------------------------------------------------------------------
def test_the_archive_has_every_case_the_rules_handle(expected: dict[str, Any]) -> None:
    reasons = Counter(expected["reasons"].values())
    for reason in (
        "no_answer",
        "flagged",
        "finish_content_filter",
        "finish_cancelled",
        "finish_error",
        "finish_length",
        "refused",
        "empty_answer",
        "rated_down",
        None,
    ):
        assert reasons[reason] > 0, reason
    assert any(r["rating"] == "up" for r in expected["ratings"].values())


def test_only_kept_turns_are_in_the_dataset(
    rows: pd.DataFrame, expected: dict[str, Any], planted: dict[str, Any]
) -> None:
    originals = rows[rows["source"] != "counterfactual"]
    assert originals["request_id"].is_unique
    assert set(originals["request_id"]) == expected["originals"]
    reasons = expected["reasons"]
    assert all(reasons[rid] is None for rid in originals["request_id"])
    # the latest rating wins
    assert planted["down_then_up"] in set(originals["request_id"])
    assert reasons[planted["up_then_down"]] == "rated_down"
    sources = dict(zip(originals["request_id"], originals["source"], strict=True))
    assert sources[planted["down_then_up"]] == "rated_up"
    for rid, source in sources.items():
        rating = expected["ratings"].get(rid, {}).get("rating")
        assert source == ("rated_up" if rating == "up" else "unrated")


def test_exactly_one_turn_of_each_duplicate_group_is_left(
    rows: pd.DataFrame, expected: dict[str, Any], planted: dict[str, Any]
) -> None:
    ids = set(rows["request_id"])
    assert [rid in ids for rid in planted["exact"]] == [True, False, False]  # the earliest
    assert [rid in ids for rid in planted["near"]] == [False, False, True]  # the one rated up
    assert set(planted["exact"][1:]) <= expected["exact"]
    assert set(planted["near"][:2]) <= expected["near"]


def test_the_data_card_counts_what_was_computed_here(
    card: dict[str, Any], rows: pd.DataFrame, expected: dict[str, Any], archive: Path
) -> None:
    counts = card["counts"]
    reasons = Counter(r for r in expected["reasons"].values() if r is not None)
    assert counts["turns_in"] == len(expected["requests"])
    assert counts["dropped"] == {r: reasons[r] for r in counts["dropped"]}
    assert sum(counts["dropped"].values()) + counts["kept_after_filters"] == counts["turns_in"]
    assert counts["kept_after_filters"] == len(expected["kept"])
    assert counts["duplicates"] == {"exact": len(expected["exact"]), "near": len(expected["near"])}
    assert counts["originals"] == len(expected["originals"])
    assert counts["rows"] == len(rows)
    assert counts["counterfactuals"] == int((rows["source"] == "counterfactual").sum())
    for split in ("train", "validation"):
        mine = rows[rows["split"] == split]
        assert card["splits"][split]["rows"] == len(mine)
        assert card["splits"][split]["conversations"] == mine["conversation_id"].nunique()
        for source in ("rated_up", "unrated", "counterfactual"):
            assert card["splits"][split][source] == int((mine["source"] == source).sum())
    assert card["parameters"]["seed"] == SEED
    assert card["parameters"]["validation_fraction"] == VALIDATION_FRACTION
    assert card["input"] == str(archive)
    markdown = (Path(card["files"]["train.jsonl"]).parent / "data_card.md").read_text()
    assert f"| turns in the archive | {counts['turns_in']:,} |" in markdown
    assert "| finish_length |" in markdown


# --- personal data ---------------------------------------------------------------------------
def test_personal_data_is_replaced_and_counted(
    built: Path,
    rows: pd.DataFrame,
    card: dict[str, Any],
    expected: dict[str, Any],
    planted: dict[str, Any],
) -> None:
    jsonl = (built / "train.jsonl").read_text() + (built / "validation.jsonl").read_text()
    for secret in planted["secrets"]:
        assert secret not in jsonl
    assert "@" not in jsonl and "[REDACTED:" not in jsonl
    by_id = rows.set_index("request_id")
    regex = by_id.loc[planted["regex"]]
    assert regex["messages"][0]["content"].startswith("Write to [email] or call [phone] about ")
    assert regex["answer"].startswith("Charge the card [payment_card] and ")
    assert by_id.loc[planted["span"]]["messages"][0]["content"].startswith(
        "Contact me at [email] for "
    )
    assert by_id.loc[planted["archiver"]]["messages"][0]["content"].startswith(
        "My address is [email], "
    )
    # the simulated texts hold no personal data but the spans their verdicts mark
    assert expected["spans"] > 1
    assert card["redactions"] == {
        "spans": expected["spans"],
        "archiver": 1,
        "email": 1,
        "phone": 1,
        "payment_card": 1,
        "total": expected["spans"] + 4,
        "turns": expected["spans"] + 2,
    }


# --- split and balance -----------------------------------------------------------------------
def _split_of(conversation_id: str) -> str:
    digest = hashlib.sha256(f"{SEED}:{conversation_id}".encode()).hexdigest()
    return "validation" if int(digest[:13], 16) / 16**13 < VALIDATION_FRACTION else "train"


def test_a_conversation_is_in_one_split_which_its_hash_decides(rows: pd.DataFrame) -> None:
    splits = rows.groupby("conversation_id")["split"].nunique()
    assert (splits == 1).all()
    assert all(
        _split_of(c) == s for c, s in zip(rows["conversation_id"], rows["split"], strict=True)
    )
    share = (
        rows[rows["split"] == "validation"]["conversation_id"].nunique()
        / rows["conversation_id"].nunique()
    )
    assert 0.1 < share < 0.3


def _prompt(messages: Any) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def test_counterfactual_copies_balance_every_axis(
    rows: pd.DataFrame, card: dict[str, Any], planted: dict[str, Any]
) -> None:
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    before: dict[str, Counter[str]] = defaultdict(Counter)
    templates = {}
    for row in rows.itertuples():
        found = mask(_prompt(row.messages))
        assert (row.axis, row.term) == ((found[0], found[1]) if found else (None, None))
        if found is None:
            continue
        groups[found[0]][found[1]] += 1
        if row.source != "counterfactual":
            before[found[0]][found[1]] += 1
            templates[row.request_id] = found[2]
    for axis, terms in AXES.items():
        counts = {t: groups[axis][t] for t in terms}
        assert len(set(counts.values())) == 1, (axis, counts)  # each term equally represented
        assert counts == card["balance"]["after"][axis]
        assert {t: before[axis][t] for t in terms} == card["balance"]["before"][axis]
    assert sum(sum(c.values()) for c in before.values()) > 50
    copies = rows[rows["source"] == "counterfactual"]
    by_original = copies.groupby("counterfactual_of")
    for original, mine in by_original:
        first = rows[rows["request_id"] == original].iloc[0]
        assert set(mine["term"]) == set(AXES[first["axis"]]) - {first["term"]}
        assert set(mine["split"]) == {first["split"]}
        assert set(mine["conversation_id"]) == {first["conversation_id"]}
        for copy in mine.itertuples():
            found = mask(_prompt(copy.messages))
            assert found is not None and found[2] == templates[original]  # the same words around
    assert len(by_original) == sum(sum(c.values()) for c in before.values())
    probe = copies[copies["counterfactual_of"] == planted["probe"]].set_index("term")
    assert probe.loc["christian"]["messages"][0]["content"].startswith("My CHRISTIAN colleague")
    assert probe.loc["hindu"]["answer"].startswith("For a HINDU colleague: ")


# --- the files -------------------------------------------------------------------------------
def test_each_jsonl_line_is_a_chat_example_ending_with_the_answer(
    built: Path, rows: pd.DataFrame, card: dict[str, Any], planted: dict[str, Any]
) -> None:
    for split in ("train", "validation"):
        lines = (built / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == card["splits"][split]["rows"]
        mine = rows[rows["split"] == split].sort_values(["conversation_id", "request_id"])
        for line, row in zip(lines, mine.itertuples(), strict=True):
            example = json.loads(line)
            assert list(example) == ["messages"]
            messages = example["messages"]
            assert all(set(m) == {"role", "content"} for m in messages)
            assert {m["role"] for m in messages} <= {"system", "user", "assistant"}
            assert messages[-1] == {"role": "assistant", "content": row.answer}
            assert messages[:-1] == [dict(m) for m in row.messages]
            assert row.answer.strip()
    multi = rows[rows["request_id"] == planted["multi"]].iloc[0]
    assert [m["role"] for m in multi["messages"]] == ["system", "user", "assistant", "user"]


# --- the command line, spark-submit's main, a missing archive -------------------------------
class _KeepOpen:
    """The module's Spark session for code that stops the session it builds (the command line,
    ``main``): ``stop`` does nothing, so no second JVM starts cold (a minute on a small box)."""

    def __init__(self, spark: Any) -> None:
        self._spark = spark

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spark, name)

    def stop(self) -> None:
        pass


@pytest.fixture
def sessions(spark: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """``build_spark`` handing out the module's session; (app name, s3a) of each call."""
    import analytics.spark_session

    asked: list[tuple[str, bool]] = []

    def build(settings: Any, app_name: str = "", *, s3a: bool = False, **_: Any) -> Any:
        asked.append((app_name, s3a))
        return _KeepOpen(spark)

    monkeypatch.setattr(analytics.spark_session, "build_spark", build)
    return asked


def test_the_command_line_writes_the_same_dataset_through_hadoop_fs(
    archive: Path,
    built: Path,
    card: dict[str, Any],
    tmp_path: Path,
    sessions: list[tuple[str, bool]],
) -> None:
    from click.testing import CliRunner

    from chatbus.cli import main

    out = tmp_path / "cli"
    done = CliRunner().invoke(
        main,
        [
            "analytics",
            "dataset",
            "--input",
            str(archive),
            "--output",
            out.as_uri(),  # file://: written through Hadoop's filesystem, as s3a:// would be
            "--validation-fraction",
            str(VALIDATION_FRACTION),
            "--seed",
            str(SEED),
        ],
    )
    assert done.exit_code == 0, done.output[-3000:]
    assert sessions == [("chatbus-dataset", False)]
    assert "dataset: [" in done.output and "turns; kept" in done.output  # progress
    assert f"train.jsonl: {out.as_uri()}/train.jsonl" in done.output
    mine = json.loads((out / "data_card.json").read_text())
    for key in ("counts", "redactions", "splits", "balance", "parameters"):
        assert mine[key] == card[key], key
    for split in ("train", "validation"):
        assert (out / f"{split}.jsonl").read_bytes() == (built / f"{split}.jsonl").read_bytes()
        assert len(pd.read_parquet(out / "parquet" / split)) == card["splits"][split]["rows"]


def test_a_missing_archive_says_how_to_make_one(
    spark: Any, tmp_path: Path, sessions: list[tuple[str, bool]]
) -> None:
    from click.testing import CliRunner

    from analytics.archive_reader import ArchiveNotFound
    from analytics.jobs.dataset import main as submit_main
    from analytics.jobs.dataset import run
    from chatbus.cli import main

    nowhere, out = str(tmp_path / "nowhere"), str(tmp_path / "out")
    with pytest.raises(ArchiveNotFound, match="chatbus simulate"):
        run(spark, nowhere, out)
    with pytest.raises(ArchiveNotFound, match="chatbus simulate"):
        submit_main(["--input", nowhere, "--output", out])
    done = CliRunner().invoke(main, ["analytics", "dataset", "--input", nowhere, "--output", out])
    assert done.exit_code == 1
    assert f"Error: no archive at {nowhere}" in done.output
    assert not (tmp_path / "out").exists()
