"""A model folder's chat tokenizer without importing transformers: ``tokenizer.json`` through
the ``tokenizers`` library and the chat template through jinja2, as transformers renders it.

``from transformers import AutoTokenizer`` imports torch and scikit-learn: 21 s of CPU on this
project's 2-core machine, which a llama.cpp worker (it needs nothing else of transformers) and the
gateway (it counts prompt tokens) paid on every start, and a replacement worker paid while the
survivor of a crash carried its streams. Loading this way takes under half a second.

:func:`load_chat_tokenizer` falls back to ``AutoTokenizer`` for a folder this cannot read (no
``tokenizer.json``, no chat template, a template that does not compile), so any Hugging Face model
folder still works. The ids are the same as transformers' (``tests/unit/test_chat_tokenizer.py``
checks the real model's folder).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["ChatTokenizer", "load_chat_tokenizer"]

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


class ChatTokenizer:
    """``apply_chat_template``, ``decode`` and ``eos_token_id`` of a fast tokenizer's folder."""

    def __init__(self, tokenizer: Any, template: Any, special: dict[str, str]) -> None:
        self._tokenizer = tokenizer
        self._template = template
        self._special = special
        eos = special.get("eos_token")
        self.eos_token_id: int | None = tokenizer.token_to_id(eos) if eos else None

    @classmethod
    def from_folder(cls, folder: Path) -> ChatTokenizer:
        """Raises ``ValueError`` when ``folder`` has no ``tokenizer.json`` or chat template, or
        the template does not compile."""
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"no tokenizer.json in {folder}")
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        template_path = folder / "chat_template.jinja"
        source = (
            template_path.read_text() if template_path.is_file() else config.get("chat_template")
        )
        if not isinstance(source, str) or not source:
            raise ValueError(f"no chat template in {folder}")
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise ValueError(f"the chat template of {folder} does not compile: {exc}") from exc
        special = {name: _token_text(config.get(name)) for name in _SPECIAL}
        return cls(
            Tokenizer.from_file(str(path)), template, {k: v for k, v in special.items() if v}
        )

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tokenize: bool = True,
        return_dict: bool = False,
    ) -> list[int] | str:
        """The conversation rendered by the chat template; its ids when ``tokenize`` (special
        tokens only as the template writes them, as transformers does)."""
        if return_dict:
            raise ValueError("return_dict is not supported: ask for the ids")
        text = self._template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **self._special
        )
        if not tokenize:
            return str(text)
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens))


def load_chat_tokenizer(folder: Path | str) -> Any:
    """The folder's tokenizer: a :class:`ChatTokenizer` when it can read it, else transformers'
    ``AutoTokenizer`` (slow to import, but it reads every format)."""
    try:
        return ChatTokenizer.from_folder(Path(folder))
    except ValueError:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder))


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


def _tojson(value: object, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)
