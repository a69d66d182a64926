"""A private PostgreSQL cluster on loopback, for integration tests and benchmarks.

The cluster (data, Unix socket, log) lives in one directory and listens on 127.0.0.1 on a free
port: it never touches port 5432 or the system's own clusters.  ``initdb`` and ``postgres`` refuse
to run as root, so as root they run as the ``postgres`` user (Debian's package creates it);
otherwise as the invoking user.  Durability is off (``fsync``, ``synchronous_commit``,
``full_page_writes``): the cluster is for tests, and tests that kill *clients* are unaffected;
``stop()`` is immediate, so commits of the last few hundred milliseconds may be lost with it.

Each test gets a database of its own from :meth:`RealPostgres.create_database`, so tests never see
each other's rows.  The SQL part needs psycopg 3 (``pip install 'mailbridge-documents[postgres]'``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mailbridge.testing._realprocess import StartStop
from mailbridge.testing._realprocess import free_ports as _free_ports
from mailbridge.testing._realprocess import read_tail as _read_tail
from mailbridge.testing._realprocess import wait_until as _wait_until
from mailbridge.testing.realservers import RealServerError, _make_traversable, _which

__all__ = ["RealPostgres", "postgres_availability", "postgres_bindir"]

_SERVER_USER = "postgres"
_SUPERUSER = "mailbridge"
_BINARIES = ("initdb", "pg_ctl", "postgres")
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_bindir() -> Path | None:
    """The directory with initdb, pg_ctl and postgres: on PATH, else Debian's newest major."""
    on_path = _which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    majors = sorted(
        (path for path in _DEBIAN_ROOT.glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
        reverse=True,
    )
    return next((path for path in majors if all((path / b).exists() for b in _BINARIES)), None)


def postgres_availability() -> tuple[bool, str]:
    """(True, "") when a private cluster can run here; else (False, the reason)."""
    bindir = postgres_bindir()
    if bindir is None or not all((bindir / name).exists() for name in _BINARIES):
        return False, (
            "PostgreSQL server binaries not found (initdb, pg_ctl, postgres on PATH or in "
            f"{_DEBIAN_ROOT}/<major>/bin); install Debian's postgresql package"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_SERVER_USER)
        except KeyError:
            return False, f"PostgreSQL refuses root and there is no {_SERVER_USER!r} user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False, "psycopg 3 is not installed: pip install 'mailbridge-documents[postgres]'"
    return True, ""


class RealPostgres(StartStop):
    """A PostgreSQL cluster on 127.0.0.1, created and kept entirely in ``directory``.

    ``port`` is chosen by the first start(); the superuser ``user`` logs in without a password
    (``trust``), over TCP or the Unix socket in ``socket_dir``.
    """

    host = "127.0.0.1"
    user = _SUPERUSER

    def __init__(self, directory: Path, *, settings: Sequence[str] = ()) -> None:
        self.directory = Path(directory).resolve()
        self.port = 0
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "run"
        self.log_file = self.directory / "postgres.log"
        self._settings = tuple(settings)
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` as the superuser over TCP."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster if needed (initdb) and start it; stops a leftover server first."""
        available, reason = postgres_availability()
        if not available:
            raise RealServerError(reason)
        self.stop()
        try:
            self._prepare()
            if not (self.data_dir / "PG_VERSION").exists():
                self._run(
                    "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", self.user,
                    "-E", "UTF8", "--locale=C", "--no-sync",
                )  # fmt: skip
            for attempt in range(3):  # another process may take the free port before us
                if not self.port or attempt:
                    self.port = _free_ports(1)[0]
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
                              "-o", self._server_options(), "-w", "-t", "30", "start")  # fmt: skip
                    break
                except RealServerError:
                    if attempt == 2 or "could not bind" not in self.log_tail():
                        raise
        except (OSError, subprocess.SubprocessError, RealServerError) as exc:
            self.stop()
            raise RealServerError(f"PostgreSQL failed to start: {exc}\n{self.log_tail()}") from exc

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl -m immediate``); wait until it is gone."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(RealServerError, OSError, subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        if self._alive(pid):  # pg_ctl failed: the postmaster takes its children along on SIGQUIT
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            if not _wait_until(lambda: not self._alive(pid), 10.0):
                raise RealServerError(f"the PostgreSQL postmaster {pid} survived SIGQUIT")

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """Create an empty database (a copy of ``template``) and return its name."""
        name = name if name is not None else f"test_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{_checked(name)}" TEMPLATE "{_checked(template)}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log."""
        return f"--- postgres.log ---\n{_read_tail(self.log_file, lines)}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            connection.execute(statement.encode())

    def _server_options(self) -> str:
        settings = [
            f"listen_addresses={self.host}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
            *self._settings,
        ]
        options = [f"-p {self.port}", f"-k {self.socket_dir}", *(f"-c {s}" for s in settings)]
        return " ".join(options)

    def _prepare(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_USER)
            _make_traversable(self.directory)
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self._alive(pid) else None

    def _alive(self, pid: int) -> bool:
        """Whether pid is a live postgres process of this cluster's data directory."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return state != "Z" and str(self.data_dir).encode() in command

    def _run(self, program: str, *args: str) -> None:
        bindir = postgres_bindir()
        command = [str(bindir / program) if bindir else program, *args]
        if os.geteuid() == 0:
            command = [_which("runuser") or "runuser", "-u", _SERVER_USER, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
        # A file, not a pipe: the server inherits descriptors and keeps them open.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(  # noqa: S603 (fixed programs, our own arguments)
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=60,
                env=env,
                cwd=self.directory,
                check=False,
            )
            output.seek(0)
            text = output.read().decode("utf-8", "replace").strip()
        if result.returncode != 0:
            raise RealServerError(f"{program} failed ({result.returncode}): {text[-2000:]}")


def _checked(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"not a plain lower-case database name: {name!r}")
    return name
