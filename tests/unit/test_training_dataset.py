"""``chatbus train``'s input, as pure logic: reading the JSONL, finding the files, choosing the
base model, and which tokens the loss is taken on (with a byte-level stand-in tokenizer that
renders the demo model's ChatML template, so no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from inference_consumers.demo_model import CHAT_TEMPLATE
from inference_consumers.training.base_model import resolve_base
from inference_consumers.training.chat_jsonl import Conversation, parse_line, read_conversations
from inference_consumers.training.config import LoraHyperparameters
from inference_consumers.training.errors import TrainingDataError
from inference_consumers.training.examples import IGNORE, Example, encode_all, encode_conversation
from inference_consumers.training.lora import _batches, _evaluation_steps, _schedule
from inference_consumers.training.loss_curve import moving_average
from inference_consumers.training.source import locate_dataset

SPECIALS = ("<|im_start|>", "<|im_end|>")


class ByteChatTokenizer:
    """One id per UTF-8 byte, the ChatML markers as ids 256 and 257; renders ``template``."""

    def __init__(self, template: str = CHAT_TEMPLATE) -> None:
        self.chat_template: str | None = template
        env = jinja2.Environment(autoescape=False)
        env.globals["raise_exception"] = self._raise
        self._template = env.from_string(template)

    @staticmethod
    def _raise(message: str) -> None:
        raise ValueError(message)

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> str:
        assert kwargs.get("tokenize") is False
        return self._template.render(
            messages=conversation, add_generation_prompt=kwargs.get("add_generation_prompt", False)
        )

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        while text:
            special = next((s for s in SPECIALS if text.startswith(s)), None)
            if special:
                ids.append(256 + SPECIALS.index(special))
                text = text[len(special) :]
            else:
                ids.extend(text[0].encode())
                text = text[1:]
        return ids

    def decode(self, ids: list[int]) -> str:
        out, pending = "", b""
        for i in ids:
            if i >= 256:
                out += pending.decode() + SPECIALS[i - 256]
                pending = b""
            else:
                pending += bytes([i])
        return out + pending.decode()


def conversation(*turns: tuple[str, str] | tuple[str, str, int]) -> Conversation:
    messages = [
        {"role": t[0], "content": t[1], **({"weight": t[2]} if len(t) == 3 else {})} for t in turns
    ]
    parsed = parse_line(json.dumps({"messages": messages}), "test:1")
    assert parsed is not None
    return parsed


def learned_text(tokenizer: ByteChatTokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The learned stretches of ``ids``, decoded."""
    stretches: list[list[int]] = []
    previous = IGNORE
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            assert label == token
            if previous == IGNORE:
                stretches.append([])
            stretches[-1].append(token)
        previous = label
    return [tokenizer.decode(s) for s in stretches]


# ------------------------------------------------------------------ which tokens are learned
def test_only_the_assistant_turns_and_their_end_tokens_are_learned() -> None:
    tokenizer = ByteChatTokenizer()
    chat = conversation(
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
    )
    ids, labels = encode_conversation(tokenizer, chat)

    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(chat.messages, tokenize=False)
    assert learned_text(tokenizer, ids, labels) == ["Hello!<|im_end|>", "Paris.<|im_end|>"]
    prompt = tokenizer.apply_chat_template(
        chat.messages[:2], tokenize=False, add_generation_prompt=True
    )
    assert all(label == IGNORE for label in labels[: len(tokenizer.encode(prompt))])


def test_an_assistant_turn_of_weight_0_is_context_and_trailing_turns_are_dropped() -> None:
    tokenizer = ByteChatTokenizer()
    chat = conversation(
        ("user", "One"),
        ("assistant", "not this", 0),
        ("user", "Two"),
        ("assistant", "this"),
        ("user", "a question nobody answers"),
    )
    ids, labels = encode_conversation(tokenizer, chat)

    assert learned_text(tokenizer, ids, labels) == ["this<|im_end|>"]
    assert "not this" in tokenizer.decode(ids)
    assert "nobody answers" not in tokenizer.decode(ids)


def test_the_workers_default_system_prompt_is_added_to_conversations_without_one() -> None:
    tokenizer = ByteChatTokenizer()
    bare = conversation(("user", "Hi"), ("assistant", "Hello"))
    own = conversation(("system", "Mine."), ("user", "Hi"), ("assistant", "Hello"))

    ids, labels = encode_conversation(tokenizer, bare, system_prompt="You are helpful.")
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nYou are helpful.<|im_end|>")
    assert learned_text(tokenizer, ids, labels) == ["Hello<|im_end|>"]
    ids, _ = encode_conversation(tokenizer, own, system_prompt="You are helpful.")
    assert "You are helpful." not in tokenizer.decode(ids)


def test_long_conversations_are_cut_and_counted_and_dropped_when_nothing_learned_is_left() -> None:
    tokenizer = ByteChatTokenizer()
    short = conversation(("user", "Hi"), ("assistant", "Hello"))
    long_answer = conversation(("user", "Hi"), ("assistant", "x" * 200))
    long_question = conversation(("user", "y" * 200), ("assistant", "Hello"))

    encoded = encode_all(tokenizer, [short, long_answer, long_question], max_length=64)

    assert len(encoded.examples) == 2
    assert (encoded.truncated, encoded.dropped_too_long) == (1, 1)
    assert all(len(e.input_ids) == len(e.labels) <= 64 for e in encoded.examples)
    assert encoded.examples[1].learned_tokens > 0


def test_a_template_that_rewrites_earlier_turns_is_refused_not_mislabelled() -> None:
    hides_old_answers = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[earlier]"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    chat = conversation(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))

    with pytest.raises(ConfigurationError, match="cannot tell the assistant's tokens apart"):
        encode_conversation(ByteChatTokenizer(hides_old_answers), chat)


def test_a_tokenizer_without_a_chat_template_is_refused() -> None:
    tokenizer = ByteChatTokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ConfigurationError, match="no chat template"):
        encode_all(tokenizer, [conversation(("user", "a"), ("assistant", "b"))], max_length=64)


# ------------------------------------------------------------------ reading the JSONL
def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


GOOD = json.dumps(
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
)


def test_malformed_json_stops_the_run_naming_the_line(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "train.jsonl", GOOD, "", GOOD, '{"messages": [')

    with pytest.raises(TrainingDataError) as caught:
        read_conversations([data])
    assert f"{data}:4: not valid JSON" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", 'expected a JSON object with "messages", got a list'),
        ('{"prompt": "a"}', '"messages" must be a list of messages (no such key)'),
        ('{"messages": "a"}', '"messages" must be a list of messages (a string)'),
        ('{"messages": []}', '"messages" is empty'),
        ('{"messages": ["hi"]}', "message 1 is a string, not an object"),
        (
            '{"messages": [{"role": "tool", "content": "x"}]}',
            "message 1 has role 'tool': chatbus trains on system, user, assistant messages",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, '
            '{"role": "assistant", "content": null}]}',
            'message 2: "content" must be text (a string or a list of text parts), got null',
        ),
        (
            '{"messages": [{"role": "assistant", "content": "a", "weight": 2}]}',
            'message 1: "weight" must be 0 or 1, got 2',
        ),
    ],
)
def test_each_malformed_line_says_where_and_why(tmp_path: Path, line: str, reason: str) -> None:
    data = write_lines(tmp_path / "train.jsonl", GOOD, line)

    with pytest.raises(TrainingDataError) as caught:
        read_conversations([data])
    assert str(caught.value) == f"{data}:2: {reason}"


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(GOOD.encode() + b"\n" + b'{"messages": "\xff"}\n')
    with pytest.raises(TrainingDataError, match=r"train\.jsonl:2: not UTF-8"):
        read_conversations([data])


def test_conversations_without_an_assistant_turn_are_skipped_and_counted(tmp_path: Path) -> None:
    no_answer = json.dumps({"messages": [{"role": "user", "content": "anyone?"}]})
    muted = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "weight": 0},
            ]
        }
    )
    parts = json.dumps(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}],
                },
                {"role": "assistant", "content": "hi", "name": "bot"},
            ],
            "tools": [],
        }
    )
    data = write_lines(tmp_path / "train.jsonl", "\ufeff" + GOOD, no_answer, muted, parts)

    result = read_conversations([data])

    assert result.lines == 4
    assert len(result.conversations) == 2
    assert result.skipped_no_assistant == 2
    assert result.skipped_where == [f"{data}:2", f"{data}:3"]
    assert result.conversations[1].messages[0] == {"role": "user", "content": "hello"}


def test_an_empty_dataset_is_an_error(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "train.jsonl", "", "   ")
    with pytest.raises(TrainingDataError, match="empty, no conversation to train on"):
        read_conversations([data])


# ------------------------------------------------------------------ finding the files
def test_a_folder_gives_its_splits_and_its_json_data_card(tmp_path: Path) -> None:
    write_lines(tmp_path / "train.jsonl", GOOD)
    write_lines(tmp_path / "validation.jsonl", GOOD)
    (tmp_path / "data_card.json").write_text('{"rows": 1, "source": "feedback"}')

    source = locate_dataset(tmp_path)

    assert source.train_files == (tmp_path / "train.jsonl",)
    assert source.validation_files == (tmp_path / "validation.jsonl",)
    assert source.data_card_path == tmp_path / "data_card.json"
    assert source.data_card == {"rows": 1, "source": "feedback"}


def test_a_single_file_takes_the_markdown_card_beside_it_and_no_validation(
    tmp_path: Path,
) -> None:
    data = write_lines(tmp_path / "chats.jsonl", GOOD)
    write_lines(tmp_path / "validation.jsonl", GOOD)  # not this file's split: it is not train.jsonl
    (tmp_path / "data_card.md").write_text("# Card\nrows: 1\n")

    source = locate_dataset(data)

    assert source.train_files == (data,)
    assert source.validation_files == ()
    assert source.data_card == "# Card\nrows: 1\n"


def test_spark_part_folders_are_read_part_by_part(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.mkdir()
    write_lines(train / "part-00001-x.json", GOOD)
    write_lines(train / "part-00000-x.json", GOOD)
    (train / "_SUCCESS").touch()
    (train / ".part-00000-x.json.crc").touch()
    own_validation = write_lines(tmp_path / "held-out.jsonl", GOOD)

    source = locate_dataset(tmp_path, validation=own_validation)

    assert [p.name for p in source.train_files] == ["part-00000-x.json", "part-00001-x.json"]
    assert source.validation_files == (own_validation,)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no dataset at"),
        (lambda p: p, "holds no train.jsonl"),
    ],
)
def test_a_missing_dataset_says_what_is_expected(tmp_path: Path, make: Any, message: str) -> None:
    (tmp_path / "notes.txt").touch()
    with pytest.raises(TrainingDataError, match=message):
        locate_dataset(make(tmp_path))


# ------------------------------------------------------------------ the base model
def test_the_base_model_is_the_served_one_a_local_name_or_a_folder(tmp_path: Path) -> None:
    built = tmp_path / "models" / "chatbus-tiny"
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    own = tmp_path / "my-model"
    own.mkdir()
    (own / "config.json").write_text("{}")
    settings = Settings(cache_dir=tmp_path, model_name="chatbus-tiny")  # type: ignore[call-arg]

    assert resolve_base(settings, None).path == built
    assert resolve_base(settings, "chatbus-tiny").path == built
    assert resolve_base(settings, str(own)).name == "my-model"
    with pytest.raises(ConfigurationError, match="chatbus model build smollm2-135m-instruct"):
        resolve_base(settings, "smollm2-135m-instruct")
    with pytest.raises(ConfigurationError, match="--base takes a local model name"):
        resolve_base(settings, "gpt-17")


# ------------------------------------------------------------------ the loop's pure parts
def test_every_example_is_seen_once_per_epoch_in_a_seeded_order() -> None:
    examples = [Example([1, 2], [IGNORE, 2], where=f"x:{i}") for i in range(10)]
    stream = _batches(examples, 4, seed=3)
    first_epochs = [e.where for _ in range(5) for e in next(stream)]  # 20 = two epochs

    assert (
        sorted(first_epochs[:10]) == sorted(first_epochs[10:]) == sorted(e.where for e in examples)
    )
    again = _batches(examples, 4, seed=3)
    assert [e.where for _ in range(5) for e in next(again)] == first_epochs


def test_the_learning_rate_warms_up_then_decays_to_zero() -> None:
    factor = _schedule(LoraHyperparameters(steps=100, warmup_steps=10))
    rates = [factor(done) for done in range(100)]

    assert rates[0] < rates[5] < rates[9] < 1.0
    assert rates[10] == 1.0
    assert rates[50] == pytest.approx(50 / 90)
    assert rates[99] > 0 and factor(100) == 0


def test_validation_runs_spread_over_the_run_and_after_the_last_step() -> None:
    assert _evaluation_steps(LoraHyperparameters(steps=200, evaluations=4)) == {
        40,
        80,
        120,
        160,
        200,
    }
    assert _evaluation_steps(LoraHyperparameters(steps=1)) == {1}


def test_moving_average() -> None:
    assert moving_average([4.0, 2.0, 0.0, 2.0], 2) == [4.0, 3.0, 1.0, 1.0]


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LoraHyperparameters(batch_size=0)
    assert LoraHyperparameters(rank=8).lora_alpha == 16
