"""An S3-compatible endpoint on loopback: moto's standalone server (in memory), bucket created."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import structlog

from chatbus import ports
from chatbus.errors import ConfigurationError
from chatbus.object_store import s3_client
from chatbus.settings import Settings
from infra.local.service import Command, Service

log = structlog.get_logger(__name__)

MOTO_HINT = "install it into this environment: pip install 'moto[server]'"


def find_moto_server() -> str:
    """moto_server next to this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise ConfigurationError(f"moto_server not found next to {sys.executable}; {MOTO_HINT}")
    return found


def client(settings: Settings, timeout: float = 3.0) -> Any:
    """A boto3 S3 client for the local endpoint (one retry, botocore's legacy policy)."""
    return s3_client(
        settings,
        timeout_s=timeout,
        attempts=1,
        retry_mode="legacy",
        endpoint=f"http://{ports.HOST}:{settings.local.s3_port}",
    )


class S3(Service):
    name = "s3"
    title = "S3 (moto)"
    start_timeout = 30.0
    stop_timeout = 10.0

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [(settings.local.s3_port, "CHATBUS_S3_PORT")]

    def address(self, settings: Settings) -> str:
        return f"http://{ports.HOST}:{settings.local.s3_port}"

    def install(self, settings: Settings) -> None:
        find_moto_server()

    def prepare(self, settings: Settings) -> None:
        self.data_dir(settings).mkdir(parents=True, exist_ok=True)

    def command(self, settings: Settings) -> Command:
        return Command(
            argv=[find_moto_server(), "-H", ports.HOST, "-p", str(settings.local.s3_port)],
            cwd=self.data_dir(settings),
        )

    def check(self, settings: Settings, timeout: float) -> str:
        if not ports.is_open(settings.local.s3_port, timeout=min(timeout, 1.0)):
            raise ConnectionError(f"nothing listens on {self.address(settings)}")
        names = [b["Name"] for b in client(settings, timeout).list_buckets().get("Buckets", [])]
        has = "present" if settings.s3.bucket in names else "missing"
        return f"{len(names)} bucket(s), {settings.s3.bucket} {has}"

    def after_start(self, settings: Settings) -> None:
        s3 = client(settings)
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if settings.s3.bucket in names:
            return
        kwargs: dict[str, Any] = {"Bucket": settings.s3.bucket}
        if settings.s3.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3.region}
        s3.create_bucket(**kwargs)
        log.info("bucket created", bucket=settings.s3.bucket)
