"""The gateway's own install: ``pip install 'chatbus[gateway]'`` and nothing else runs a gateway.

A fresh virtual environment gets ``chatbus[gateway]`` from a copy of this checkout (a wheel, as
an image would, at the versions of requirements.lock, linked from uv's cache at ~/.cache/uv),
cannot import torch, pyspark, faust or moto, and serves ``chatbus gateway`` against the real
local services until it is ready and answers an API key. The gateway runs from the new
environment's ``chatbus`` entry point, in a folder outside the checkout, so nothing of the
development environment leaks in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chatbus.polling import eventually
from chatbus.settings import Settings
from tests.integration.gateway_fixtures import api_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
# What the other components install and the gateway must do without.
FORBIDDEN = (
    "torch",
    "pyspark",
    "faust",
    "mode",
    "moto",
    "sentence_transformers",
    "sklearn",
    "llama_cpp",
    "matplotlib",
)
STARTUP_S = 90.0  # interpreter, fastapi and the tokenizer on a busy 2-core machine


def _uv() -> str:
    """The uv that `make install` put beside the interpreter (or one on PATH)."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    assert found, "uv is not installed: run `make install`"
    return found


def _index_flags() -> list[str]:
    """pip's index settings from the environment, as the Makefile forwards them to uv."""
    flags: list[str] = []
    for links in os.environ.get("PIP_FIND_LINKS", "").split():
        if "://" in links or Path(links).is_dir():
            flags += ["--find-links", links]
    if os.environ.get("PIP_INDEX_URL"):
        flags += ["--index-url", os.environ["PIP_INDEX_URL"]]
    for url in os.environ.get("PIP_EXTRA_INDEX_URL", "").split():
        flags += ["--extra-index-url", url]
    if os.environ.get("PIP_NO_INDEX", "").lower() in {"1", "true", "yes", "on"}:
        flags.append("--no-index")
    return flags


def _copy_source(into: Path) -> Path:
    """The files a wheel is built from, copied as infra/k8s/Containerfile copies them (building in
    the checkout would reuse setuptools' build/ folder, stale modules included)."""
    into.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, into / name)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(
            REPO / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return into


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment holding ``chatbus[gateway]`` alone; removed afterwards."""
    root = tmp_path_factory.mktemp("gateway-install")
    source = _copy_source(root / "src")
    venv = root / "venv"
    uv = _uv()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    try:
        started = time.monotonic()
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                "--constraint",
                str(LOCK),
                *_index_flags(),
                f"{source}[gateway]",
            ],
            check=True,
            cwd=venv.parent,
        )
        print(f"chatbus[gateway] installed in {time.monotonic() - started:.1f} s")
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)


def test_the_gateway_install_has_none_of_the_other_components_libraries(gateway_venv: Path) -> None:
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    done = subprocess.run(
        [str(gateway_venv / "bin" / "python"), "-c", probe, *FORBIDDEN],
        check=True,
        capture_output=True,
        text=True,
        cwd=gateway_venv,
    )
    assert done.stdout.split() == [], "installed with chatbus[gateway] alone"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _environment(settings: Settings, port: int) -> dict[str, str]:
    """The test's settings as the gateway process reads them, and nothing of this venv."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATBUS_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }
    served = settings.replace(
        model_path=settings.resolved_model_path, gateway_port=port, log_json=False
    )
    return environ | served.as_env() | {"HF_HUB_OFFLINE": "1"}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class InstalledGateway:
    url: str
    settings: Settings
    proc: subprocess.Popen[bytes]


@pytest.fixture
def installed_gateway(
    gateway_venv: Path, bus: Settings, demo_model_path: Path
) -> Iterator[InstalledGateway]:
    """``chatbus gateway`` of the new environment; stopped by PID, its log's tail printed."""
    settings = bus.replace(**{"model_path": demo_model_path})
    port = _free_port()
    log_path = gateway_venv.parent / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(gateway_venv / "bin" / "chatbus"),
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=gateway_venv.parent,
            env=_environment(settings, port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield InstalledGateway(f"http://127.0.0.1:{port}", settings, proc)
    finally:
        _stop(proc)
        print(log_path.read_text(errors="replace")[-4000:])
    assert proc.returncode in (0, -signal.SIGTERM), "the gateway did not stop cleanly on SIGTERM"


async def test_the_gateway_starts_and_serves_from_its_own_install(
    installed_gateway: InstalledGateway,
) -> None:
    gateway = installed_gateway
    user = f"install-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:

        async def ready() -> bool:
            assert gateway.proc.poll() is None, f"the gateway exited ({gateway.proc.returncode})"
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout_s=STARTUP_S, interval=0.25, what="the gateway's /readyz")
        async with api_key(gateway.settings, user) as key:
            models = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert models.status_code == 200, models.text
        assert models.json()["object"] == "list"  # no worker runs: the list may be empty
        assert (await client.get("/v1/models")).status_code == 401
        page = await client.get("/ui/static/index.html")  # package data came with the wheel
        assert page.status_code == 200
