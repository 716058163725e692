"""``python -m infra.local up|down|status [service ...]`` (a thin wrapper for trying it out)."""

from __future__ import annotations

import argparse
import sys

from chatbus.errors import ChatbusError
from chatbus.logging import configure_logging
from chatbus.settings import get_settings
from infra.local import manager
from infra.local.service import ServiceStatus


def _table(rows: list[ServiceStatus]) -> str:
    lines = [f"{'service':<9} {'state':<10} {'pid':>7}  {'address':<24} detail"]
    for r in rows:
        state = "healthy" if r.healthy else ("unhealthy" if r.running else "stopped")
        pid = str(r.pid) if r.pid else "-"
        lines.append(f"{r.name:<9} {state:<10} {pid:>7}  {r.address:<24} {r.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(manager.SERVICES)}")
    args = parser.parse_args(argv)
    settings = get_settings()
    # progress lines go to stderr; structured logs only for warnings (or everything at DEBUG)
    level = "DEBUG" if settings.log_level.upper() == "DEBUG" else "WARNING"
    configure_logging(
        settings.replace(**{"log_level": level, "log_json": False}), component="infra"
    )
    chosen = args.services or None
    try:
        if args.action == "up":
            print(_table(manager.up(settings, chosen)))
        elif args.action == "down":
            stopped = manager.down(settings, chosen)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            rows = manager.status(settings, chosen)
            print(_table(rows))
            return 0 if all(r.healthy for r in rows) else 3
    except ChatbusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
