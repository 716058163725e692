"""Rolling a worker component onto another model folder, one replica at a time, no stream cut.

``chatbus models promote PATH`` records PATH as the component's model folder in the supervisor's
desired state (:attr:`Desired.model_paths`: every replica started from then on loads it, a
restarted supervisor too), then, for each replica still on another folder, lowest index first:

1. **surge**: one replica more, which loads PATH; wait until it answers /readyz;
2. **drain**: retire one old replica exactly as ``chatbus ops drain`` does (it takes no new
   request, finishes its streams, commits and leaves its group); wait until it has exited.

So the component never runs fewer ready replicas than it started with, and ends with as many.
The served model *name* does not change: clients ask for the same model, only the weights do.

When a step fails (a new replica not ready in time, an old one still draining, Ctrl-C), the roll
stops: the override goes back to what it was (replicas started from then on load the old folder
again), a surged replica that was not ready yet is retired, and :class:`RolloutStopped` says
which replicas run which folder and how to finish or undo.

The roll drives a :class:`Supervised` (the local supervisor through its files, see
``chatbus.cli.models``, or a fake in the unit tests); everything else here is pure.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from chatbus.errors import ChatbusError
from chatbus.settings import Settings
from infra.local.supervisor import Desired, index_of, model_of, model_path_of

__all__ = [
    "RollPlan",
    "RollReport",
    "RolloutError",
    "RolloutStopped",
    "Row",
    "Step",
    "Supervised",
    "candidate_problems",
    "model_report",
    "plan_roll",
    "promotion_lock",
    "replicas_of",
    "resolve_candidate",
    "roll",
    "same_folder",
    "stopped_desired",
]

Row = Mapping[str, object]

#: Any one of these is a tokenizer transformers can load (fast, SentencePiece, byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class RolloutError(ChatbusError):
    """A promotion that cannot start: a folder the workers cannot load, a component that is not
    steady, another promotion running. Nothing was changed."""


class RolloutStopped(RolloutError):
    """A promotion that stopped half-way; the message says what runs where and what to run."""


# --- the candidate ------------------------------------------------------------------------------
def resolve_candidate(settings: Settings, spec: str) -> Path:
    """The folder ``spec`` names: a path, or the name of a local model (``chatbus-tiny``)."""
    path = Path(spec).expanduser()
    if not path.exists() and "/" not in spec and settings.model_folder(spec).exists():
        path = settings.model_folder(spec)
    return path.resolve()


def candidate_problems(path: Path) -> list[str]:
    """What keeps ``path`` from being a Hugging Face causal-LM folder a worker loads (the cheap
    checks, on files only); empty when there is nothing."""
    if not path.exists():
        return [f"{path} does not exist"]
    if not path.is_dir():
        return [
            f"{path} is not a folder (a Hugging Face model is: config.json, tokenizer, weights)"
        ]
    problems = []
    config = path / "config.json"
    if not config.is_file():
        hint = (
            " (it holds a LoRA adapter: promote the merged folder `chatbus train` writes)"
            if (path / "adapter_config.json").exists()
            else ""
        )
        problems.append(f"no config.json in {path}: not a Hugging Face model folder{hint}")
    else:
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            data = None
            problems.append(f"{config} is not readable JSON: {exc}")
        if data is not None and not (isinstance(data, dict) and data.get("model_type")):
            problems.append(f"{config} names no model_type")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"no tokenizer in {path} (one of {', '.join(TOKENIZER_FILES)})")
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        problems.append(f"no weights in {path} ({' or '.join(WEIGHT_PATTERNS)})")
    return problems


# --- what runs ----------------------------------------------------------------------------------
def same_folder(path: object, other: str | Path) -> bool:
    """Whether ``path`` (a status row's ``model_path``) names the folder ``other``."""
    return isinstance(path, str) and Path(path).resolve() == Path(other).resolve()


def replicas_of(status: Mapping[str, Row], component: str) -> dict[str, Row]:
    """The status rows of ``component``'s replicas that run or are on their way (not the
    retired ones)."""
    return {
        name: row
        for name, row in status.items()
        if row.get("component") == component and row.get("state") != "stopped"
    }


def model_report(
    settings: Settings, desired: Desired, status: Mapping[str, Row]
) -> list[dict[str, object]]:
    """Per worker component: the folder its new replicas load, and per replica the folder it
    runs and whether that is the one (``chatbus models current``)."""
    out: list[dict[str, object]] = []
    for component in sorted(desired.replicas):
        wanted = model_path_of(settings, desired, component)
        if wanted is None:
            continue
        rows = replicas_of(status, component)
        out.append(
            {
                "component": component,
                "model": model_of(settings, component),
                "model_path": str(wanted),
                "promoted": component in desired.model_paths,
                "replicas": [
                    {
                        "name": name,
                        "state": row.get("state"),
                        "pid": row.get("pid"),
                        "model_path": row.get("model_path"),
                        "current": same_folder(row.get("model_path"), wanted),
                    }
                    for name, row in sorted(rows.items(), key=lambda item: index_of(item[0]))
                ],
            }
        )
    return out


# --- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RollPlan:
    component: str
    target: str  # the candidate folder
    previous: str | None  # the component's override before the roll (None: its model's folder)
    previous_path: str  # the folder its replicas ran before: what `promote` takes to undo
    replicas: int  # how many it runs, before and after
    replace: tuple[str, ...]  # the replicas on another folder, in the order they are replaced


def plan_roll(
    desired: Desired, rows: Mapping[str, Row], component: str, target: str, default_path: str
) -> RollPlan:
    """Which replicas of ``component`` to replace to put it on ``target`` (``rows``: its
    replicas' status rows). Refuses a component that is not steady: every wanted replica
    running, none draining."""
    count = desired.count(component)
    if count == 0:
        raise RolloutError(
            f"{component} runs no replica: scale it up first "
            f"(chatbus ops scale {component} --replicas 1)"
        )
    running = sorted((n for n, r in rows.items() if r.get("state") == "running"), key=index_of)
    if len(running) != count or len(rows) != count:
        states = ", ".join(f"{n} {r.get('state')}" for n, r in sorted(rows.items())) or "none"
        raise RolloutError(
            f"{component} is not steady: {len(running)}/{count} replicas running ({states}); "
            "wait for it, or fix it first (chatbus ops status)"
        )
    paths = Counter(str(rows[n].get("model_path")) for n in running if rows[n].get("model_path"))
    previous = desired.model_paths.get(component)
    return RollPlan(
        component=component,
        target=target,
        previous=previous,
        previous_path=previous or (paths.most_common(1)[0][0] if paths else default_path),
        replicas=count,
        replace=tuple(n for n in running if not same_folder(rows[n].get("model_path"), target)),
    )


def stopped_desired(desired: Desired, plan: RollPlan, unready: tuple[str, ...] | None) -> Desired:
    """The desired state after a roll stopped: the override as it was, and ``unready`` (the
    replicas of a surge not ready yet; None: no surge under way) retired."""
    desired = desired.with_model_path(plan.component, plan.previous)
    if unready is None:
        return desired
    return desired.scaled(plan.component, plan.replicas).model_copy(
        update={"retire": [*desired.retire, *unready]}
    )


# --- the roll -----------------------------------------------------------------------------------
class Supervised(Protocol):
    """What a roll drives: the supervisor's desired state and its replicas."""

    def change(self, change: Callable[[Desired], Desired]) -> Desired:
        """Apply ``change`` to the desired state (atomically) and return the new one."""
        ...

    def replicas(self, component: str) -> dict[str, Row]:
        """The status rows of ``component``'s replicas (see :func:`replicas_of`)."""
        ...

    def wait_ready(self, component: str, replicas: int) -> list[str]:
        """Wait until exactly ``replicas`` run and are ready (their names); TimeoutError."""
        ...

    def wait_left(self, replica: str) -> int | None:
        """Wait until the retired ``replica`` has exited (its status); TimeoutError."""
        ...


@dataclass(frozen=True, slots=True)
class Step:
    old: str  # the replica replaced
    new: tuple[str, ...]  # the replica that took its place (empty: skipped)
    surge_s: float  # until the new one was ready
    drain_s: float  # until the old one had left
    exit_code: int | None  # how the old one exited


@dataclass(slots=True)
class RollReport:
    plan: RollPlan
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class _Surge:
    before: set[str] | None = None  # the replicas before the surge; None: none under way


def roll(
    supervised: Supervised,
    plan: RollPlan,
    *,
    echo: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
) -> RollReport:
    """Put ``plan.component`` on ``plan.target``: the override, then surge-and-drain per replica
    of ``plan.replace``. Raises :class:`RolloutStopped` (the override undone) when a step fails."""
    started = clock()
    report = RollReport(plan)
    supervised.change(lambda d: d.with_model_path(plan.component, plan.target))
    echo(f"{plan.component}: new replicas load {plan.target}")
    for i, old in enumerate(plan.replace, 1):
        surge = _Surge()
        try:
            report.steps.append(
                _replace(supervised, plan, old, f"[{i}/{len(plan.replace)}]", surge, echo, clock)
            )
        except (TimeoutError, KeyboardInterrupt) as exc:
            rows = supervised.replicas(plan.component)
            unready = None if surge.before is None else tuple(sorted(set(rows) - surge.before))
            supervised.change(partial(stopped_desired, plan=plan, unready=unready))
            staying = {n: r for n, r in rows.items() if n not in (unready or ())}
            reason = str(exc) or type(exc).__name__
            raise RolloutStopped(_stopped_message(plan, i, reason, staying, unready)) from exc
    report.seconds = clock() - started
    return report


def _replace(
    supervised: Supervised,
    plan: RollPlan,
    old: str,
    tag: str,
    surge: _Surge,
    echo: Callable[[str], None],
    clock: Callable[[], float],
) -> Step:
    """One step: a replica more on the target, ready; then ``old`` drained and gone."""
    component, count = plan.component, plan.replicas
    rows = supervised.replicas(component)
    row = rows.get(old)
    if (
        row is None
        or row.get("state") != "running"
        or same_folder(row.get("model_path"), plan.target)
    ):
        echo(f"{tag} {old} is no longer on the old folder (restarted or gone): skipped")
        return Step(old, (), 0.0, 0.0, None)
    surge.before = set(rows)
    began = clock()
    supervised.change(lambda d: d.scaled(component, d.count(component) + 1))
    echo(f"{tag} surge: {component} {count} → {count + 1} replicas, waiting for the new one")
    new = tuple(n for n in supervised.wait_ready(component, count + 1) if n not in surge.before)
    surge.before = None
    ready = clock()
    echo(f"{tag} {', '.join(new) or '?'} ready on the candidate in {ready - began:.1f} s")
    supervised.change(lambda d: d.retiring(old))
    echo(f"{tag} draining {old} (pid {row.get('pid')}): no new work, finishing its streams")
    code = supervised.wait_left(old)
    left = clock()
    note = "" if code in (0, None) else "; it did not exit cleanly, see its log"
    echo(f"{tag} {old} drained and left in {left - ready:.1f} s (exit status {code}){note}")
    return Step(old, new, ready - began, left - ready, code)


def _stopped_message(
    plan: RollPlan, step: int, reason: str, rows: Mapping[str, Row], unready: tuple[str, ...] | None
) -> str:
    on_target = sorted(
        (n for n, r in rows.items() if same_folder(r.get("model_path"), plan.target)),
        key=index_of,
    )
    others = sorted(
        (f"{n} ({r.get('model_path')})" for n, r in rows.items() if n not in on_target),
        key=index_of,
    )
    retired = f"; {', '.join(unready)} (not ready) retired" if unready else ""
    return (
        f"promotion of {plan.target} onto {plan.component} stopped at step {step}/"
        f"{len(plan.replace)}: {reason}\n"
        f"  now on the candidate: {', '.join(on_target) or 'none'}; on another folder: "
        f"{', '.join(others) or 'none'}\n"
        f"  new replicas load {plan.previous_path} again{retired}; "
        f"{plan.component} runs {plan.replicas} replica(s)\n"
        f"  to finish: chatbus models promote {plan.target} --component {plan.component}\n"
        f"  to undo:   chatbus models promote {plan.previous_path} --component {plan.component}"
    )


@contextmanager
def promotion_lock(settings: Settings) -> Iterator[None]:
    """One promotion at a time per state directory."""
    path = settings.run_dir / "models-promote.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RolloutError(
                f"another `chatbus models promote` is running (it holds {path})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
