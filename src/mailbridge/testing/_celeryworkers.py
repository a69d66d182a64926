"""Real ``celery worker`` processes for one application module, started and stopped by a test.

Each worker runs ``python -m celery -A APP worker -P prefork`` with this interpreter, in a session
of its own (so that it and its pool processes can be killed together), its output in a log file
in ``directory`` (one file per start, kept for the failure report). Needs the ``celery`` extra.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mailbridge.testing._realprocess import (
    RealServerError,
    StartStop,
    read_tail,
    session_members,
    wait_until,
)

__all__ = ["CeleryWorkers"]

# Gossip, mingle and heartbeats talk between workers: slower start-up, nothing a test needs.
_QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")


class CeleryWorkers(StartStop):
    """``count`` real Celery worker processes of the app ``app`` (``-A`` syntax).

    start() starts them all and returns once each logged "ready"; kill(index) kills one worker
    with its pool at once (SIGKILL: worker loss); start_worker(index) starts it again; stop()
    asks each for a warm shutdown (SIGTERM) and kills what is left after ``stop_timeout``
    seconds. ``env`` is added to this process's environment (e.g. PYTHONPATH, a broker URL).
    """

    def __init__(
        self,
        app: str,
        directory: Path,
        *,
        count: int = 2,
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
        arguments: Sequence[str] = (),
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if count < 1 or concurrency < 1:
            raise ValueError("count and concurrency must be at least 1")
        self.app = app
        self.directory = Path(directory).resolve()
        self.count = count
        self.concurrency = concurrency
        self.env = dict(env or {})
        self.arguments = tuple(arguments)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.log_files: list[list[Path]] = [[] for _ in range(count)]
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self._starting: set[int] = set()  # started, not yet seen ready

    def start(self) -> None:
        """Start every worker that is not running; return once all are ready."""
        try:
            for index in range(self.count):
                self._spawn(index)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def start_worker(self, index: int, *, wait: bool = True) -> None:
        """Start worker ``index`` (again) if it is not running; with ``wait``, return once it
        is ready (else see wait_ready)."""
        self._spawn(index)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Return once every worker started so far logged "ready" (RealServerError if not)."""
        while self._starting:
            self._wait_ready(min(self._starting))
            self._starting.discard(min(self._starting))

    def running(self, index: int) -> bool:
        """Whether worker ``index``'s main process is alive."""
        process = self._processes[index]
        return process is not None and process.poll() is None

    def pid(self, index: int) -> int:
        """The main process id of worker ``index`` (RealServerError when it is not running)."""
        process = self._processes[index]
        if process is None or process.poll() is not None:
            raise RealServerError(f"celery worker {index} is not running")
        return process.pid

    def pool_pids(self, index: int) -> list[int]:
        """The process ids of worker ``index``'s pool (prefork children), main process excluded."""
        pid = self.pid(index)
        return sorted(member for member in session_members(pid) if member != pid)

    def kill(self, index: int) -> None:
        """Kill worker ``index`` and its pool with SIGKILL and reap it (a lost worker)."""
        process = self._processes[index]
        if process is None:
            return
        for member in session_members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        process.wait(timeout=5)
        wait_until(lambda: not session_members(process.pid), 5.0)
        self._processes[index] = None
        self._starting.discard(index)

    def stop_worker(self, index: int) -> None:
        """Warm shutdown of worker ``index`` (SIGTERM), SIGKILL after ``stop_timeout`` s."""
        self._stop([index])

    def stop(self) -> None:
        """Stop every worker at once (see stop_worker); all are gone when this returns."""
        self._stop(range(self.count))

    def _stop(self, indexes: Iterable[int]) -> None:
        processes = []
        for index in indexes:
            processes.append(self._processes[index])
            self._processes[index] = None
            self._starting.discard(index)
        pids = [process.pid for process in processes if process is not None]
        for pid in pids:  # all at once: a warm shutdown takes Celery a second or two
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        ended = wait_until(lambda: not any(map(session_members, pids)), self.stop_timeout, 0.05)
        if not ended:
            for member in (member for pid in pids for member in session_members(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
        for process in processes:
            if process is not None:
                process.wait(timeout=5)
        if not wait_until(lambda: not any(map(session_members, pids)), 5.0, 0.05):
            raise RealServerError(f"celery worker processes survived SIGKILL: {pids}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of each worker's latest log."""
        return "\n".join(
            f"--- {logs[-1].name} ---\n{read_tail(logs[-1], lines)}"
            for logs in self.log_files
            if logs
        )

    def _spawn(self, index: int) -> None:
        if self.running(index):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        log_file = self.directory / f"worker{index}.{len(self.log_files[index])}.log"
        self.log_files[index].append(log_file)
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "-c", str(self.concurrency), "-P", "prefork", "-n", f"w{index}.{os.getpid()}@%h",
            "--loglevel", "INFO", *_QUIET, *self.arguments,
        ]  # fmt: skip
        with log_file.open("wb") as log:
            self._processes[index] = subprocess.Popen(  # noqa: S603 (our interpreter and arguments)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.directory,
                start_new_session=True,
            )
        self._starting.add(index)

    def _wait_ready(self, index: int) -> None:
        log_file = self.log_files[index][-1]
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if " ready." in log_file.read_text(encoding="utf-8", errors="replace"):
                return
            if not self.running(index):
                break
            time.sleep(0.05)
        raise RealServerError(
            f"celery worker {index} was not ready within {self.ready_timeout} s\n"
            f"--- {log_file.name} ---\n{read_tail(log_file, 40)}"
        )
