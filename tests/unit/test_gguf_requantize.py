"""Rewriting a GGUF for the llama.cpp engine: a file that is not a GGUF is refused with the file
named, and nothing half-written is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbus.errors import ConfigurationError
from inference_consumers.gguf_requantize import TARGET_TYPE, requantize

pytest.importorskip("llama_cpp")


def test_a_file_that_is_not_a_gguf_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    source = tmp_path / "broken.gguf"
    source.write_bytes(b"GGUF" + b"\0" * 60)
    target = tmp_path / "out" / "model.gguf"

    with pytest.raises(
        ConfigurationError, match=f"could not rewrite .*broken.gguf as {TARGET_TYPE}"
    ):
        requantize(source, target)

    assert not target.exists()
