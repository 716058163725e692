"""The S3 client of every chatbus component (the archiver, ``chatbus archive verify``, analytics).

Errors of boto3/botocore are translated here into ours: a store that cannot be reached is a
retriable :class:`~chatbus.errors.ServiceUnavailable` that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chatbus.errors import ServiceUnavailable
from chatbus.settings import Settings


def s3_client(
    settings: Settings,
    *,
    timeout_s: float = 10.0,
    attempts: int = 3,
    retry_mode: str = "standard",
    endpoint: str | None = None,
) -> Any:
    """A boto3 S3 client for ``settings`` (path-style addressing; the endpoint may be empty for
    AWS itself); ``endpoint`` overrides the settings' one."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or settings.s3.endpoint or None,
        region_name=settings.s3.region,
        aws_access_key_id=settings.s3.access_key_id.get_secret_value(),
        aws_secret_access_key=settings.s3.secret_access_key.get_secret_value(),
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": attempts, "mode": retry_mode},
            s3={"addressing_style": "path"},
        ),
    )


class ObjectStore:
    """Put, get, list and delete objects of one bucket."""

    def __init__(
        self,
        settings: Settings,
        bucket: str | None = None,
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.settings = settings
        self.bucket = bucket or settings.s3.bucket
        self._client = s3_client(settings, timeout_s=timeout_s, attempts=attempts)

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"object store {self.settings.s3.endpoint or 'AWS S3'} bucket {self.bucket!r}: "
            f"{exc.__class__.__name__}: {exc}; start the local services with `make up`, or set "
            "CHATBUS_S3_ENDPOINT / CHATBUS_S3_BUCKET and the AWS credentials"
        )

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc) from exc

    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when there is no such key."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, in key order."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"], item["Size"]
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        keys = [key for key, _ in self.list(prefix)]
        for at in range(0, len(keys), 1000):
            self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[at : at + 1000]], "Quiet": True},
            )
        return len(keys)
