"""The conversation simulator: realistic, internally consistent, reproducible events."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from analytics.archive_reader import TOPIC_EVENTS
from analytics.lexicon import mask
from analytics.simulate.archive_sink import Target, archive_line, simulate_to_archive
from analytics.simulate.generator import (
    MODERATION_WORKER,
    Profile,
    SimEvent,
    Simulator,
    conversations_for_events,
)
from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from schemas.archive import ManifestEntry, archived_record, parse_object_key
from schemas.events import (
    CancelRequest,
    ChatRequest,
    Completion,
    ModerationVerdict,
    TokenChunk,
    parse_event,
)
from schemas.topics import TopicName

PROFILE = Profile(seed=5, conversations=400, days=2, users=50)


@pytest.fixture(scope="module")
def conversations() -> list[list[SimEvent]]:
    sim = Simulator(PROFILE)
    return [sim.conversation(i) for i in range(PROFILE.conversations)]


def _all(conversations: list[list[SimEvent]]) -> list[SimEvent]:
    return [e for conv in conversations for e in conv]


def test_the_same_seed_gives_the_same_conversation_and_another_seed_another() -> None:
    one, two = Simulator(PROFILE), Simulator(PROFILE)
    dump = [e.event.model_dump_json() for e in one.conversation(17)]
    assert dump == [e.event.model_dump_json() for e in two.conversation(17)]
    other = Simulator(replace(PROFILE, seed=6)).conversation(17)
    assert dump != [e.event.model_dump_json() for e in other]


def test_every_event_is_a_valid_bus_event_on_its_topic(conversations: list[list[SimEvent]]) -> None:
    for e in _all(conversations)[:5000]:
        topic = TopicName(e.topic)
        assert topic != TopicName.DLQ
        assert isinstance(parse_event(e.event.model_dump_json()), TOPIC_EVENTS[topic])  # a tuple
        assert 0 <= e.partition < PROFILE.partitions


def test_each_conversation_is_in_time_order_and_keeps_its_ids(
    conversations: list[list[SimEvent]],
) -> None:
    for conv in conversations:
        stamps = [e.timestamp_ms for e in conv]
        assert stamps == sorted(stamps)
        requests = [
            e.event
            for e in conv
            if e.topic == TopicName.REQUESTS and isinstance(e.event, ChatRequest)
        ]
        assert len({r.conversation_id for r in requests}) == 1
        assert [r.use_history for r in requests] == [i > 0 for i in range(len(requests))]
        assert len({r.user_id for r in requests}) == 1


def test_streams_match_their_completions(conversations: list[list[SimEvent]]) -> None:
    chunks: dict[str, list[TokenChunk]] = defaultdict(list)
    completions: dict[str, Completion] = {}
    for e in _all(conversations):
        if isinstance(e.event, TokenChunk):
            chunks[e.event.request_id].append(e.event)
        elif isinstance(e.event, Completion):
            completions[e.event.request_id] = e.event
    assert set(chunks) == set(completions)
    for request_id, completion in completions.items():
        stream = sorted(chunks[request_id], key=lambda c: c.seq)
        assert [c.seq for c in stream] == list(range(len(stream)))
        assert stream[-1].finish_reason == completion.finish_reason
        assert all(c.finish_reason is None for c in stream[:-1])
        assert "".join(c.text for c in stream) == completion.text
        if completion.worker_id != MODERATION_WORKER:
            assert sum(len(c.token_ids) for c in stream) == completion.usage.completion_tokens
            assert stream[-1].usage == completion.usage
            assert completion.timings.time_to_first_token_ms is not None
            assert all(len(c.token_ids) <= 8 for c in stream)


def test_the_traffic_has_long_tails_cancellations_refusals_and_several_users_and_models(
    conversations: list[list[SimEvent]],
) -> None:
    events = _all(conversations)
    completions = [e.event for e in events if isinstance(e.event, Completion)]
    reasons = Counter(c.finish_reason for c in completions)
    assert {"stop", "length", "cancelled", "content_filter"} <= set(reasons)
    assert 0.01 < reasons["cancelled"] / len(completions) < 0.15
    lengths = sorted(c.usage.completion_tokens for c in completions if c.finish_reason == "stop")
    median, p99 = lengths[len(lengths) // 2], lengths[int(len(lengths) * 0.99)]
    assert p99 > 4 * median  # a long tail
    prompts = sorted(
        len(e.event.messages[-1].content.split())
        for e in events
        if isinstance(e.event, ChatRequest) and e.topic == TopicName.REQUESTS
    )
    assert prompts[-1] > 20 * prompts[len(prompts) // 2]
    assert len({c.model for c in completions}) == 3
    assert len({c.worker_id for c in completions}) >= 6
    assert len({c.user_id for c in completions}) > 30
    cancelled = {c.request_id for c in completions if c.finish_reason == "cancelled"}
    cancels = {
        e.event.request_id
        for e in events
        if isinstance(e.event, CancelRequest) and e.event.reason == "client_cancelled"
    }
    assert cancelled == cancels
    verdicts = [e.event for e in events if isinstance(e.event, ModerationVerdict)]
    assert any(v.flagged and v.stage == "input" and v.action == "block" for v in verdicts)
    assert any(v.flagged and v.stage == "output" for v in verdicts)
    pii = [v for v in verdicts if v.pii]
    assert pii
    requests = {e.event.request_id: e.event for e in events if isinstance(e.event, ChatRequest)}
    for v in pii:
        span = v.pii[0]
        text = requests[v.request_id].messages[span.message_index].content
        assert "@example.com" in text[span.start : span.end]


def test_blocked_requests_get_the_moderation_refusal_and_never_reach_a_worker(
    conversations: list[list[SimEvent]],
) -> None:
    events = _all(conversations)
    blocked = {
        e.event.request_id
        for e in events
        if isinstance(e.event, ModerationVerdict) and e.event.action == "block"
    }
    approved = {
        e.event.request_id
        for e in events
        if e.topic == TopicName.REQUESTS_APPROVED and isinstance(e.event, ChatRequest)
    }
    assert blocked and not blocked & approved
    for e in events:
        if isinstance(e.event, Completion) and e.event.request_id in blocked:
            assert (e.event.finish_reason, e.event.worker_id) == (
                "content_filter",
                MODERATION_WORKER,
            )


def test_probe_prompts_pair_up_on_templates_that_differ_only_in_a_term(
    conversations: list[list[SimEvent]],
) -> None:
    probes = [
        mask(e.event.messages[-1].content)
        for e in _all(conversations)
        if e.topic == TopicName.REQUESTS and isinstance(e.event, ChatRequest)
    ]
    found = [p for p in probes if p is not None]
    assert 0.08 < len(found) / len(probes) < 0.3
    terms_per_template: dict[tuple[str, str], set[str]] = defaultdict(set)
    for axis, term, template in found:
        terms_per_template[(axis, template)].add(term)
    assert max(len(t) for t in terms_per_template.values()) >= 3


def test_conversations_for_events_lands_near_the_target() -> None:
    n = conversations_for_events(PROFILE, 50_000)
    sim = Simulator(replace(PROFILE, conversations=n))
    total = sum(len(sim.conversation(i)) for i in range(n))
    assert 0.85 * 50_000 < total < 1.15 * 50_000


# --- the archive sink ------------------------------------------------------------------------
def test_an_archive_line_is_exactly_what_archived_record_gives() -> None:
    event = Simulator(PROFILE).conversation(3)[0]
    line = archive_line(
        event.event.model_dump_json(),
        topic=event.topic,
        partition=event.partition,
        offset=42,
        timestamp_ms=event.timestamp_ms,
        key=event.key,
    )
    record = archived_record(
        json.loads(event.event.model_dump_json()),
        topic=event.topic,
        partition=event.partition,
        offset=42,
        timestamp_ms=event.timestamp_ms,
        key=event.key,
    )
    assert json.loads(line) == record
    assert line == (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _read(root: Path) -> tuple[dict[tuple[str, int], list[dict[str, object]]], list[ManifestEntry]]:
    slots: dict[tuple[str, int], list[dict[str, object]]] = defaultdict(list)
    for path in sorted(root.glob("topic=*/dt=*/hour=*/*.jsonl.gz")):
        key = str(path.relative_to(root))
        parts = parse_object_key(key)
        assert parts is not None
        lines = [json.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
        assert [r["kafka_offset"] for r in lines] == list(range(parts["first"], parts["last"] + 1))
        slots[(parts["topic"], parts["partition"])].extend(lines)
    manifest = [
        ManifestEntry.model_validate_json(p.read_text())
        for p in root.glob("_manifest/topic=*/partition=*/*.json")
    ]
    return slots, manifest


def test_the_archive_layout_has_contiguous_offsets_a_manifest_and_the_same_events_in_parallel(
    tmp_path: Path,
) -> None:
    profile = replace(PROFILE, conversations=120)
    settings = Settings()
    one = simulate_to_archive(
        profile, str(tmp_path / "one"), settings, jobs=1, records_per_object=300
    )
    two = simulate_to_archive(
        profile, str(tmp_path / "two"), settings, jobs=2, records_per_object=300
    )
    assert one.events == two.events > 5000
    for root in (tmp_path / "one", tmp_path / "two"):
        slots, manifest = _read(root)
        for (_topic, _partition), records in slots.items():
            offsets = sorted(int(r["kafka_offset"]) for r in records)  # type: ignore[call-overload]
            assert offsets == list(range(len(offsets)))
        assert sum(m.records for m in manifest) == one.events
        for entry in manifest:
            assert (root / entry.object_key).stat().st_size == entry.compressed_bytes
    ids = [
        {r["event_id"] for rs in _read(tmp_path / name)[0].values() for r in rs}
        for name in ("one", "two")
    ]
    assert ids[0] == ids[1]


def test_an_existing_archive_is_detected_and_only_its_own_folders_are_cleared(
    tmp_path: Path,
) -> None:
    settings = Settings()
    simulate_to_archive(replace(PROFILE, conversations=5), str(tmp_path), settings)
    (tmp_path / "notes.txt").write_text("mine")
    target = Target.parse(str(tmp_path))
    assert target.holds_archive(settings)
    target.clear(settings)
    assert not target.holds_archive(settings)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_targets_parse_folders_and_buckets_and_refuse_other_schemes() -> None:
    assert Target.parse("s3://b/some/prefix/") == Target(bucket="b", prefix="some/prefix")
    assert Target.parse("s3a://b").spark_root == "s3a://b"
    assert Target.parse("/tmp/x").local_root == Path("/tmp/x")
    with pytest.raises(ConfigurationError, match="s3://BUCKET"):
        Target.parse("gs://b/x")
