"""Health and metrics over HTTP for every chatbus process that is not the gateway.

One small threaded HTTP server per process (on ``CHATBUS_METRICS_PORT``) serves:

* ``GET /metrics`` the process's Prometheus series;
* ``GET /livez``   200 while every loop the process registered has beaten within its stall limit
  (a wedged event loop stops beating, so Kubernetes restarts the process), else 503;
* ``GET /readyz``  200 once the process said it is ready (joined its group, loaded its model) and is
  live, else 503 with the reason. A long queue never makes a process unready: backlog is what
  consumer lag and the autoscaler are for.

The server runs in a thread so it answers even while the process's own event loop is busy; the
loops prove they are alive through :meth:`Health.beat`. A process may serve a few more things on
this ops port as ``POST`` routes (the processors' moderation check): each a :data:`PostHandler`
called in the server's thread with the body, returning the status and a JSON body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatbus.logging import get_logger

log = get_logger(__name__)

PostHandler = Callable[[bytes], tuple[int, bytes]]
MAX_POST_BYTES = 2_000_000


class Health:
    """What a process reports about itself: liveness by heartbeats, readiness by a flag.

    ``clock`` (monotonic seconds) is injectable, so a test can let time pass without waiting.
    """

    def __init__(
        self, component: str, *, stall_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.component = component
        self.stall_s = stall_s
        self._clock = clock
        self._beats: dict[str, float] = {}
        self._ready = False
        self._reason = "starting"
        self._lock = threading.Lock()

    def beat(self, loop: str) -> None:
        """Loop ``loop`` is alive (call it at least every ``stall_s`` seconds)."""
        with self._lock:
            self._beats[loop] = self._clock()

    def forget(self, loop: str) -> None:
        """Loop ``loop`` ended on purpose (stopping): no longer counted."""
        with self._lock:
            self._beats.pop(loop, None)

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self._ready, self._reason = ready, reason or ("ready" if ready else "not ready")

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            ages = {loop: round(now - at, 1) for loop, at in self._beats.items()}
        stalled = sorted(loop for loop, age in ages.items() if age > self.stall_s)
        return not stalled, {"component": self.component, "loops_age_s": ages, "stalled": stalled}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        live, detail = self.liveness()
        with self._lock:
            ready, reason = self._ready, self._reason
        if ready and not live:
            reason = f"loops stalled: {', '.join(detail['stalled'])}"
        return ready and live, {"component": self.component, "reason": reason}


class HealthServer:
    """Serves ``/metrics``, ``/livez`` and ``/readyz`` of one :class:`Health` on a port."""

    def __init__(
        self,
        health: Health,
        port: int,
        host: str = "127.0.0.1",
        routes: Mapping[str, PostHandler] | None = None,
    ) -> None:
        self.health = health
        self.host, self.port = host, port
        self.routes: Mapping[str, PostHandler] = routes if routes is not None else {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        health = self.health
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                handler = routes.get(self.path.split("?", 1)[0])
                if handler is None:
                    self._send(404, b'{"error": "not found"}', "application/json")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_POST_BYTES:
                    self._send(413, b'{"error": "body too large"}', "application/json")
                    return
                try:
                    status, body = handler(self.rfile.read(length))
                except Exception as exc:
                    log.exception("ops_route_failed", path=self.path)
                    status, body = 500, json.dumps({"error": repr(exc)}).encode()
                self._send(status, body, "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in ("/livez", "/readyz"):
                    ok, detail = health.liveness() if path == "/livez" else health.readiness()
                    self._send(200 if ok else 503, json.dumps(detail).encode(), "application/json")
                else:
                    self._send(
                        404,
                        b'{"error": "not found: try /metrics, /livez, /readyz"}',
                        "application/json",
                    )

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]  # when asked for port 0
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"health-{health.component}", daemon=True
        )
        self._thread.start()
        log.info("health_server_started", component=health.component, port=self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
