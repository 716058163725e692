"""One view of every component: the local services, the supervisor and each replica's probes."""

from __future__ import annotations

from typing import Any

from chatbus.cli.ops.probes import probe
from chatbus.settings import Settings


def collect_status(settings: Settings) -> dict[str, Any]:
    """Rows of (name, kind, healthy, detail); ``healthy`` overall when every row is."""
    from infra.local import manager, process, supervisor

    rows: list[dict[str, Any]] = []
    for service in manager.select(settings, None):  # healthy when it answers, whoever started it
        pid = process.running_pid(settings, service.name)
        try:
            detail, healthy = service.check(settings, timeout=2.0), True
        except Exception as exc:  # noqa: BLE001 - a failed probe is a status, not an error
            detail, healthy = f"unreachable: {type(exc).__name__}: {exc}", False
        rows.append(
            {
                "name": service.name,
                "kind": "service",
                "healthy": healthy,
                "pid": pid,
                "detail": detail + ("" if pid else " (not started by this checkout)"),
            }
        )
    pid = process.running_pid(settings, "supervisor")
    rows.append(
        {
            "name": "supervisor",
            "kind": "process",
            "healthy": pid is not None,
            "pid": pid,
            "detail": f"pid {pid}" if pid else "not running (make run / chatbus pipeline up)",
        }
    )
    if pid is not None:
        desired = supervisor.read_desired(settings)
        for name, row in sorted(supervisor.read_status(settings).items()):
            if row.get("state") == "stopped":
                continue  # retired on purpose (scaled down or drained)
            port = int(row["port"])  # type: ignore[call-overload]
            ready = probe("127.0.0.1", port, "/readyz")
            live = probe("127.0.0.1", port, "/livez")
            state = row.get("state")
            detail = (
                f"{state}, pid {row.get('pid')}, port {port}, restarts {row.get('restarts')}"
                f", live: {live.detail if live.status else 'no answer'}"
                f", ready: {ready.detail}"
                + (f", model {row['model_path']}" if row.get("model_path") else "")
                + (f", {row['threads']} thread(s)" if row.get("threads") else "")
            )
            rows.append(
                {
                    "name": name,
                    "kind": "replica",
                    "healthy": state == "running" and ready.ok and live.ok,
                    "pid": row.get("pid"),
                    "port": port,
                    "state": state,
                    "restarts": row.get("restarts"),
                    "ready": ready.ok,
                    "live": live.ok,
                    "model_path": row.get("model_path"),
                    "threads": row.get("threads"),
                    "detail": detail,
                }
            )
        for component, count in sorted(desired.replicas.items()):
            have = sum(
                1
                for r in rows
                if r["kind"] == "replica"
                and supervisor.component_of(r["name"]) == component
                and r.get("state") == "running"
            )
            if have < count:
                rows.append(
                    {
                        "name": component,
                        "kind": "desired",
                        "healthy": False,
                        "detail": f"{have}/{count} replicas running",
                    }
                )
    return {"healthy": all(r["healthy"] for r in rows), "components": rows}
