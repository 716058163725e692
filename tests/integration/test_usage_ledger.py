"""The usage ledger against the real broker and the real PostgreSQL: every completion on
``chat.completions`` is one row, written with the reader's offsets in one transaction, so a
SIGKILL at any moment, a replay or PostgreSQL going away can neither drop nor double one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbus.accounts.database import connect
from chatbus.health import Health
from chatbus.kafka.lag import log_offsets
from chatbus.kafka.publisher import EventPublisher
from chatbus.polling import eventually, poll_until
from chatbus.settings import Settings
from schemas.events import Completion, ErrorInfo, Usage
from schemas.topics import TopicName
from stream_processors.ledger.reader import LedgerReader
from tests.integration.processors import start_cli
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger_settings(bus: Settings) -> Iterator[Settings]:
    """The test's topics and a key of its own; its rows, months and offsets deleted afterwards."""
    settings = bus.replace(**{"postgres_ledger_batch": 40, "session_timeout_ms": 6000})
    yield settings
    group = settings.topic(settings.postgres.ledger_group)
    with connect(settings) as conn:
        conn.execute(
            "DELETE FROM usage_ledger WHERE request_id LIKE %s", (f"req-{_tag(settings)}%",)
        )
        conn.execute("DELETE FROM usage_monthly WHERE key_id = %s", (_key(settings),))
        conn.execute("DELETE FROM consumer_offsets WHERE group_id = %s", (group,))


def _tag(settings: Settings) -> str:
    return settings.kafka.topic_prefix.strip(".").replace("-", "")


def _key(settings: Settings) -> str:
    return f"key-{_tag(settings)}"


def _completion(settings: Settings, i: int, *, finish: str = "stop") -> Completion:
    """Request i of the test: 10 + i % 5 prompt tokens, i % 7 generated (0 for a refusal)."""
    refused = finish == "content_filter"
    return Completion(
        request_id=f"req-{_tag(settings)}x{i:05d}",
        conversation_id=f"conv-{i % 11}",
        user_id="ledger-user",
        key_id=_key(settings),
        model="m",
        text="",
        finish_reason=finish,  # type: ignore[arg-type]
        usage=Usage(
            prompt_tokens=10 + i % 5,
            completion_tokens=(generated := 0 if refused else i % 7),
            total_tokens=10 + i % 5 + generated,
        ),
        error=ErrorInfo(code="content_filter", message="refused") if refused else None,
    )


def _expected(settings: Settings, count: int) -> tuple[int, int]:
    """Rows and tokens the ledger must hold after requests 0..count-1."""
    tokens = sum(
        _completion(settings, i).usage.prompt_tokens + (0 if i % 10 == 3 else i % 7)
        for i in range(count)
    )
    return count, tokens


async def _publish(settings: Settings, first: int, last: int, *, repeat_every: int = 0) -> None:
    """Completions first..last-1 (every 10th refused, or cut: finish_reason content_filter); with
    ``repeat_every``, each such request's completion a second time (a worker's failover)."""
    async with EventPublisher(settings) as publisher:
        for i in range(first, last):
            event = _completion(settings, i, finish="content_filter" if i % 10 == 3 else "stop")
            await publisher.send(TopicName.COMPLETIONS, event, key=event.conversation_id)
            if repeat_every and i % repeat_every == 0:
                again = event.model_copy(update={"event_id": f"evt-again{i}"})
                await publisher.send(TopicName.COMPLETIONS, again, key=event.conversation_id)
        await publisher.producer.flush()


def _ledger(settings: Settings) -> tuple[int, int, int, int]:
    """Rows, their tokens, and the key's month (requests, tokens) as the ledger holds them."""
    with connect(settings) as conn:
        rows, tokens = conn.execute(
            "SELECT count(*), coalesce(sum(total_tokens), 0) FROM usage_ledger"
            " WHERE request_id LIKE %s",
            (f"req-{_tag(settings)}%",),
        ).fetchone() or (0, 0)
        month = conn.execute(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(total_tokens), 0) FROM usage_monthly"
            " WHERE key_id = %s",
            (_key(settings),),
        ).fetchone() or (0, 0)
    return int(rows), int(tokens), int(month[0]), int(month[1])


def _start_ledger(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return start_cli("ledger", os.environ | settings.replace(log_json=False).as_env(), log)


async def test_a_ledger_sigkilled_again_and_again_counts_every_completion_exactly_once(
    ledger_settings: Settings, tmp_path: Path
) -> None:
    settings = ledger_settings
    total = 3000
    await _publish(settings, 0, total, repeat_every=13)  # 231 completions on the log twice
    rows_wanted, tokens_wanted = _expected(settings, total)
    log = tmp_path / "ledger.log"
    kills, partial = 0, list[tuple[int, int, int, int]]()
    while kills < 4:
        proc = _start_ledger(settings, log)
        at_start = _ledger(settings)[0]

        def more_rows_or_exited(proc: subprocess.Popen[bytes] = proc, at: int = at_start) -> bool:
            return _ledger(settings)[0] >= at + 200 or proc.poll() is not None

        try:
            poll_until(
                more_rows_or_exited,
                timeout_s=90,
                interval=0.01,
                what="200 more rows in the ledger",
            )
            assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        kills += 1
        partial.append(_ledger(settings))
        rows, tokens, month_requests, month_tokens = partial[-1]
        assert (rows, tokens) == (month_requests, month_tokens)  # rows and months move together
    assert partial[-1][0] < rows_wanted, "the kills came too late to land mid-stream"

    proc = _start_ledger(settings, log)
    try:
        await eventually(
            lambda: _done(settings), timeout_s=120, interval=0.2, what="every offset in the ledger"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert _ledger(settings) == (rows_wanted, tokens_wanted, rows_wanted, tokens_wanted)


async def _done(settings: Settings) -> bool:
    """The ledger's stored offsets reached the end of every partition."""
    topic = settings.topic(TopicName.COMPLETIONS)
    _, ends = await log_offsets(settings, [topic])
    with connect(settings) as conn:
        stored = dict(
            conn.execute(
                "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s",
                (settings.topic(settings.postgres.ledger_group),),
            ).fetchall()
        )
    return all(stored.get(tp.partition) == end for tp, end in ends.items() if end)


async def test_postgres_going_away_pauses_the_ledger_which_catches_up_with_nothing_lost(
    ledger_settings: Settings,
) -> None:
    async def rows(n: int) -> bool:
        return _ledger(ledger_settings)[0] == n

    async with TcpProxy(ledger_settings.local.postgres_port) as proxy:
        settings = ledger_settings.replace(
            postgres_url=f"postgresql://chatbus@127.0.0.1:{proxy.port}/chatbus"
        )
        health = Health("ledger")

        async def ready(wanted: bool) -> bool:
            return health.readiness()[0] is wanted

        async with LedgerReader(settings, health=health) as reader:
            await _publish(settings, 0, 200)
            await eventually(lambda: rows(200), timeout_s=60, what="200 rows")
            await proxy.cut()
            await _publish(settings, 200, 500)
            await eventually(lambda: ready(False), timeout_s=30, what="the ledger not ready")
            assert _ledger(ledger_settings)[0] == 200
            await proxy.restore()
            await eventually(lambda: rows(500), timeout_s=60, what="the ledger to catch up")
            await eventually(lambda: ready(True), timeout_s=30, what="ready again")
            # a batch whose commit landed but whose acknowledgement the cut lost is read again
            # and comes back as repeats, not as new rows: never more than 500 new
            assert reader.rows_written <= 500
    _, tokens = _expected(settings, 500)
    assert _ledger(ledger_settings) == (500, tokens, 500, tokens)


def test_the_dashboards_usage_panels_query_the_ledger_as_it_is(local_services: Settings) -> None:
    """Grafana's macros replaced as its PostgreSQL data source expands them, each panel's SQL
    runs on the migrated schema."""
    import json

    from tests.unit.test_observability_config import DASHBOARD, sql_targets

    queries = sql_targets(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 2
    macros = {
        "$__timeGroupAlias(completed_at, '1h')": "date_trunc('hour', completed_at) AS time",
        "$__timeFilter(completed_at)": "completed_at BETWEEN now() - interval '6 hours' AND now()",
    }
    with connect(local_services) as conn:
        for sql in queries:
            for macro, expansion in macros.items():
                sql = sql.replace(macro, expansion)
            assert "$__" not in sql, sql
            conn.execute(sql).fetchall()


async def test_usage_verify_reconciles_the_ledger_with_the_archive_request_by_request(
    ledger_settings: Settings, tmp_path: Path
) -> None:
    """What the ledger counted equals what the Spark ``usage`` job reads from the archive, over
    the same window: the command a data scientist or an auditor runs, exit status 0."""
    from datetime import UTC, datetime, timedelta

    from chatbus.object_store import ObjectStore
    from stream_processors.archiver.archiver import Archiver

    settings = ledger_settings.replace(
        **{"archive_prefix": f"test-{_tag(ledger_settings)}", "archive_flush_s": 0.3}
    )
    start = datetime.now(UTC) - timedelta(seconds=1)
    try:
        async with LedgerReader(settings) as ledger, Archiver(settings) as archiver:
            await _publish(settings, 0, 120, repeat_every=7)
            total = 120 + len(range(0, 120, 7))

            async def both_done() -> bool:
                return ledger.rows_written == 120 and archiver.archived_records >= total

            await eventually(both_done, timeout_s=60, what="ledger and archive caught up")
        end = datetime.now(UTC) + timedelta(seconds=1)
        env = os.environ | settings.replace(log_json=False).as_env()
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "chatbus.cli",
                "usage",
                "verify",
                "--from",
                start.isoformat(),
                "--to",
                end.isoformat(),
                "--input",
                f"s3a://{settings.s3.bucket}/{settings.archive.prefix}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        _, tokens = _expected(settings, 120)
        assert f"ledger : 120 requests, {tokens} tokens" in done.stdout
        assert f"archive: 120 requests, {tokens} tokens" in done.stdout
        assert "ledger and archive match" in done.stdout
    finally:
        ObjectStore(settings).delete_prefix(settings.archive.prefix + "/")
