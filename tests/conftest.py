"""Shared fixtures: fake servers in-process, the real Postfix + Dovecot pair for marked tests."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import pkgutil
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailbridge
from mailbridge import ImapSettings, SmtpSettings
from mailbridge.testing.pytest_plugin import FAKE_PASSWORD, FAKE_USER
from mailbridge.testing.realpostgres import RealPostgres, postgres_availability
from mailbridge.testing.realservers import (
    RealMailServers,
    RealRedisServer,
    availability,
    redis_availability,
)

# Load every module now. The packages import lazily, and pytester's in-process runs
# (test_docs, test_plugin) restore sys.modules afterwards: a module first imported
# inside such a run would be dropped and imported again later, a second copy whose
# classes fail isinstance() against the first.
# mailbridge.outbox.celery needs the celery extra; its tests skip without it.
_SKIPPED = {"mailbridge.__main__"} | (
    set() if importlib.util.find_spec("celery") else {"mailbridge.outbox.celery"}
)
for _module in pkgutil.walk_packages(mailbridge.__path__, "mailbridge."):
    if _module.name not in _SKIPPED:
        importlib.import_module(_module.name)

# The plugin's smtp_server fixture logs in with these (checked never to leak).
USER, PASSWORD = FAKE_USER, FAKE_PASSWORD
ALICE, ALICE_PASSWORD = "alice@example.test", "alice-Secret-1"  # a user of the real servers
CARLA, CARLA_PASSWORD = "carla@example.test", "pässwörd€"  # a non-ASCII password (RFC 6855)


def alice_smtp(servers: RealMailServers, **changes: object) -> SmtpSettings:
    """Submission (STARTTLS + AUTH) to the real Postfix as alice."""
    return SmtpSettings(
        servers.host, servers.submission_port, "starttls", username=ALICE,
        password=ALICE_PASSWORD, ca_file=servers.ca_file, **changes,  # type: ignore[arg-type]
    )  # fmt: skip


def alice_imap(servers: RealMailServers) -> ImapSettings:
    """IMAP over implicit TLS to the real Dovecot as alice."""
    return ImapSettings(
        servers.host, servers.imaps_port, "implicit_tls", username=ALICE,
        password=ALICE_PASSWORD, ca_file=servers.ca_file,
    )  # fmt: skip


# A minimal, valid one-page PDF, as an invoicing application would attach.
INVOICE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@pytest.fixture(autouse=True)
def _quiet_aiosmtpd() -> None:
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)


@pytest.fixture
def invoice_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "Invoice 2026-001.pdf"
    path.write_bytes(INVOICE_PDF)
    return path


def require(check: tuple[bool, str], what: str) -> None:
    """Skip (with the reason) when a real peer cannot run here; under CI, fail instead."""
    available, reason = check
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the {what} tests, but: {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def outside_basetemp(prefix: str) -> Iterator[Path]:
    """A fresh directory in the system's temp dir, removed afterwards.

    Real servers run as other users (postgres, dovecot's vmail) and need to traverse
    the path to their files. Under pytest's basetemp they may not: every pytest that
    starts on the machine, including the ones tests run as subprocesses, resets
    /tmp/pytest-of-<user> to mode 0700.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A directory for a real server started by one test (see `outside_basetemp`)."""
    with outside_basetemp("mailbridge-test-server-") as directory:
        yield directory


@pytest.fixture(scope="session")
def real_servers() -> Iterator[RealMailServers]:
    """Postfix + Dovecot on loopback, shared by the tests of a session (mailboxes cleared)."""
    require(availability(), "real-server")
    # Not under pytest's basetemp: another pytest run on the machine may rotate it away.
    directory = Path(tempfile.mkdtemp(prefix="mailbridge-realservers-"))
    try:
        with RealMailServers(
            directory,
            users={
                ALICE: ALICE_PASSWORD,
                "bob@example.test": "bob-Secret-2",
                CARLA: CARLA_PASSWORD,
            },
        ) as servers:
            yield servers
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def mta(real_servers: RealMailServers) -> RealMailServers:
    real_servers.clear_mailboxes()
    return real_servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RealPostgres]:
    """A private PostgreSQL cluster on loopback, shared by the tests of a session."""
    require(postgres_availability(), "PostgreSQL")
    directory = Path(tempfile.mkdtemp(prefix="mailbridge-postgres-"))
    try:
        with RealPostgres(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: RealPostgres) -> Iterator[str]:
    """The URL of a new, empty database of its own for this test (dropped afterwards)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RealRedisServer]:
    """Debian's redis-server on a free loopback port (Celery's broker), one per session."""
    require(redis_availability(), "Redis")
    with outside_basetemp("mailbridge-redis-") as directory, RealRedisServer(directory) as server:
        yield server
