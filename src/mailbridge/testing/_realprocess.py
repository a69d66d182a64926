"""What the real-server harnesses share: the error, free ports, polling, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "RealServerError",
    "StartStop",
    "free_ports",
    "read_tail",
    "session_members",
    "terminate_session",
    "wait_until",
]


class RealServerError(RuntimeError):
    """A real server (Postfix, Dovecot, Redis, Celery workers) failed to start, stop or deliver."""


class StartStop:
    """`with server:` starts it and stops it again, whatever happened inside."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def free_ports(count: int) -> list[int]:
    """Distinct ports that are free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll condition until it is true (returns True) or timeout seconds pass (returns False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def read_tail(path: Path, lines: int) -> str:
    """The last lines of a log file, or "(no log)"."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - 300 * lines - 4096))
            text = file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes in session sid."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def terminate_session(sid: int, grace: float = 5.0) -> None:
    """Stop a session leader with SIGTERM; after ``grace`` seconds SIGKILL all of its session."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        members = session_members(sid)
        if not members:
            return
        for pid in [sid] if sig == signal.SIGTERM and sid in members else members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        wait_until(lambda: not session_members(sid), wait)
    if session_members(sid):
        raise RealServerError(f"processes of session {sid} survived SIGKILL")
