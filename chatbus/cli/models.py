"""``chatbus models promote|current``: which weights the local workers serve, changed live.

``promote`` rolls a worker component of the local supervisor onto a candidate folder, one replica
at a time (:mod:`infra.local.rollout`); the served model name stays the same. ``chatbus model
build`` (:mod:`chatbus.cli.model`) builds the local models themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from chatbus.cli import common
from chatbus.settings import Settings

if TYPE_CHECKING:
    from infra.local.rollout import Row
    from infra.local.supervisor import Desired

_KUBERNETES = (
    "set CHATBUS_MODEL_PATH on the worker Deployment, a rolling update: kubectl -n chatbus "
    "set env deployment/chatbus-worker CHATBUS_MODEL_PATH=<folder on the pods>"
)


@click.group()
def models() -> None:
    """The model folders the local workers serve: promote a candidate, see what runs where."""


@models.command("promote")
@click.argument("path")
@click.option(
    "--component",
    default="worker",
    show_default=True,
    help="The worker component to roll: worker, or worker@<model> of a further local model.",
)
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds each step may take: a new replica to be ready, an old one to drain and leave.",
)
@click.option(
    "--allow-new-tokenizer",
    is_flag=True,
    help="Accept a candidate whose vocabulary differs from the served one's: a stream handed "
    "from an old replica to a new one during the roll then continues from token ids the new "
    "tokenizer reads differently.",
)
def models_promote(path: str, component: str, timeout: float, allow_new_tokenizer: bool) -> None:
    """Roll COMPONENT's replicas onto the model folder PATH (or a local model's name), one at a
    time: a new replica on PATH first, ready, then an old one drained (it finishes its streams).
    Clients keep asking for the same model name; the replica count ends where it began.
    Undo: promote the previous folder (the command prints it)."""
    from chatbus.cli.ops.commands import require_supervisor
    from infra.local import rollout, supervisor

    settings = common.settings()
    if supervisor.model_of(settings, component) is None:
        workers = ["worker", *(supervisor.model_worker(m) for m in settings.local_model_names[1:])]
        common.fail(f"{component!r} serves no model; worker components: {', '.join(workers)}")
    candidate = rollout.resolve_candidate(settings, path)
    try:
        _check(rollout.candidate_problems(candidate), candidate)
        require_supervisor(settings, _KUBERNETES)
        with rollout.promotion_lock(settings):
            _promote(settings, candidate, component, timeout, allow_new_tokenizer)
    except rollout.RolloutError as exc:
        common.fail(exc)


def _promote(
    settings: Settings, candidate: Path, component: str, timeout: float, allow_new_tokenizer: bool
) -> None:
    """Plan (refusing an unsteady component or a candidate transformers cannot serve), roll."""
    from infra.local import rollout, supervisor

    local = _LocalSupervisor(settings, timeout)
    desired = supervisor.read_desired(settings)
    wanted = supervisor.model_path_of(settings, desired, component)
    plan = rollout.plan_roll(
        desired, local.replicas(component), component, str(candidate), str(wanted)
    )
    _check(_load_problems(candidate, Path(plan.previous_path), allow_new_tokenizer), candidate)
    if any(Path(plan.previous_path).glob("*.gguf")) and not any(candidate.glob("*.gguf")):
        click.secho(
            f"note: {plan.previous_path} has a GGUF and {candidate} none: where the workers "
            "run llama.cpp (CPU, CHATBUS_ENGINE=auto) the candidate runs on transformers, slower",
            fg="yellow",
            err=True,
        )
    if not plan.replace:
        local.change(lambda d: d.with_model_path(component, str(candidate)))
        click.echo(f"{component}: every replica already runs {candidate}")
        return
    click.echo(
        f"promoting {candidate} onto {component} ({plan.replicas} replica(s), model name "
        f"{supervisor.model_of(settings, component)}): replacing "
        f"{', '.join(plan.replace)}, one at a time"
    )
    report = rollout.roll(local, plan, echo=click.echo)
    replaced = sum(1 for step in report.steps if step.new)
    click.echo(
        f"{component}: {plan.replicas} replica(s) on {candidate}; {replaced} replaced in "
        f"{report.seconds:.1f} s. Undo: chatbus models promote {plan.previous_path}"
        + ("" if component == "worker" else f" --component {component}")
    )


@models.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_current(as_json: bool) -> None:
    """Which model folder each worker replica of the local supervisor serves."""
    from infra.local import process, supervisor
    from infra.local.rollout import model_report

    settings = common.settings()
    report = model_report(
        settings, supervisor.read_desired(settings), supervisor.read_status(settings)
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo(f"no worker replicas in {settings.run_dir}: `make run` or `chatbus pipeline up`")
        return
    if process.running_pid(settings, "supervisor") is None:
        click.secho("the local supervisor is not running; as it last left them:", fg="yellow")
    for component in report:
        how = "promoted" if component["promoted"] else "its model's own folder"
        click.echo(
            f"{component['component']} (model {component['model']}): new replicas load "
            f"{component['model_path']} ({how})"
        )
        for replica in cast(list[dict[str, Any]], component["replicas"]):
            mark = "" if replica["current"] else click.style("  (not yet rolled)", fg="yellow")
            click.echo(f"  {replica['name']:22} {replica['state']:9} {replica['model_path']}{mark}")


def _check(problems: list[str], candidate: Path) -> None:
    from infra.local.rollout import RolloutError

    if problems:
        raise RolloutError(
            f"the workers cannot serve {candidate}; nothing changed:\n  - "
            + "\n  - ".join(problems)
        )


class _LocalSupervisor:
    """The local supervisor as :class:`infra.local.rollout.Supervised`: its desired and status
    files, and the waits of ``chatbus ops scale`` and ``chatbus ops drain``."""

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings, self.timeout = settings, timeout

    def change(self, change: Callable[[Desired], Desired]) -> Desired:
        from infra.local import supervisor

        return supervisor.update_desired(self.settings, change)

    def replicas(self, component: str) -> dict[str, Row]:
        from infra.local import rollout, supervisor

        return rollout.replicas_of(supervisor.read_status(self.settings), component)

    def wait_ready(self, component: str, replicas: int) -> list[str]:
        from chatbus.cli.ops.commands import wait_ready

        return wait_ready(self.settings, component, replicas, self.timeout)

    def wait_left(self, replica: str) -> int | None:
        from chatbus.cli.ops.commands import wait_left

        return wait_left(self.settings, replica, self.timeout)


def _load_problems(candidate: Path, current: Path, allow_new_tokenizer: bool) -> list[str]:
    """What stops a worker from serving ``candidate`` as transformers loads it (its config and
    tokenizer, not the weights): a causal LM, a chat template, an EOS token, and the served
    model's vocabulary (streams handed over mid-roll continue from token ids)."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(candidate)
        tokenizer = AutoTokenizer.from_pretrained(candidate)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, the folder is bad
        return [f"transformers cannot load it: {type(exc).__name__}: {exc}"]
    problems = []
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        problems.append(f"model_type {config.model_type!r} is not a causal language model")
    if not tokenizer.chat_template:
        problems.append("its tokenizer has no chat template (the workers render every request)")
    if tokenizer.eos_token_id is None and getattr(config, "eos_token_id", None) is None:
        problems.append("it names no EOS token: answers would never stop")
    if allow_new_tokenizer or current == candidate or not (current / "config.json").is_file():
        return problems
    try:
        served = AutoTokenizer.from_pretrained(current).get_vocab()
    except Exception:  # noqa: BLE001 - the served folder is not ours to judge here
        return problems
    if served != tokenizer.get_vocab():
        problems.append(
            f"its vocabulary differs from the served model's ({len(tokenizer)} vs {len(served)} "
            f"tokens, {current}): streams handed from an old replica to a new one mid-roll would "
            "continue from token ids it reads differently; --allow-new-tokenizer accepts that"
        )
    return problems
