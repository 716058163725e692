"""The gateway's HTTP API, fuzzed from its own OpenAPI schema with schemathesis (the real CLI,
against a real gateway and worker on the real bus): no 5xx, no answer outside the schema, no
route that ignores the key, and no user who reads or changes another user's objects.

``CHATBUS_FUZZ_EXAMPLES`` sets the cases per operation and ``CHATBUS_FUZZ_PHASES`` the phases:
``make test`` skips the coverage phase (its boundary values ask for the longest answers, minutes
on CPU); ``make fuzz`` runs every phase with more cases."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from chatbus.ports import free_port
from chatbus.settings import Settings
from tests.integration.gateway_fixtures import RunningGateway, api_key, running_gateway
from tests.integration.processors import moderation_service

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CHATBUS_FUZZ_EXAMPLES", "12"))
PHASES = os.environ.get("CHATBUS_FUZZ_PHASES", "examples,fuzzing,stateful")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "use_after_free",
    "object_level_authorization",
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    # fuzzed answers are short and limits do not hide the routes behind 429s
    return settings.replace(
        **{
            "gateway_requests_per_minute": 100_000,
            "gateway_tokens_per_minute": 100_000_000,
            "default_max_tokens": 16,
            "moderation_service_url": f"http://127.0.0.1:{free_port()}",
        }
    )


def _wfc_auth(keys: dict[str, str]) -> dict[str, object]:
    """Web Fuzzing Commons auth: one entry per user, each with its own bearer key."""
    return {
        "auth": [
            {
                "name": name,
                "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}],
            }
            for name, key in keys.items()
        ]
    }


async def _run_schemathesis(gateway: RunningGateway, keys: dict[str, str], workdir: Path) -> str:
    (workdir / "auth.json").write_text(json.dumps(_wfc_auth(keys)))
    (workdir / "schemathesis.toml").write_text(
        f'[auth.wfc]\npath = "auth.json"\npeers = {json.dumps(list(keys))}\n'
    )
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(workdir / "schemathesis.toml"),
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "13",
        "--phases",
        PHASES,
        "--request-timeout",
        "60",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(workdir / "report"),
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=900)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace")
    print(text[-6000:])
    assert process.returncode == 0, f"schemathesis found failures:\n{text[-12000:]}"
    return text


async def test_the_api_fuzzed_from_its_schema_has_no_5xx_no_answer_outside_it_and_no_leak(
    fuzz_settings: Settings, worker: object, tmp_path: Path
) -> None:
    assert SCHEMATHESIS.exists(), "schemathesis is a dev dependency: make install"
    users = {name: f"fuzz-{name}-{uuid.uuid4().hex[:6]}" for name in ("alice", "bob")}
    async with (
        moderation_service(fuzz_settings, tmp_path),
        running_gateway(fuzz_settings) as gateway,
        api_key(fuzz_settings, users["alice"]) as alice,
        api_key(fuzz_settings, users["bob"]) as bob,
    ):
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
            document = (await http.get("/openapi.json")).json()
        assert document["components"]["securitySchemes"], "the schema names its bearer key"
        fuzz_dir = tmp_path / "fuzz"
        fuzz_dir.mkdir()
        text = await _run_schemathesis(gateway, {"alice": alice, "bob": bob}, fuzz_dir)
    assert "No issues found" in text or "passed" in text.lower()
