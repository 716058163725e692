"""Shadow replay: a candidate answers archived traffic on topics no user reads.

Real Kafka and S3 endpoint, the demo model as the candidate, the rules classifier as output
moderation. The archive to replay is written in the archive's own layout; the run must answer
every request of the window once (keeping its request id), archive one completion and one
output verdict per replayed prompt under its own prefix, write nothing to a production topic,
and delete its shadow topics afterwards.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chatbus.kafka.lag import log_offsets
from chatbus.kafka.topic_setup import admin_client
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.shadow.archived_requests import archived_requests
from inference_consumers.shadow.replay import run_shadow, shadow_settings
from inference_consumers.worker import InferenceWorker
from schemas.archive import archived_record, object_key
from schemas.events import ChatMessage, ChatRequest, ReplyTo, SamplingParams
from schemas.topics import TopicName
from stream_processors.archiver.archiver import Archiver
from stream_processors.moderation.abuse import AbusePolicy
from stream_processors.moderation.categories import thresholds_from
from stream_processors.moderation.classifier import build_classifier
from stream_processors.moderation.moderator import InputModerator
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.model]

NOW = datetime.now(UTC).replace(microsecond=0)
PROMPTS = ["Name a colour.", "Count to three.", "Say hello.", "What is two plus two?"]


def _request(prompt: str, at: datetime) -> ChatRequest:
    return ChatRequest(
        model="smollm2-135m-instruct",
        user_id="someone",
        reply_to=ReplyTo(partition=1),
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=SamplingParams(temperature=0, max_tokens=6),
        created_at=at,
    )


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[ChatRequest]]:
    """An archive folder of chat.requests.approved: four requests in the last ten minutes, one
    a day old, one archived twice, and an invalid record."""
    inside = [_request(p, NOW - timedelta(minutes=10 - i)) for i, p in enumerate(PROMPTS)]
    old = _request("An old question.", NOW - timedelta(days=1))
    events = [*inside, inside[0], old]
    lines = [
        archived_record(
            e.model_dump(mode="json"),
            topic="chat.requests.approved",
            partition=0,
            offset=n,
            timestamp_ms=int(e.created_at.timestamp() * 1000),
            key=e.conversation_id,
        )
        for n, e in enumerate(events)
    ]
    lines.append(
        archived_record(
            None,
            topic="chat.requests.approved",
            partition=0,
            offset=len(events),
            timestamp_ms=0,
            key=None,
            raw_b64="eA==",
            invalid="not JSON",
        )
    )
    first_ms = int((NOW - timedelta(minutes=10)).timestamp() * 1000)
    path = tmp_path / object_key("", "chat.requests.approved", 0, 0, len(lines) - 1, first_ms)
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in lines).encode()))
    return tmp_path, inside


@pytest.fixture
def shadow_bus(bus: Settings) -> Iterator[Settings]:
    """The test's bus with an archive prefix of its own (the shadow archive is under it)."""
    settings = bus.replace(archive_prefix=f"{bus.kafka.topic_prefix.rstrip('.')}-archive")
    yield settings
    store = ObjectStore(settings)
    store.delete_prefix(f"{settings.archive.prefix}-shadow/")


def _judge(settings: Settings) -> Any:
    rules = settings.replace(moderation_classifier="rules")
    moderator = InputModerator(
        build_classifier(rules), thresholds_from(rules), AbusePolicy.from_settings(rules)
    )
    return moderator.judge


def _archived(settings: Settings, topic: str) -> list[dict[str, Any]]:
    store = ObjectStore(settings)
    records = []
    for key, _ in store.list(f"{settings.archive.prefix}/topic={topic}/"):
        body = store.get(key)
        assert body is not None
        records += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return records


async def test_a_candidate_answers_the_window_on_shadow_topics_and_is_archived_apart(
    shadow_bus: Settings, archive: tuple[Path, list[ChatRequest]], demo_model_path: Path
) -> None:
    folder, inside = archive
    requests = archived_requests(shadow_bus, str(folder), NOW - timedelta(hours=1), NOW)
    assert [r.request_id for r in requests] == [r.request_id for r in inside]

    @asynccontextmanager
    async def worker(settings: Settings) -> AsyncIterator[InferenceWorker]:
        engine = TransformersEngine(
            settings.resolved_model_path, model_name=settings.model.name, device="cpu", max_batch=4
        )
        async with InferenceWorker(settings, engine, worker_id="shadow-test") as running:
            yield running

    answered: list[int] = []
    result = await run_shadow(
        shadow_bus,
        requests,
        name="cand",
        model_name="shadow-cand",
        model_path=str(demo_model_path),
        worker=worker,
        archiver=Archiver,
        judge=_judge(shadow_bus),
        timeout_s=180,
        on_answer=lambda n, total: answered.append(n),
    )
    assert (result.replayed, result.answered, result.missing) == (4, 4, [])
    assert answered == [1, 2, 3, 4]
    assert result.completion_tokens > 0

    shadow = shadow_settings(
        shadow_bus, "cand", model_name="shadow-cand", model_path=str(demo_model_path)
    )
    assert result.archive == f"s3a://{shadow.s3.bucket}/{shadow.archive.prefix}"
    completions = _archived(shadow, "chat.completions")
    assert sorted(c["request_id"] for c in completions) == sorted(r.request_id for r in inside)
    assert {c["model"] for c in completions} == {"shadow-cand"}
    verdicts = _archived(shadow, "chat.moderation")
    assert sorted(v["request_id"] for v in verdicts) == sorted(r.request_id for r in inside)
    assert {v["stage"] for v in verdicts} == {"output"}
    asked = _archived(shadow, "chat.requests")
    assert {(r["request_id"], r["model"]) for r in asked} == {
        (r.request_id, "shadow-cand") for r in inside
    }

    # production's topics (the test's bus) carried nothing; the shadow topics are gone
    _starts, ends = await log_offsets(shadow_bus, [shadow_bus.topic(t.value) for t in TopicName])
    assert ends and not any(ends.values())
    async with admin_client(shadow_bus) as admin:
        left = [t for t in await admin.list_topics() if t.startswith(shadow.kafka.topic_prefix)]
    assert left == []
    assert not list(ObjectStore(shadow_bus).list(f"{shadow_bus.archive.prefix}/"))


def test_the_command_says_what_is_wrong_before_replaying_anything(
    shadow_bus: Settings, tmp_path: Path, demo_model_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatbus.cli", "shadow", *args],
            cwd=REPO,
            env=shadow_bus.as_env() | {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    empty = run("--model", str(demo_model_path), "--last", "1h", "--input", str(tmp_path))
    assert empty.returncode == 1
    assert "no archived request created between" in empty.stderr
    missing = run("--model", str(tmp_path / "nothing"), "--last", "1h")
    assert missing.returncode == 1 and "no model at" in missing.stderr
    both = run("--model", str(demo_model_path), "--last", "1h", "--from", "2026-11-01")
    assert both.returncode == 2 and "not both" in both.stderr
