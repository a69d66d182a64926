"""A real Redis server (Debian's ``redis-server``) on loopback, e.g. as Celery's broker in tests.

Nothing is persisted (no RDB snapshots, no append-only file); the working directory, the log
and the process all belong to one directory and one instance. Runs without root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from mailbridge.testing._realprocess import (
    RealServerError,
    StartStop,
    free_ports,
    read_tail,
    terminate_session,
    wait_until,
)

__all__ = ["RealRedisServer", "redis_availability"]

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
_START_ATTEMPTS = 3  # a free port can be taken by someone else before Redis binds it
_START_TIMEOUT = 10.0


def _redis_binary() -> str | None:
    return shutil.which(
        "redis-server", path=os.pathsep.join([os.environ.get("PATH", ""), _SYSTEM_PATH])
    )


def redis_availability() -> tuple[bool, str]:
    """(True, "") when Debian's ``redis-server`` is installed; else (False, reason)."""
    if _redis_binary() is None:
        return False, "redis-server not installed; install the Debian package redis-server"
    return True, ""


class RealRedisServer(StartStop):
    """``redis-server`` on 127.0.0.1 and a free port, with its log in ``directory``.

    ``url`` (``redis://127.0.0.1:PORT/0``) is set by start(); stop() ends the process (SIGTERM,
    then SIGKILL after 5 s). Use it as a context manager.
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.port = 0
        self.log_file = self.directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Redis URL of database 0 (``redis://127.0.0.1:PORT/0``)."""
        return self.database_url(0)

    def database_url(self, database: int) -> str:
        """The Redis URL of one numbered database (0-15) of this server."""
        if not self.port:
            raise RealServerError("the Redis server is not started")
        return f"redis://{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """Start redis-server on a free loopback port; return once it answers PING."""
        available, reason = redis_availability()
        if not available:
            raise RealServerError(reason)
        self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(_START_ATTEMPTS):
            self.port = free_ports(1)[0]
            self._process = self._spawn()
            wait_until(self._answered_or_exited, _START_TIMEOUT, interval=0.02)
            if self._process.poll() is None and self.ping():
                return
            self.stop()
        raise RealServerError(f"redis-server did not answer PING\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and wait until its process is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            terminate_session(process.pid)
        finally:
            process.wait(timeout=5)

    def ping(self) -> bool:
        """Whether the server answers PING right now."""
        try:
            return self._command(b"PING", timeout=0.5) == b"+PONG"
        except OSError:
            return False

    def flush(self) -> None:
        """Delete every key of every database (a clean broker for the next test)."""
        reply = self._command(b"FLUSHALL")
        if reply != b"+OK":
            raise RealServerError(f"FLUSHALL answered {reply!r}")

    def _command(self, command: bytes, timeout: float = 5.0) -> bytes:
        """Send one inline command; its one-line reply without the line end."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(command + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") and len(reply) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the Redis log."""
        return f"--- redis.log ---\n{read_tail(self.log_file, lines)}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        # No RDB or AOF: nothing to persist, and no fork for background saves.
        command = [
            _redis_binary() or "redis-server",
            "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.directory), "--logfile", str(self.log_file),
        ]  # fmt: skip
        with self.log_file.open("ab") as log:
            return subprocess.Popen(  # noqa: S603 (a fixed program, our own arguments)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _answered_or_exited(self) -> bool:
        # An exit (e.g. the port was taken meanwhile) ends the wait at once.
        return (self._process is not None and self._process.poll() is not None) or self.ping()
