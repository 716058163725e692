"""requirements.lock keeps up with pyproject.toml: every requirement of the core and of every extra
is pinned there at a version it accepts (else run `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := _PIN.match(line):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    groups = {"dependencies": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    return [
        (group, Requirement(text))
        for group, texts in groups.items()
        for text in texts
        if canonicalize_name(Requirement(text).name) != PROJECT["name"]
    ]


@pytest.mark.parametrize(
    ("group", "requirement"), _requirements(), ids=lambda v: v if isinstance(v, str) else str(v)
)
def test_every_requirement_is_locked_at_a_version_it_accepts(
    group: str, requirement: Requirement
) -> None:
    version = _locked().get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement} ({group}) is not in requirements.lock: make lock"
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {requirement.name}=={version}, {group} wants {requirement}: "
        "make lock"
    )


def test_the_extras_name_only_extras_that_exist() -> None:
    extras = set(PROJECT["optional-dependencies"])
    for _, requirement in [
        (g, Requirement(t)) for g, ts in PROJECT["optional-dependencies"].items() for t in ts
    ]:
        if canonicalize_name(requirement.name) == PROJECT["name"]:
            assert requirement.extras <= extras, requirement
