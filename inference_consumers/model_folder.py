"""What every offline model build shares: its marker file, a quiet save, and an atomic install.

A build writes into a temporary folder beside its target, writes its marker file last, and is
renamed into place, so a crash never leaves a half-built model where a worker would load it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["building", "finish_build", "install_folder", "read_marker", "save_quietly", "umask"]


def read_marker(marker: Path) -> dict[str, Any]:
    """The marker file's content, or ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_quietly(model: PreTrainedModel, target: Path) -> None:
    """``save_pretrained`` without transformers' own shard progress bar (the build has one)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(target)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def install_folder(tmp_dir: Path, path: Path, *, is_complete: Callable[[Path], bool]) -> None:
    """Rename the finished ``tmp_dir`` into ``path``, replacing an older build there."""
    old: Path | None = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        path.rename(old)
    try:
        tmp_dir.rename(path)
    except OSError:
        if not is_complete(path):  # not a concurrent builder that won the race: put it back
            if old is not None and not path.exists():
                old.rename(path)
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if old is not None and old.exists():
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building(path: Path) -> Iterator[Path]:
    """A private temporary folder beside ``path`` to build into; removed unless installed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp_dir
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def finish_build(
    tmp_dir: Path,
    path: Path,
    marker_file: str,
    marker: dict[str, Any],
    *,
    is_complete: Callable[[Path], bool],
) -> None:
    """Write the marker last, open the folder up (mkdtemp made it private), install it."""
    (tmp_dir / marker_file).write_text(json.dumps(marker, indent=2) + "\n")
    tmp_dir.chmod(0o777 & ~umask())
    install_folder(tmp_dir, path, is_complete=is_complete)
