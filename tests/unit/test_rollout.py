"""Promoting a candidate model: which replicas are replaced in what order, the desired-state
changes on the way (against the supervisor's own naming logic), a roll that stops half-way, the
candidate checks, and the supervisor starting replicas on the promoted folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from chatbus.settings import Settings
from infra.local import process
from infra.local.rollout import (
    RolloutError,
    RolloutStopped,
    Row,
    candidate_problems,
    model_report,
    plan_roll,
    promotion_lock,
    replicas_of,
    resolve_candidate,
    roll,
)
from infra.local.supervisor import (
    Desired,
    Supervisor,
    component_of,
    read_desired,
    update_desired,
    wanted_replicas,
)

OLD, NEW = "/models/base", "/models/candidate"


class FakeSupervisor:
    """The supervisor as the roll sees it, reconciling at once with the real naming logic
    (:func:`wanted_replicas`): a started replica loads the override of its component, a retired
    one is gone by the next look."""

    def __init__(
        self, replicas: int, *, fail_ready_at: int | None = None, fail_left: bool = False
    ) -> None:
        self.desired = Desired(replicas={"worker": replicas, "gateway": 1})
        self.running: dict[str, str] = {}  # replica → the folder it loaded
        self.history: list[Desired] = []
        self.drained: list[str] = []
        self.fewest_ready = replicas  # the least ready replicas the component had at any time
        self.ready_calls = 0
        self.fail_ready_at = fail_ready_at
        self.fail_left = fail_left
        self._reconcile()

    def _reconcile(self) -> None:
        wanted = [r for r in wanted_replicas(self.desired, set(self.running)) if r != "gateway"]
        for gone in set(self.running) - set(wanted):
            del self.running[gone]
            self.drained.append(gone)
        for name in wanted:
            self.running.setdefault(name, self.desired.model_paths.get("worker", OLD))
        self.desired = self.desired.model_copy(update={"retire": []})

    def change(self, change: Callable[[Desired], Desired]) -> Desired:
        self.desired = change(self.desired)
        self.history.append(self.desired)
        self._reconcile()
        return self.desired

    def replicas(self, component: str) -> dict[str, Row]:
        status = {
            name: {"component": component_of(name), "state": "running", "model_path": path}
            for name, path in self.running.items()
        }
        return replicas_of(status, component)

    def wait_ready(self, component: str, replicas: int) -> list[str]:
        self.ready_calls += 1
        if self.ready_calls == self.fail_ready_at:
            raise TimeoutError(f"{component}: {replicas - 1}/{replicas} ready after 1 s")
        assert len(self.running) == replicas
        return sorted(self.running)

    def wait_left(self, replica: str) -> int | None:
        assert replica not in self.running
        if self.fail_left:
            raise TimeoutError(f"{replica} still draining after 1 s")
        self.fewest_ready = min(self.fewest_ready, len(self.running))
        return 0


def test_each_old_replica_is_replaced_lowest_first_by_a_surge_then_a_drain() -> None:
    fake = FakeSupervisor(2)
    plan = plan_roll(fake.desired, fake.replicas("worker"), "worker", NEW, OLD)
    assert plan.replace == ("worker-1", "worker-2") and plan.previous_path == OLD

    report = roll(fake, plan)

    counts = [d.count("worker") for d in fake.history]
    assert counts == [2, 3, 2, 3, 2]  # override, surge, drain, surge, drain
    assert fake.history[0].model_paths == {"worker": NEW}
    assert [(s.old, s.new) for s in report.steps] == [
        ("worker-1", ("worker-3",)),
        ("worker-2", ("worker-1",)),  # the freed name, on the candidate this time
    ]
    assert fake.drained == ["worker-1", "worker-2"]
    assert fake.fewest_ready == 2  # capacity never fell below where it began
    assert fake.running == {"worker-1": NEW, "worker-3": NEW}
    assert fake.desired.count("worker") == 2 and fake.desired.count("gateway") == 1


def test_replicas_already_on_the_candidate_are_left_alone() -> None:
    fake = FakeSupervisor(3)
    fake.running["worker-2"] = NEW
    plan = plan_roll(fake.desired, fake.replicas("worker"), "worker", NEW, OLD)
    assert plan.replace == ("worker-1", "worker-3")
    assert plan_roll(fake.desired, fake.replicas("worker"), "worker", OLD, OLD).replace == (
        "worker-2",
    )


def test_a_component_that_is_not_steady_is_refused() -> None:
    fake = FakeSupervisor(2)
    rows = fake.replicas("worker")
    rows["worker-2"] = {**rows["worker-2"], "state": "backoff"}
    with pytest.raises(RolloutError, match=r"not steady: 1/2 replicas running"):
        plan_roll(fake.desired, rows, "worker", NEW, OLD)
    with pytest.raises(RolloutError, match="runs no replica"):
        plan_roll(Desired(), {}, "worker", NEW, OLD)


def test_a_new_replica_not_ready_stops_the_roll_and_restores_the_override() -> None:
    fake = FakeSupervisor(2, fail_ready_at=2)  # the second surge never becomes ready
    plan = plan_roll(fake.desired, fake.replicas("worker"), "worker", NEW, OLD)

    with pytest.raises(RolloutStopped) as stopped:
        roll(fake, plan)

    assert fake.desired.model_paths == {}  # new replicas load the old folder again
    assert fake.desired.count("worker") == 2
    # the first step stands; the unready surge (worker-1, on the candidate) was retired, so the
    # old worker-2 still serves beside the replaced one
    assert fake.running == {"worker-2": OLD, "worker-3": NEW}
    message = str(stopped.value)
    assert "stopped at step 2/2: worker: 2/3 ready after 1 s" in message
    assert "on the candidate: worker-3" in message and f"worker-2 ({OLD})" in message
    assert "worker-1 (not ready) retired" in message
    assert f"to finish: chatbus models promote {NEW}" in message
    assert f"to undo:   chatbus models promote {OLD}" in message


def test_an_old_replica_still_draining_stops_the_roll_with_the_count_kept() -> None:
    fake = FakeSupervisor(2, fail_left=True)
    plan = plan_roll(fake.desired, fake.replicas("worker"), "worker", NEW, OLD)

    with pytest.raises(RolloutStopped, match="step 1/2: worker-1 still draining") as stopped:
        roll(fake, plan)

    assert fake.desired.model_paths == {} and fake.desired.count("worker") == 2
    assert fake.running == {"worker-2": OLD, "worker-3": NEW}
    assert "retired" not in str(stopped.value)  # the surge was ready: it stays


def test_a_promoted_override_is_kept_as_previous_for_the_undo() -> None:
    desired = Desired(replicas={"worker": 1}, model_paths={"worker": NEW})
    rows = {"worker-1": {"component": "worker", "state": "running", "model_path": NEW}}
    plan = plan_roll(desired, rows, "worker", OLD, "/default")
    assert plan.previous == NEW and plan.previous_path == NEW and plan.replace == ("worker-1",)


def test_the_override_survives_a_supervisor_restart_and_reaches_the_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path, model_name="chatbus-tiny")
    update_desired(
        settings, lambda d: d.scaled("worker", 1).with_model_path("worker", str(tmp_path / "c"))
    )
    started: dict[str, dict[str, str]] = {}

    def spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str]) -> int:
        started[name] = env
        return 4242

    monkeypatch.setattr(process, "spawn", spawn)
    monkeypatch.setattr(process, "running_pid", lambda settings, name: 4242)
    supervisor = Supervisor(settings)  # a fresh one reads the desired state from disk
    supervisor.reconcile()

    assert read_desired(settings).model_paths == {"worker": str(tmp_path / "c")}
    assert started["worker-1"]["CHATBUS_MODEL_PATH"] == str(tmp_path / "c")
    assert supervisor.replicas["worker-1"].model_path == str(tmp_path / "c")
    update_desired(settings, lambda d: d.with_model_path("worker", None).scaled("worker", 2))
    supervisor.reconcile()
    assert "worker-2" in started and "worker-1" in supervisor.replicas
    assert started["worker-2"]["CHATBUS_MODEL_PATH"] == str(settings.model_folder("chatbus-tiny"))


def test_the_report_marks_replicas_not_yet_on_the_wanted_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, model_name="chatbus-tiny")
    desired = Desired(replicas={"worker": 2, "gateway": 1}, model_paths={"worker": NEW})
    status = {
        "worker-1": {"component": "worker", "state": "running", "model_path": OLD},
        "worker-3": {"component": "worker", "state": "running", "model_path": NEW},
        "worker-2": {"component": "worker", "state": "stopped", "model_path": OLD},
        "gateway": {"component": "gateway", "state": "running"},
    }
    (component,) = model_report(settings, desired, status)
    assert component["model_path"] == NEW and component["promoted"] is True
    assert [(r["name"], r["current"]) for r in component["replicas"]] == [  # type: ignore[attr-defined]
        ("worker-1", False),
        ("worker-3", True),
    ]


def _folder(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "candidate"
    folder.mkdir()
    for name in files:
        (folder / name).write_text(json.dumps({"model_type": "llama"}))
    return folder


def test_a_complete_folder_passes_the_cheap_checks(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "config.json", "tokenizer.json", "model.safetensors")
    assert candidate_problems(folder) == []


def test_a_folder_the_workers_cannot_load_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    assert candidate_problems(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} does not exist"]
    adapter = _folder(tmp_path, "adapter_config.json", "adapter_model.safetensors")
    problems = candidate_problems(adapter)
    assert len(problems) == 2
    assert "no config.json" in problems[0] and "LoRA adapter" in problems[0]
    assert "no tokenizer" in problems[1]
    (adapter / "config.json").write_text("{}")
    assert f"{adapter / 'config.json'} names no model_type" in candidate_problems(adapter)


def test_a_local_model_name_names_its_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path / "cache")
    settings.model_folder("chatbus-tiny").mkdir(parents=True)
    folder = settings.model_folder("chatbus-tiny").resolve()
    assert resolve_candidate(settings, "chatbus-tiny") == folder
    assert resolve_candidate(settings, str(tmp_path / "x")) == (tmp_path / "x").resolve()


def test_one_promotion_at_a_time(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    busy = pytest.raises(RolloutError, match="another `chatbus models promote` is running")
    with promotion_lock(settings), busy, promotion_lock(settings):
        pass
    with promotion_lock(settings):
        pass
