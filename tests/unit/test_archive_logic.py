"""The archiver's pure logic: keys, redaction, batches, where to resume, coverage checks."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

from schemas.archive import (
    ManifestEntry,
    PendingRange,
    manifest_key,
    object_key,
    parse_object_key,
    pending_key,
)
from stream_processors.archiver.batch import PartitionBatch, compress
from stream_processors.archiver.redaction import redact_event, redact_text
from stream_processors.archiver.resume import resume_point
from stream_processors.archiver.verify import PartitionReport, check_ranges

TS = int(datetime(2026, 11, 24, 13, 59, 59, tzinfo=UTC).timestamp() * 1000)


def test_object_key_is_partitioned_by_topic_and_hour_of_first_record_and_parses_back() -> None:
    key = object_key("archive", "chat.completions", 3, 100, 199, TS)
    assert key == (
        "archive/topic=chat.completions/dt=2026-11-24/hour=13/"
        "part-0003-00000000000000000100-00000000000000000199.jsonl.gz"
    )
    assert parse_object_key(key) == {
        "topic": "chat.completions",
        "dt": "2026-11-24",
        "hour": "13",
        "partition": 3,
        "first": 100,
        "last": 199,
    }
    assert parse_object_key("archive/_manifest/x.json") is None


def test_manifest_and_pending_keys_live_beside_the_data_not_inside_it() -> None:
    assert manifest_key("/archive/", "chat.tokens", 1, 0, 9).startswith(
        "archive/_manifest/topic=chat.tokens/partition=0001/"
    )
    assert pending_key("", "chat.tokens", 1) == "_pending/topic=chat.tokens/partition=0001.json"


def test_redaction_replaces_each_span_with_its_kind() -> None:
    text, found = redact_text("mail me at ada@example.com or call +1 415 555 0100 today")
    assert found == 2
    assert text == "mail me at [REDACTED:email] or call [REDACTED:phone] today"


def test_redaction_covers_every_text_an_event_carries() -> None:
    request: dict[str, Any] = {
        "type": "chat.request",
        "messages": [{"role": "user", "content": "card 4111 1111 1111 1111 please"}],
    }
    chunk = {"type": "chat.token", "text": "ada@example.com", "token_ids": [1, 2, 3]}
    letter = {
        "type": "chat.dead_letter",
        "original_value_b64": base64.b64encode(b"from bob@example.org").decode(),
    }
    assert redact_event(request) == 1
    assert request["messages"][0]["content"] == "card [REDACTED:payment_card] please"
    assert redact_event(chunk) == 1 and chunk["token_ids"] == []
    assert redact_event(letter) == 1
    assert base64.b64decode(letter["original_value_b64"]) == b"from [REDACTED:email]"
    assert redact_event({"type": "chat.completion", "text": "nothing personal"}) == 0


def test_a_batch_is_due_by_size_or_by_age() -> None:
    batch = PartitionBatch("chat.tokens", 0)
    assert not batch.due(max_bytes=10, max_age_s=1.0)
    batch.add(7, TS, {"a": 1})
    assert (batch.first_offset, batch.last_offset, len(batch)) == (7, 7, 1)
    assert not batch.due(max_bytes=1000, max_age_s=1.0, now=batch.opened_at + 0.5)
    assert batch.due(max_bytes=1000, max_age_s=1.0, now=batch.opened_at + 1.0)
    assert batch.due(max_bytes=5, max_age_s=60.0, now=batch.opened_at)


def test_the_same_lines_compress_to_the_same_bytes() -> None:
    lines = [b'{"a":1}\n', b'{"b":2}\n']
    (one, sha_one), (two, sha_two) = compress(lines), compress(list(lines))
    assert one == two and sha_one == sha_two
    assert [json.loads(line) for line in gzip.decompress(one).splitlines()] == [{"a": 1}, {"b": 2}]


def _pending(first: int, last: int) -> PendingRange:
    return PendingRange(topic="chat.tokens", partition=0, first_offset=first, last_offset=last)


def test_resume_after_a_clean_stop_starts_at_the_committed_offset() -> None:
    point = resume_point(50, 0, _pending(40, 49), manifest_lists_pending=True)
    assert (point.seek_to, point.close_at) == (None, None)
    assert resume_point(None, 0, None, False).reason == "clean"


def test_an_archive_that_lost_everything_is_written_again_from_the_log_start() -> None:
    lost = resume_point(50, 10, None, manifest_lists_pending=False)  # committed, no trace in S3
    assert (lost.seek_to, lost.close_at) == (10, None) and "log's start" in lost.reason
    assert resume_point(10, 10, None, False).reason == "clean"  # nothing past the start: new


def test_resume_after_a_crash_before_the_manifest_rearchives_exactly_the_pending_range() -> None:
    point = resume_point(50, 0, _pending(50, 80), manifest_lists_pending=False)
    assert (point.seek_to, point.close_at) == (None, 80)


def test_resume_after_a_crash_before_the_commit_skips_the_archived_range() -> None:
    point = resume_point(50, 0, _pending(50, 80), manifest_lists_pending=True)
    assert (point.seek_to, point.close_at) == (81, None)
    first_ever = resume_point(None, 0, _pending(0, 9), manifest_lists_pending=True)
    assert first_ever.seek_to == 10


def _entry(first: int, last: int) -> ManifestEntry:
    return ManifestEntry(
        topic="chat.tokens",
        partition=0,
        first_offset=first,
        last_offset=last,
        records=last - first + 1,
        object_key=f"k{first}-{last}",
        compressed_bytes=1,
        sha256="x",
        redacted=True,
        archived_at=datetime.now(UTC),
    )


def test_coverage_finds_gaps_and_overlaps_between_ranges_and_against_the_broker() -> None:
    report = PartitionReport("chat.tokens", 0)
    check_ranges(
        report,
        [_entry(10, 19), _entry(0, 9), _entry(25, 30), _entry(30, 31)],
        broker_start=0,
        broker_committed=40,
    )
    assert report.gaps == [(20, 24), (32, 39)]
    assert report.overlaps == [("k25-30", "k30-31")]
    assert (report.first_offset, report.last_offset, report.records) == (0, 31, 28)
    assert not report.ok


def test_contiguous_ranges_covering_the_committed_log_are_ok() -> None:
    report = PartitionReport("chat.tokens", 0)
    check_ranges(report, [_entry(5, 9), _entry(10, 12)], broker_start=5, broker_committed=13)
    assert report.ok and report.records == 8
    missing_start = PartitionReport("chat.tokens", 0)
    check_ranges(missing_start, [_entry(5, 9)], broker_start=0, broker_committed=10)
    assert missing_start.gaps == [(0, 4)]


def test_a_range_inside_a_longer_one_is_an_overlap_not_a_gap() -> None:
    report = PartitionReport("chat.tokens", 0)
    check_ranges(report, [_entry(0, 20), _entry(5, 9), _entry(21, 30)])
    assert report.gaps == [] and report.overlaps == [("k0-20", "k5-9")]


def _record(value: bytes, headers: list[tuple[str, bytes | None]] | None = None) -> object:
    from aiokafka import ConsumerRecord

    return ConsumerRecord(
        topic="chat.requests",
        partition=1,
        offset=42,
        timestamp=TS,
        timestamp_type=0,
        key=b"conv-1",
        value=value,
        checksum=None,
        serialized_key_size=6,
        serialized_value_size=len(value),
        headers=headers or [],
    )


def test_a_poison_message_is_archived_raw_and_never_raises() -> None:
    from stream_processors.archiver.records import archive_line

    deep = archive_line("chat.requests", _record(b"[" * 200_000), redact=True)  # type: ignore[arg-type]
    assert deep["invalid"].startswith("JSONDecodeError: depth limit") and deep["kafka_offset"] == 42
    nulls = archive_line(
        "chat.requests",
        _record(b'{"x": 1}', [("h", None)]),  # type: ignore[arg-type]
        redact=True,
    )
    assert nulls["kafka_headers"] == {"h": ""} and "not a chatbus event" in nulls["invalid"]
    card = archive_line("chat.requests", _record(b"pay 4111 1111 1111 1111"), redact=True)  # type: ignore[arg-type]
    assert base64.b64decode(card["raw_b64"]) == b"pay [REDACTED:payment_card]"
