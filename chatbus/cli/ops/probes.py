"""Asking a component over HTTP whether it is live and ready."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

# loopback probes never go through an HTTP(S)_PROXY from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    status: int | None  # HTTP status; None: nothing answered
    detail: str


def probe(host: str, port: int, path: str = "/readyz", timeout_s: float = 1.0) -> Probe:
    """GET ``http://host:port/path``: ok on 2xx; the body's reason (or the error) as detail."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Probe(True, response.status, _reason(response.read()))
    except urllib.error.HTTPError as exc:
        return Probe(False, exc.code, _reason(exc.read()))
    except (urllib.error.URLError, OSError) as exc:
        return Probe(False, None, f"no answer on {url}: {getattr(exc, 'reason', exc)}")


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("status") or data)
    return str(data)
