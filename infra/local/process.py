"""Background processes with PID files: spawn, find, stop.

Generic and public: the local services use it, and so can any pipeline component that should run in
the background (an inference worker, the gateway). Each process ``name`` owns three files:

* ``run_dir/<name>.pid``       its PID (plain text, written last, atomically)
* ``run_dir/<name>.json``      what was started: argv, the kernel start time, the log file
* ``log_dir/<name>.log``       its stdout and stderr (appended)

A PID file is trusted only while the process is alive, is not a zombie, started at the recorded
time (``/proc/<pid>/stat`` field 22) and its ``/proc/<pid>/cmdline`` still names the program we
started, so a reused PID is never mistaken for ours. Processes run in their own session (process
group), so they outlive the caller and ``stop`` can signal the whole group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings

log = structlog.get_logger(__name__)

# Popen objects of the children this process started: kept so they are reaped (no zombies, no
# ResourceWarning) while this process lives; the children do not depend on it.
_children: dict[int, subprocess.Popen[bytes]] = {}
# exit statuses of reaped children (negative: killed by that signal), for supervisors
_exit_codes: dict[int, int] = {}


def exit_code(pid: int) -> int | None:
    """How a child this process started ended (None: still running, or not our child)."""
    is_alive(pid)
    return _exit_codes.get(pid)


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def meta_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.json"


def log_file(settings: Settings, name: str) -> Path:
    return settings.log_dir / f"{name}.log"


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid process name {name!r}")


# --- /proc ------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # field 2 (comm) is in parentheses and may hold spaces or parentheses itself
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The kernel start time of a process (clock ticks since boot), None when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie child is reaped here)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        _exit_codes[pid] = child.returncode
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        # gone from /proc or a zombie: reap it (our child's exit status is kept); a child still
        # tearing down its threads is not gone yet
        return not _reap(pid)
    return True


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields[2] is the process group (stat field 5)
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _reap(pid: int) -> bool:
    """Reap a zombie; False only for our child whose last threads are still exiting."""
    child = _children.pop(pid, None)
    try:
        if child is not None:
            # a multi-threaded leader shows as a zombie before its last thread is gone, and
            # cannot be waited for until then: wait a moment to learn its exit status
            try:
                _exit_codes[pid] = child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                _children[pid] = child
                return False
        else:
            os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def _matches(pid: int, meta: Mapping[str, object]) -> bool:
    """True when ``pid`` is still the process described by ``meta``."""
    if not is_alive(pid):
        return False
    ticks = meta.get("start_ticks")
    if ticks is not None and start_ticks(pid) != ticks:
        return False
    argv = meta.get("argv")
    if not isinstance(argv, list) or not argv:
        return False
    # programs may rewrite their title (redis-server does) or be scripts run by an interpreter,
    # so the program's file name must appear in the command line rather than the argv verbatim
    program = Path(str(argv[0])).name
    return program in " ".join(cmdline(pid))


# --- PID files --------------------------------------------------------------------------------


def _read_meta(settings: Settings, name: str) -> tuple[int, dict[str, object]] | None:
    try:
        pid = int(pid_file(settings, name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        meta = json.loads(meta_file(settings, name).read_text())
    except (FileNotFoundError, ValueError):
        meta = {}
    return pid, meta


def _remove_files(settings: Settings, name: str) -> None:
    for path in (pid_file(settings, name), meta_file(settings, name)):
        path.unlink(missing_ok=True)


def running_pid(settings: Settings, name: str) -> int | None:
    """The PID of our running process ``name``, or None; a stale PID file is removed."""
    _check_name(name)
    found = _read_meta(settings, name)
    if found is None:
        if meta_file(settings, name).exists():
            meta_file(settings, name).unlink(missing_ok=True)
        return None
    pid, meta = found
    if _matches(pid, meta):
        return pid
    log.info("stale pid file removed", process=name, pid=pid)
    _remove_files(settings, name)
    return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _await_exec(proc: subprocess.Popen[bytes], program: str, timeout_s: float = 5.0) -> None:
    """Wait until the child has exec'd ``program`` (before that its command line is ours)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if program in " ".join(cmdline(proc.pid)):
            return
        time.sleep(0.005)  # poll interval of the deadline loop


def spawn(
    settings: Settings,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` in the background as process ``name`` and return its PID.

    The process gets its own session (it outlives the caller and its terminal), stdin from /dev/null
    and stdout/stderr appended to ``log_dir/<name>.log``. ``env`` is added to this process's
    environment; ``user`` runs it as that system user (and its group; root only). Raises
    ConfigurationError when ``name`` is already running.
    """
    _check_name(name)
    if not argv:
        raise ValueError("argv is empty")
    existing = running_pid(settings, name)
    if existing is not None:
        raise ConfigurationError(
            f"{name} is already running (pid {existing}); stop it first "
            f"(pid file {pid_file(settings, name)})"
        )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    logpath = log_file(settings, name).resolve()
    full_env = {**os.environ, **(env or {})}
    argv = [str(a) for a in argv]
    with open(logpath, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {argv}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(cwd) if cwd is not None else None,
                start_new_session=True,
                close_fds=True,
                user=user,
                group=_primary_group(user) if user else None,
                extra_groups=[] if user else None,
            )
        except FileNotFoundError as exc:
            raise ConfigurationError(f"cannot start {name}: {argv[0]} not found") from exc
    _children[proc.pid] = proc
    _await_exec(proc, Path(argv[0]).name)
    meta = {
        "name": name,
        "pid": proc.pid,
        "argv": argv,
        "start_ticks": start_ticks(proc.pid),
        "log": str(logpath),
        "started_at": time.time(),
    }
    _write_atomic(meta_file(settings, name), json.dumps(meta, indent=1))
    _write_atomic(pid_file(settings, name), f"{proc.pid}\n")
    log.info("process started", process=name, pid=proc.pid, log=str(logpath))
    return proc.pid


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def _wait_gone(pids: Sequence[int], deadline: float) -> list[int]:
    """Wait until none of ``pids`` is alive or the deadline passes; return those still alive."""
    remaining = [p for p in pids if is_alive(p)]
    while remaining and time.monotonic() < deadline:
        child = _children.get(remaining[0])
        if child is not None:
            try:
                child.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(0.05)  # poll interval of the deadline loop
        remaining = [p for p in remaining if is_alive(p)]
    return remaining


def _signal_group(pgid: int, pids: Sequence[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def stop(settings: Settings, name: str, timeout: float = 10.0) -> bool:
    """Stop our process ``name``: SIGTERM its process group, wait up to ``timeout`` s, then SIGKILL.

    Removes its PID files. Returns True when a running process was stopped, False when none was
    running. Only the recorded, verified PID (and its process group) is ever signalled.
    """
    pid = running_pid(settings, name)
    if pid is None:
        _remove_files(settings, name)
        return False
    # spawn() made the process a session leader, so its process group id is its pid
    pgid = pid
    members = sorted(set(group_members(pgid)) | {pid})
    log.info("stopping process", process=name, pid=pid, group=members)
    _signal_group(pgid, members, signal.SIGTERM)
    left = _wait_gone(members, time.monotonic() + timeout)
    left = sorted(set(left) | set(group_members(pgid)))
    if left:
        log.warning("process did not stop in time, killing", process=name, pids=left)
        _signal_group(pgid, left, signal.SIGKILL)
        left = _wait_gone(left, time.monotonic() + 5.0)
    _remove_files(settings, name)
    if left:
        raise RuntimeError(f"{name}: processes {left} survived SIGKILL")
    return True


def send_signal(settings: Settings, name: str, sig: signal.Signals) -> int | None:
    """Signal our process ``name`` (its whole process group) without waiting; returns its PID, or
    None when it is not running. For callers that wait on their own terms (a supervisor)."""
    pid = running_pid(settings, name)
    if pid is None:
        return None
    _signal_group(pid, sorted(set(group_members(pid)) | {pid}), sig)
    return pid


def forget(settings: Settings, name: str) -> None:
    """Remove the files of a process that has ended."""
    _remove_files(settings, name)
