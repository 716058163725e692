"""The soak's CPU accounting: where the CPU went between two rows, and a server's child
processes counted with it (PostgreSQL works in one backend per connection)."""

from __future__ import annotations

import os
import select
import subprocess
import sys

from benchmarks.inference.cpu import cpu_times
from benchmarks.soak import Sample, cpu_report


def _sample(
    at_s: float,
    tokens_per_s: float,
    worker: float,
    processors: float,
    kafka: float,
    busy: float,
    steal: float,
) -> Sample:
    return Sample(
        at_s=at_s,
        tokens_per_s=tokens_per_s,
        requests=1,
        not_whole=0,
        cpu_s={"worker-1": worker, "processors": processors, "kafka": kafka},
        machine_cpu_s={"busy": busy, "steal": steal},
    )


def test_the_cpu_between_rows_is_split_into_worker_processors_rest_and_the_machine() -> None:
    samples = [
        _sample(30, 40.0, worker=30, processors=15, kafka=3, busy=50, steal=0),
        _sample(60, 40.0, worker=60, processors=30, kafka=6, busy=100, steal=3),
        _sample(90, 20.0, worker=90, processors=45, kafka=9, busy=160, steal=6),
    ]
    lines = cpu_report(samples, every=1)
    assert lines[2] == "| 1.0 | 1.00 | 0.50 | 0.10 | 0.07 | 0.10 | 40.0 |"
    # the machine used 60 CPU-s in the last 30 s, the tracked processes 48: 0.4 of a core
    # elsewhere; 600 tokens for 30 worker CPU-seconds
    assert lines[3] == "| 1.5 | 1.00 | 0.50 | 0.10 | 0.40 | 0.10 | 20.0 |"


def test_a_restarted_process_counts_what_it_used_since_it_started() -> None:
    samples = [
        _sample(30, 40.0, worker=300, processors=15, kafka=3, busy=350, steal=0),
        _sample(60, 40.0, worker=12, processors=30, kafka=6, busy=380, steal=0),
    ]
    assert cpu_report(samples, every=1)[2].startswith("| 1.0 | 0.40 | 0.50 |")


def test_no_rows_without_cpu_figures() -> None:
    assert cpu_report([Sample(at_s=30, tokens_per_s=1, requests=1, not_whole=0)] * 3, 1) == []


def test_a_process_counts_the_cpu_of_its_children() -> None:
    import psutil

    # a child that burns half a CPU-second, says so on the shared stdout, then idles until killed
    burn = (
        "import signal, time\nend = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\nprint('burnt', flush=True)\nsignal.pause()\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {burn!r}])\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30.0)  # the child's word, or 30 s
        assert ready and parent.stdout.readline() == b"burnt\n"
        own = sum(psutil.Process(parent.pid).cpu_times()[:2])
        assert cpu_times({"parent": parent.pid})["parent"] >= own + 0.45
        assert cpu_times({"gone": 2**22 + os.getpid()}) == {}
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
