"""What a candidate folder says about itself: ``training.json``, the model card ``README.md``,
and the dataset's data card, copied beside them.

``training.json`` is the record (see :func:`inference_consumers.training.run.finetune` for its
fields); the README renders it for people, with the loss curve and the data card's summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "CARD_FILE",
    "RECORD_FILE",
    "copy_data_card",
    "render_model_card",
    "write_model_card",
    "write_record",
]

RECORD_FILE = "training.json"
CARD_FILE = "README.md"
_CARD_LINES = 40  # of a Markdown data card, quoted in the model card
_VALUE_CHARS = 160  # of a JSON data card's value, shown in the model card


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    path = folder / RECORD_FILE
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def copy_data_card(card: Path | None, folder: Path) -> str | None:
    """Copy the dataset's data card into ``folder``; its new name, or None when there is none."""
    if card is None:
        return None
    shutil.copyfile(card, folder / card.name)
    return card.name


def write_model_card(folder: Path, record: dict[str, Any]) -> Path:
    path = folder / CARD_FILE
    path.write_text(render_model_card(record, name=Path(record["output"]).name))
    return path


def render_model_card(record: dict[str, Any], *, name: str) -> str:
    base = record["base_model"]
    data = record["dataset"]
    examples = record["examples"]
    hyper = record["hyperparameters"]
    lora = record["lora"]
    loss = record["train_loss"]
    held_out = record["validation_loss"]
    versions = record["versions"]
    targets = ", ".join(lora["target_modules"]) or "peft's default"
    lines = [
        "---",
        f"base_model: {base['name']}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [chatbus, lora, peft, fine-tuned]",
        "---",
        "",
        f"# {name}: {base['name']} fine-tuned with LoRA",
        "",
        f"A candidate made by `chatbus train` on {record['created']}: {base['name']} "
        f"(`{base['path']}`) with LoRA adapters (rank {lora['rank']}, alpha {lora['alpha']}, "
        f"on {targets}) trained for {hyper['steps']} steps ({record['epochs']:.2f} epochs) on "
        f"{examples['train']} conversations of `{data['path']}`, then merged into the weights. "
        "It is a plain Hugging Face causal LM folder: `AutoModelForCausalLM.from_pretrained` "
        "loads it with no adapter.",
        "",
        "## Serve it",
        "",
        "```bash",
        f"CHATBUS_MODEL_PATH={record['output']} CHATBUS_MODEL_NAME={name} chatbus worker",
        "```",
        "",
        "The folder has no GGUF: the worker runs it with the transformers engine (on a CPU too).",
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | {base['name']} (`{base['path']}`) |",
        f"| dataset | `{data['path']}` |",
        f"| examples | {_examples(examples, hyper)} |",
        f"| validation | {_validation(examples)} |",
        f"| system prompt | {_system(record['system_prompt'])} |",
        f"| steps | {hyper['steps']} of {hyper['batch_size']} conversations "
        f"({record['epochs']:.2f} epochs), at most {hyper['max_length']} tokens each |",
        f"| learning rate | {hyper['learning_rate']:g} (AdamW; {hyper['warmup_steps']} warm-up "
        f"steps, then linear decay to 0; gradients clipped at {hyper['grad_clip']:g}); "
        f"seed {hyper['seed']} |",
        f"| LoRA | rank {lora['rank']}, alpha {lora['alpha']}, dropout {lora['dropout']:g}, "
        f"on {targets}: {lora['trainable_parameters']:,} trainable of "
        f"{lora['total_parameters']:,} parameters |",
        f"| train loss | {loss['first']:.4f} at step 1 → {loss['final']:.4f} "
        f"(mean of the last {loss['final_window']} steps; {loss['last']:.4f} at the last) |",
        f"| validation loss | {_held_out(held_out)} |",
        f"| wall time | {record['wall_time_s']:.1f} s, {record['seconds_per_step']:.3f} s per "
        f"step, on {record['device']} |",
        f"| versions | torch {versions['torch']}, transformers {versions['transformers']}, "
        f"peft {versions['peft']} |",
        "",
        "![loss curve](loss.png)",
        "",
        "Per-step figures: `loss.csv`; everything above: `training.json`.",
        "",
        "## Data",
        "",
        *_data_card(data),
        "",
        "## Limitations",
        "",
        f"A short fine-tune of {base['name']} on {examples['train']} conversations: it "
        "inherits every limitation of the base model and learns whatever the set teaches, "
        "mistakes included. Compare it with the base model on the validation split and in "
        "conversation before it serves anyone.",
        "",
    ]
    return "\n".join(lines)


def _examples(examples: dict[str, Any], hyper: dict[str, Any]) -> str:
    learned = examples["train_learned_tokens"]
    text = f"{examples['train']} conversations ({learned:,} assistant tokens)"
    notes = []
    if examples["skipped_no_assistant"]:
        notes.append(f"{examples['skipped_no_assistant']} skipped: no assistant message")
    if examples["truncated"]:
        notes.append(f"{examples['truncated']} cut to {hyper['max_length']} tokens")
    if examples["dropped_too_long"]:
        notes.append(f"{examples['dropped_too_long']} dropped: no assistant token within the limit")
    return f"{text}; {'; '.join(notes)}" if notes else text


def _validation(examples: dict[str, Any]) -> str:
    if not examples["validation"]:
        return "none (no validation split)"
    used = examples["validation_used"]
    sample = f", a fixed sample of {used} used" if used < examples["validation"] else ""
    return f"{examples['validation']} conversations{sample}"


def _system(prompt: str) -> str:
    if not prompt:
        return "the chat template's own, where a conversation has none"
    return f'"{prompt}", where a conversation has none (as the worker adds it)'


def _held_out(held_out: dict[str, Any] | None) -> str:
    if held_out is None:
        return "not measured (no validation split)"
    return f"{held_out['before']:.4f} before → {held_out['after']:.4f} after"


def _data_card(data: dict[str, Any]) -> list[str]:
    card, file = data.get("data_card"), data.get("data_card_file")
    if card is None:
        return ["No data card was found next to the dataset (`data_card.json` or `data_card.md`)."]
    lines = [f"The dataset's data card, copied here as `{file}`:", ""]
    if isinstance(card, dict):
        for key, value in card.items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if len(shown) > _VALUE_CHARS:
                shown = shown[: _VALUE_CHARS - 1] + "…"
            lines.append(f"- **{key}**: {shown}")
        return lines
    text = str(card).splitlines()
    lines += [f"> {line}".rstrip() for line in text[:_CARD_LINES]]
    if len(text) > _CARD_LINES:
        lines.append(f"> … ({len(text) - _CARD_LINES} more lines in `{file}`)")
    return lines
