"""``chatbus simulate`` into a local folder (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatbus.cli import main


def test_simulate_writes_an_archive_refuses_to_overwrite_it_and_replaces_it_when_asked(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    args = ["simulate", "--conversations", "20", "--output", str(tmp_path), "--jobs", "1"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["conversations"] == 20 and summary["events"] > 200
    assert (tmp_path / "topic=chat.requests").is_dir() and (tmp_path / "_manifest").is_dir()

    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--replace" in again.output

    replaced = runner.invoke(main, [*args, "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout.strip().splitlines()[-1])["events"] == summary["events"]


def test_simulate_takes_events_or_conversations_not_both(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--events", "10", "--conversations", "2", "--output", str(tmp_path)]
    )
    assert result.exit_code != 0 and "not both" in result.output


def test_an_unreachable_s3_endpoint_is_reported_with_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatbus.settings import get_settings

    monkeypatch.setenv("CHATBUS_S3_ENDPOINT", "http://127.0.0.1:1")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["simulate", "--conversations", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0
    assert "http://127.0.0.1:1" in result.output and "chatbus infra up s3" in result.output
