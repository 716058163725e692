"""The demo model builder's pure parts: template, marker handling, refusals (no model is built)."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatbus.errors import ConfigurationError
from inference_consumers import demo_model
from inference_consumers.demo_model import (
    BUILD_VERSION,
    CHAT_TEMPLATE,
    MARKER_FILE,
    build_demo_model,
    is_demo_model,
)


def render(messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """Render the template the way transformers does (sandboxed Jinja, ``raise_exception``)."""

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=add_generation_prompt
    )


def fake_build(path: Path, version: int = BUILD_VERSION) -> Path:
    path.mkdir(parents=True)
    (path / MARKER_FILE).write_text(json.dumps({"build_version": version}))
    return path


def test_chat_template_renders_chatml() -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U\nmulti-line"},
        {"role": "assistant", "content": "A"},
    ]
    assert render(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nU\nmulti-line<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
    )
    assert render(messages[1:2], add_generation_prompt=True) == (
        "<|im_start|>user\nU\nmulti-line<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_rejects_unknown_roles() -> None:
    with pytest.raises(jinja2.TemplateError, match="tool"):
        render([{"role": "tool", "content": "x"}], add_generation_prompt=True)


def test_marker_of_current_version_marks_a_complete_build(tmp_path: Path) -> None:
    assert not is_demo_model(tmp_path / "missing")
    assert is_demo_model(fake_build(tmp_path / "ok"))
    assert not is_demo_model(fake_build(tmp_path / "old", version=BUILD_VERSION - 1))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MARKER_FILE).write_text("{not json")
    assert not is_demo_model(broken)


def test_complete_build_is_reused_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*_: object) -> None:
        raise AssertionError("a complete build must not be rebuilt")

    monkeypatch.setattr(demo_model, "_train_tokenizer", no_training)
    path = fake_build(tmp_path / "model")
    assert build_demo_model(path, progress=False) == path.absolute()


def test_foreign_folder_is_never_replaced_without_force(tmp_path: Path) -> None:
    path = tmp_path / "someones-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="--force"):
        build_demo_model(path, progress=False)
    assert (path / "config.json").read_text() == "{}"


def test_corpus_is_a_deterministic_stdlib_subset() -> None:
    files = demo_model.corpus_files()
    assert files == demo_model.corpus_files()
    assert len(files) >= 20
    assert sum(f.stat().st_size for f in files) <= demo_model.CORPUS_MAX_BYTES


def test_main_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fake_build(tmp_path / "model")
    assert demo_model.main(["--path", str(path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(path.absolute())
