"""External programs: find them on PATH, run them to completion, record finished installs.

The local installers (``infra.local``) and the analytics jar resolver
(``analytics.spark_session``) both use these, so they live in the core."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from chatbus.errors import ConfigurationError

log = structlog.get_logger(__name__)


def require(program: str, hint: str) -> str:
    """The full path of ``program`` on PATH, or ConfigurationError with ``hint`` (how to get it)."""
    path = shutil.which(program)
    if path is None:
        raise ConfigurationError(f"{program} not found on PATH; {hint}")
    return path


def run(
    argv: Sequence[str],
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800.0,
) -> str:
    """Run a command to completion and return its output; ConfigurationError (with the output's
    tail) when it fails, naming ``what`` was being done."""
    argv = [str(a) for a in argv]
    log.debug("running", argv=argv, cwd=str(cwd) if cwd else None)
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{what} failed: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(f"{what} did not finish within {timeout:.0f} s") from exc
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ConfigurationError(
            f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{tail}"
        )
    return output


def marker_ok(marker: Path, content: str) -> bool:
    """True when an install finished before: its marker file exists and holds ``content``."""
    try:
        return marker.read_text().strip() == content
    except OSError:
        return False


def write_marker(marker: Path, content: str) -> None:
    """Record a finished install (written only after it succeeded, so a half one re-runs)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(content + "\n")
    tmp.replace(marker)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a (log) file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
