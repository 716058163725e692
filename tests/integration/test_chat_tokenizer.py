"""The chat tokenizer read without transformers gives transformers' ids and text, on the real
model's folder and the demo model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from chatbus.chat_tokenizer import ChatTokenizer, load_chat_tokenizer
from inference_consumers.local_models import DEFAULT_MODEL, build_model
from tests.conftest import base_settings

pytestmark = [pytest.mark.integration, pytest.mark.model]

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Describe a cat in one sentence."}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Wie spät ist es?  Ça va ? 日本語も 🙂"},
    ],
    [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer ,with odd  spacing . and 'quotes' n't"},
        {"role": "user", "content": "  leading and trailing spaces \n\n and new lines\t"},
    ],
    [{"role": "user", "content": ""}],
]


@pytest.fixture(scope="module", params=["real", "demo"])
def folder(request: pytest.FixtureRequest, demo_model_path: Path) -> Path:
    if request.param == "demo":
        return demo_model_path
    return build_model(base_settings(), DEFAULT_MODEL, progress=False)


@pytest.fixture(scope="module")
def reference(folder: Path) -> Any:
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_the_chat_template_gives_transformers_ids(
    folder: Path, reference: Any, conversation: list[dict[str, str]], add_generation_prompt: bool
) -> None:
    ours = ChatTokenizer.from_folder(folder)
    kwargs = {"add_generation_prompt": add_generation_prompt, "return_dict": False}
    assert ours.apply_chat_template(conversation, tokenize=False, **kwargs) == (
        reference.apply_chat_template(conversation, tokenize=False, **kwargs)
    )
    assert ours.apply_chat_template(conversation, tokenize=True, **kwargs) == (
        reference.apply_chat_template(conversation, tokenize=True, **kwargs)
    )


def test_decoding_gives_transformers_text(folder: Path, reference: Any) -> None:
    ours = ChatTokenizer.from_folder(folder)
    for conversation in CONVERSATIONS:
        ids = reference.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(
                ids, skip_special_tokens=skip
            )
    assert ours.eos_token_id == reference.eos_token_id


def test_a_folder_it_cannot_read_falls_back_to_transformers(tmp_path: Path, folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ValueError, match="no chat template"):
        ChatTokenizer.from_folder(tmp_path)
    assert not isinstance(load_chat_tokenizer(tmp_path), ChatTokenizer)
