"""The local supervisor's pure logic: replica names, ports, which replicas to keep, backoff."""

from __future__ import annotations

import os
from pathlib import Path

from chatbus.settings import Settings
from infra.local.supervisor import (
    REPLACE_AFTER_TAKEOVER_S,
    Desired,
    Replica,
    Supervisor,
    component_of,
    default_desired,
    model_of,
    replica_port,
    start_order,
    wanted_replicas,
)


def test_replica_names_map_back_to_their_component() -> None:
    assert component_of("worker-12") == "worker"
    assert component_of("gateway") == "gateway"
    assert component_of("supervisor") == "supervisor"  # not a component: left as is


def test_each_replica_has_its_own_health_port_and_the_gateway_uses_its_own() -> None:
    settings = Settings(local_metrics_base_port=40000, gateway_port=8123)
    ports = [
        replica_port(settings, r)
        for r in ("processors", "archiver-1", "worker-1", "worker-2", "ledger-1", "gateway")
    ]
    assert ports == [40000, 40011, 40021, 40022, 40031, 8123]


def test_a_further_local_model_gets_its_own_worker_component_and_ports() -> None:
    settings = Settings(
        local_metrics_base_port=40000,
        model_name="smollm2-135m-instruct",
        local_models=("smollm2-135m-instruct", "chatbus-tiny"),
    )
    assert start_order(settings) == (
        "processors",
        "archiver",
        "ledger",
        "worker",
        "worker@chatbus-tiny",
        "gateway",
    )
    assert component_of("worker@chatbus-tiny-2") == "worker@chatbus-tiny"
    assert model_of(settings, "worker") == "smollm2-135m-instruct"
    assert model_of(settings, "worker@chatbus-tiny") == "chatbus-tiny"
    assert model_of(settings, "gateway") is None
    ports = [
        replica_port(settings, r)
        for r in ("worker-1", "worker@chatbus-tiny-1", "worker@chatbus-tiny-2")
    ]
    assert ports == [40021, 40041, 40042]
    desired = default_desired(settings)
    assert desired.count("worker@chatbus-tiny") == 1
    assert wanted_replicas(desired, set()) == [
        "processors",
        "archiver-1",
        "ledger-1",
        "worker-1",
        "worker@chatbus-tiny-1",
        "gateway",
    ]


def test_scaling_up_fills_the_lowest_free_index_in_start_order() -> None:
    desired = Desired(replicas={"gateway": 1, "worker": 3, "processors": 1})
    assert wanted_replicas(desired, {"worker-2"}) == [
        "processors",
        "worker-1",
        "worker-2",
        "worker-3",
        "gateway",
    ]


def test_scaling_down_retires_the_drained_replica_first_then_the_highest() -> None:
    running = {"worker-1", "worker-2", "worker-3"}
    assert wanted_replicas(Desired(replicas={"worker": 2}, retire=["worker-1"]), running) == [
        "worker-2",
        "worker-3",
    ]
    assert wanted_replicas(Desired(replicas={"worker": 1}), running) == ["worker-1"]
    assert wanted_replicas(Desired(replicas={"worker": 0}), running) == []


def test_a_drained_name_is_not_reused_while_it_is_being_retired() -> None:
    desired = Desired(replicas={"worker": 2}, retire=["worker-2"])
    assert wanted_replicas(desired, {"worker-1"}) == ["worker-1", "worker-3"]


def test_restart_backoff_doubles_per_crash_in_a_row_up_to_the_limit(tmp_path: Path) -> None:
    supervisor = Supervisor(Settings(state_dir=tmp_path, local_restart_backoff_max_s=10))
    delays = [
        supervisor.restart_delay(Replica("worker-1", crashes_in_a_row=n)) for n in range(1, 7)
    ]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_a_crashed_worker_beside_others_is_replaced_after_they_took_its_streams_over(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(Settings(state_dir=tmp_path))
    crashed, survivor = Replica("worker-1", pid=os.getpid()), Replica("worker-2", pid=1)
    supervisor.replicas = {"worker-1": crashed, "worker-2": survivor}

    supervisor._crashed(crashed, now=100.0)

    assert crashed.next_start_at == 100.0 + REPLACE_AFTER_TAKEOVER_S  # not the 1 s backoff
    survivor.pid, crashed.pid = None, os.getpid()  # the last worker of its model crashes:
    supervisor._crashed(crashed, now=200.0)
    assert crashed.next_start_at == 200.0 + supervisor.restart_delay(crashed)  # the backoff
