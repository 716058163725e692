"""Loopback ports: is one free, who holds it, wait for one to open."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from chatbus.errors import ConfigurationError

HOST = "127.0.0.1"

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def is_free(port: int, host: str = HOST) -> bool:
    """True when a server could bind ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def is_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets bound to local ``port``: the listening ones when there are any."""
    listening: set[str] = set()
    other: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[9] != "0":
                (listening if cols[3] == _LISTEN else other).add(cols[9])
    return listening or other


def holder(port: int) -> tuple[int, str] | None:
    """(pid, program name) of a process holding a socket on ``port``, when it can be found."""
    inodes = {f"socket:[{inode}]" for inode in _socket_inodes(port)}
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if str(fd.readlink()) in inodes:
                    return int(proc.name), (proc / "comm").read_text().strip()
            except OSError:
                continue
    return None


def ensure_free(port: int, setting: str, host: str = HOST) -> None:
    """Raise ConfigurationError naming the port and the env var ``setting`` when it is taken."""
    if is_free(port, host):
        return
    who = holder(port)
    by = f" (by pid {who[0]} '{who[1]}')" if who else ""
    raise ConfigurationError(
        f"port {port} is already in use{by}; stop that process or set {setting} to a free port"
    )


def wait_open(port: int, deadline: float, host: str = HOST) -> bool:
    """Poll until ``host:port`` accepts connections or the monotonic ``deadline`` passes."""
    while True:
        if is_open(port, host, timeout=0.5):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # poll interval of the deadline loop


def free_port(host: str = HOST) -> int:
    """A port the OS considers free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
