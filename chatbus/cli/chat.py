"""``chatbus chat``: one prompt over the bus, the answer streamed to stdout."""

from __future__ import annotations

import asyncio
import sys

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.command()
@click.argument("prompt")
@click.option("--model", default=None, help="Model name (default: CHATBUS_MODEL_NAME).")
@click.option("--system", default=None, help="A system message before the prompt.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option("--stop", "stop_sequences", multiple=True, help="A stop sequence (repeatable).")
@click.option("--conversation", default=None, help="Continue this conversation id.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for each chunk.")
def chat(
    prompt: str,
    model: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    seed: int | None,
    stop_sequences: tuple[str, ...],
    conversation: str | None,
    timeout: float | None,
) -> None:
    """Send PROMPT over the bus and print the answer as it streams."""
    from pydantic import ValidationError

    from producers.sdk import ChatClient
    from schemas.events import SamplingParams

    settings = common.settings()
    try:
        sampling = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            stop=list(stop_sequences),
        )
    except ValidationError as exc:
        common.fail(exc)
        return
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]

    async def _run() -> str | None:
        async with ChatClient(settings) as client:
            request = await client.send(
                messages,
                model=model or settings.model.name,
                sampling=sampling,
                conversation_id=conversation,
                use_history=conversation is not None,
            )
            finish = None
            async for chunk in client.chunks(request.request_id, timeout_s=timeout):
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
                finish = chunk.finish_reason
            click.echo()
            click.secho(f"[{finish}; conversation {request.conversation_id}]", dim=True, err=True)
            trace = client.trace(request.request_id)
            split = trace.breakdown() if trace is not None else None
            if trace is not None and split is not None:
                stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in split.stages().items())
                click.secho(
                    f"[time to first token {split.total_ms:.1f} ms: {stages}; "
                    f"trace {trace.parent.trace_id}]",
                    dim=True,
                    err=True,
                )
            return finish

    try:
        asyncio.run(_run())
    except ChatbusError as exc:
        common.fail(exc)
