"""``chatbus train``: LoRA fine-tuning of the served model into a candidate folder."""

from __future__ import annotations

from pathlib import Path

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError
from inference_consumers.training.config import LoraHyperparameters

_DEFAULTS = LoraHyperparameters()


@click.command()
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="OpenAI chat fine-tuning JSONL: a .jsonl file, or a folder with train.jsonl "
    "(validation.jsonl, data_card.json or data_card.md beside it).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder to write the merged candidate into (must be new or empty, or --overwrite).",
)
@click.option(
    "--base",
    default=None,
    metavar="MODEL_NAME_OR_PATH",
    help="A local model name (smollm2-135m-instruct, chatbus-tiny) or a Hugging Face model "
    "folder. Default: the served model (CHATBUS_MODEL_NAME / CHATBUS_MODEL_PATH).",
)
@click.option("--steps", default=_DEFAULTS.steps, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--lr",
    "learning_rate",
    default=_DEFAULTS.learning_rate,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Peak learning rate (linear warm-up, then linear decay to 0).",
)
@click.option(
    "--rank",
    default=_DEFAULTS.rank,
    show_default=True,
    type=click.IntRange(min=1),
    help="LoRA rank (alpha is twice the rank).",
)
@click.option(
    "--batch-size", default=_DEFAULTS.batch_size, show_default=True, type=click.IntRange(min=1)
)
@click.option(
    "--max-length",
    default=_DEFAULTS.max_length,
    show_default=True,
    type=click.IntRange(min=8),
    help="Tokens per conversation; longer ones are cut (and counted).",
)
@click.option(
    "--validation",
    default=None,
    type=click.Path(path_type=Path),
    help="Validation JSONL (default: validation.jsonl beside the training set, if any).",
)
@click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int)
@click.option(
    "--device",
    default=None,
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Default: CHATBUS_DEVICE (auto: CUDA with bf16 autocast when present, else CPU).",
)
@click.option("--overwrite", is_flag=True, help="Replace --output if it holds something.")
@click.option("--no-progress", is_flag=True, help="No progress bar (the per-step log remains).")
def train(
    dataset: Path,
    output: Path,
    base: str | None,
    steps: int,
    learning_rate: float,
    rank: int,
    batch_size: int,
    max_length: int,
    validation: Path | None,
    seed: int,
    device: str | None,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Fine-tune the served model with LoRA on a chat fine-tuning set, into a merged model folder.

    The loss is taken on the assistant's tokens only. The output folder loads with
    AutoModelForCausalLM and is served by CHATBUS_MODEL_PATH=OUTPUT chatbus worker; it holds
    the model card (README.md), training.json, loss.csv and loss.png. Nothing is downloaded.
    """
    from chatbus.logging import configure_logging
    from inference_consumers.training.config import TrainingRequest
    from inference_consumers.training.run import finetune

    settings = common.settings()
    configure_logging(settings, component="train")
    request = TrainingRequest(
        dataset=dataset,
        output=output,
        base=base,
        validation=validation,
        hyper=LoraHyperparameters(
            steps=steps,
            learning_rate=learning_rate,
            rank=rank,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
        ),
        device=device or settings.model.device,
        overwrite=overwrite,
        progress=not no_progress,
    )
    try:
        result = finetune(settings, request)
    except ChatbusError as exc:
        common.fail(exc)
    record = result.record
    loss = record["train_loss"]
    click.echo(f"candidate: {result.output}")
    click.echo(
        f"train loss: {loss['first']:.4f} -> {loss['final']:.4f} "
        f"({record['hyperparameters']['steps']} steps, {record['epochs']:.2f} epochs, "
        f"{record['wall_time_s']:.0f} s on {record['device']})"
    )
    if record["validation_loss"] is not None:
        held_out = record["validation_loss"]
        click.echo(f"validation loss: {held_out['before']:.4f} -> {held_out['after']:.4f}")
    click.echo(
        f"serve it: CHATBUS_MODEL_PATH={result.output} "
        f"CHATBUS_MODEL_NAME={result.output.name} chatbus worker"
    )
