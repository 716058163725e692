"""How the long-running suites (faults, soak) end: results printed and kept, and a SIGTERM
taking their private pipeline down with them."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.inference.report import write_json
from chatbus.settings import get_settings

T = TypeVar("T", bound=Mapping[str, Any] | Sequence[Any])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_and_keep(name: str, work: Coroutine[Any, Any, T], render: Callable[[T], str]) -> T:
    """Run ``work`` (stopped by SIGTERM like by Ctrl-C: its pipeline goes down too), print
    ``render`` of its result and write it to ``.chatbus/<name>/results.json``."""
    signal.signal(signal.SIGTERM, _interrupt)
    result = asyncio.run(work)
    print()
    print(render(result))
    out = Path(get_settings().state_dir) / name / "results.json"
    write_json(out, result)
    print(f"written: {out}")
    return result
