"""The runbook and the deployment guide name only commands and settings that exist; every
Python snippet of the docs parses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from chatbus.settings import variable_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "runbook.md", ROOT / "docs" / "deploy.md"]


def code(text: str) -> list[str]:
    """Fenced blocks and inline code spans of a Markdown text."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    inline = re.findall(
        r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    )
    return blocks + inline


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL)


WITH_PYTHON = [
    d for d in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if python_blocks(d)
]


def test_the_docs_hold_python_snippets_to_check() -> None:
    assert len(WITH_PYTHON) >= 2, "the snippet check below would check nothing"


@pytest.mark.parametrize("doc", WITH_PYTHON, ids=lambda p: p.name)
def test_python_snippets_compile(doc: Path) -> None:
    for block in python_blocks(doc):
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
        for match in re.finditer(
            r"(?:^|[\s(`\"])chatbus((?: [a-z][a-z-]*){1,2})(?=[\s`\"]|$)", snippet, re.MULTILINE
        ):
            used.add(tuple(match.group(1).split()))
    assert used, "no chatbus command found: the pattern is broken"
    missing = {" ".join(words): _resolve(list(words)) for words in used}
    assert not {k: v for k, v in missing.items() if v}, missing


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_settings_named_are_fields(doc: Path) -> None:
    fields = variable_names()
    named = set(re.findall(r"\bCHATBUS_[A-Z0-9_]+\b", doc.read_text()))
    named = {n for n in named if not n.endswith("_")}  # `CHATBUS_S3_*`-style families
    assert named and named <= fields, sorted(named - fields)
