"""The private PostgreSQL cluster the outbox tests run on (mailbridge.testing.realpostgres)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from mailbridge.testing import realpostgres
from mailbridge.testing.realpostgres import RealPostgres, postgres_availability

from .conftest import require

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (extra 'postgres')")


def _postgres_processes(data_dir: Path) -> dict[int, int]:
    """Live processes (pid -> uid) whose command line names data_dir (the postmaster)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = next(int(line.split()[1]) for line in status.splitlines() if line[:4] == "Uid:")
        if str(data_dir).encode() in command.split(b"\0"):
            found[int(pid)] = uid
    return found


def test_cluster_is_private_on_loopback(postgres_server: RealPostgres) -> None:
    assert postgres_server.port not in (0, 5432)
    with psycopg.connect(postgres_server.url(), autocommit=True) as connection:
        settings = dict(
            connection.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'port', 'unix_socket_directories', 'fsync', 'data_directory')"
            ).fetchall()
        )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == str(postgres_server.port)
    assert settings["unix_socket_directories"] == str(postgres_server.socket_dir)
    assert settings["fsync"] == "off"
    assert settings["data_directory"] == str(postgres_server.data_dir)
    assert list((postgres_server.socket_dir).glob(f".s.PGSQL.{postgres_server.port}"))
    uids = set(_postgres_processes(postgres_server.data_dir).values())
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert uids == {expected}  # never root: PostgreSQL refuses it


def test_each_test_gets_an_empty_database_of_its_own(
    postgres_server: RealPostgres, postgres_url: str
) -> None:
    other = postgres_server.create_database()
    try:
        with psycopg.connect(postgres_server.url(other), autocommit=True) as connection:
            connection.execute("CREATE TABLE rows_of_another_test (n int)")
            connection.execute("INSERT INTO rows_of_another_test VALUES (1)")
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
            database = connection.execute("SELECT current_database()").fetchone()
        assert tables == (0,)
        assert database is not None and database[0] not in (other, "postgres")
    finally:
        postgres_server.drop_database(other)


def test_drop_database_ends_sessions_still_connected(postgres_server: RealPostgres) -> None:
    name = postgres_server.create_database()
    connection = psycopg.connect(postgres_server.url(name), autocommit=True)
    try:
        postgres_server.drop_database(name)
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")
    finally:
        connection.close()
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        assert found.fetchall() == []


@pytest.mark.parametrize("name", ['x"; DROP DATABASE postgres; --', "Upper", "", "a" * 64, "1st"])
def test_database_names_are_plain_identifiers(postgres_server: RealPostgres, name: str) -> None:
    with pytest.raises(ValueError, match="database name"):
        postgres_server.create_database(name)


def test_stop_ends_every_process_and_restart_keeps_port_and_data(server_dir: Path) -> None:
    tmp_path = server_dir
    require(postgres_availability(), "PostgreSQL")
    server = RealPostgres(tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    with server:
        port = server.port
        with psycopg.connect(server.url(), autocommit=True) as connection:
            # The cluster commits asynchronously; an immediate stop loses what is not flushed.
            connection.execute("SET synchronous_commit = on")
            connection.execute("CREATE TABLE kept (n int)")
            connection.execute("INSERT INTO kept VALUES (42)")
        assert _postgres_processes(server.data_dir)
    assert _postgres_processes(server.data_dir) == {}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url(), connect_timeout=2)
    with server:  # immediate stop is a crash for PostgreSQL: it recovers on start
        assert server.port == port
        with psycopg.connect(server.url(), autocommit=True) as connection:
            assert connection.execute("SELECT n FROM kept").fetchall() == [(42,)]
    assert _postgres_processes(server.data_dir) == {}


def test_missing_binaries_skip_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realpostgres, "postgres_bindir", lambda: None)
    available, reason = postgres_availability()
    assert not available
    assert "install Debian's postgresql package" in reason
    with pytest.raises(realpostgres.RealServerError, match="binaries not found"):
        RealPostgres(Path("/nonexistent")).start()
