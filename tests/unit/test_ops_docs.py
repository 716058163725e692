"""The runbook and the deployment guide name only commands and settings that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from chatbus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "runbook.md", ROOT / "docs" / "deploy.md"]


def code(text: str) -> list[str]:
    """Fenced blocks and inline code spans of a Markdown text."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text,
                                                flags=re.MULTILINE | re.DOTALL))
    return blocks + inline


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_snippets_compile(doc: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL)
    for block in blocks:
        ast.parse(block)


def _resolve(words: list[str]) -> str | None:
    """None when ``chatbus WORDS...`` is a command of the CLI, else what is missing."""
    from chatbus.cli import main

    command: click.Command = main
    for word in words:
        if not isinstance(command, click.Group):
            return None
        sub = command.commands.get(word)
        if sub is None:
            return f"`{command.name} {word}`"
        command = sub
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_chatbus_commands_exist(doc: Path) -> None:
    used = set()
    for snippet in code(doc.read_text()):
        snippet = re.sub(r"(-n|--namespace)[ =]chatbus\b", "-n NAMESPACE", snippet)
        for match in re.finditer(r"(?:^|[\s(`\"])chatbus((?: [a-z][a-z-]*){1,2})(?=[\s`\"]|$)",
                                 snippet, re.MULTILINE):
            used.add(tuple(match.group(1).split()))
    assert used, "no chatbus command found: the pattern is broken"
    missing = {" ".join(words): _resolve(list(words)) for words in used}
    assert not {k: v for k, v in missing.items() if v}, missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_settings_named_are_fields(doc: Path) -> None:
    fields = {f"CHATBUS_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\bCHATBUS_[A-Z0-9_]+\b", doc.read_text()))
    named = {n for n in named if not n.endswith("_")}  # `CHATBUS_S3_*`-style families
    assert named and named <= fields, sorted(named - fields)
