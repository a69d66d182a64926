"""The outbox's PostgreSQL store: what only a shared server adds to the store protocol.

Several connections stand for several worker processes or machines: claims never overlap,
leases expire into take-overs, pacing holds across them, enqueues wake idle workers at once,
and the schema can be created by many processes starting together.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailbridge import DeliveryClient, DocumentEmail
from mailbridge.cli import main
from mailbridge.errors import ConfigurationError, OutboxError
from mailbridge.outbox import Outbox
from mailbridge.outbox._open import open_store
from mailbridge.outbox._store import NewMessage, State, Store, TenantLimits
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.realpostgres import RealPostgres

pytest.importorskip("psycopg", reason="psycopg 3 is not installed (extra 'postgres')")


def new_message(
    tenant: str = "acme", *, key: str | None = None, limits: TenantLimits | None = None
) -> NewMessage:
    now = time.time()
    return NewMessage(
        id=uuid.uuid4().hex, tenant=tenant, idempotency_key=key,
        message_id=f"<{uuid.uuid4().hex}@example.test>", envelope_sender="billing@example.test",
        recipients=("jane@example.test",), bcc=(), smtputf8=False, mode="own_smtp", note=None,
        data=b"Subject: 100% ?\r\n\r\nliteral % and ? survive\r\n", created_at=now,
        not_before=now, deadline=now + 3600, limits=limits,
    )  # fmt: skip


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[Store]]:
    """Four stores on one database, as four worker processes would have."""
    opened = [open_store(postgres_url) for _ in range(4)]
    try:
        opened[0].migrate()
        yield opened
    finally:
        for store in opened:
            store.close()


def test_concurrent_claims_never_take_a_message_twice(stores: list[Store]) -> None:
    ids = {stores[0].enqueue(new_message(f"tenant{n % 7}"))[0] for n in range(200)}
    taken: list[list[str]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def drain(index: int) -> None:
        start.wait(10)
        for _ in range(200):  # bounded: 200 messages, at least one per round while any are left
            claimed = stores[index].claim(f"w{index}", limit=5, lease=60, now=time.time())
            if not claimed:
                return
            taken[index].extend(c.id for c in claimed)

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(drain, range(len(stores))))
    counts = Counter(id for ids_of_one in taken for id in ids_of_one)
    assert set(counts) == ids
    assert max(counts.values()) == 1
    assert sum(1 for one in taken if one) >= 2  # the claims really ran side by side


def test_a_dead_workers_lease_expires_into_a_take_over(stores: list[Store]) -> None:
    first, second = stores[:2]
    id, _ = first.enqueue(new_message())
    # the server's clock decides (not the `now` a worker passes): real time passes here
    [claimed] = first.claim("dead-worker", limit=10, lease=0.6, now=time.time())
    assert not claimed.recovering
    assert second.claim("w2", limit=10, lease=5, now=time.time()) == []  # lease still live
    time.sleep(0.8)
    [recovered] = second.claim("w2", limit=10, lease=5, now=time.time())
    assert (recovered.id, recovered.recovering, recovered.attempts) == (id, True, 1)
    # The dead worker's late record changes nothing; the new holder's counts.
    assert not first.finish(id, "dead-worker", State.SENT, now=time.time())
    assert second.finish(id, "w2", State.OUTCOME_UNKNOWN, now=time.time())
    row = first.get(id)
    assert row is not None and row.state is State.OUTCOME_UNKNOWN


def test_pacing_holds_across_workers(stores: list[Store]) -> None:
    limits = TenantLimits("Gmail", per_minute=7)
    for _ in range(30):
        stores[0].enqueue(new_message("paced", limits=limits))
    now = time.time()
    start = threading.Barrier(len(stores))

    def claim(index: int) -> int:
        start.wait(10)
        return sum(
            len(stores[index].claim(f"w{index}", limit=3, lease=60, now=now)) for _ in range(5)
        )

    with ThreadPoolExecutor(len(stores)) as pool:
        assert sum(pool.map(claim, range(len(stores)))) == 7
    waiting = stores[1].rows(tenant="paced", state=State.QUEUED, limit=100)
    assert len(waiting) == 23
    assert {row.wait_reason for row in waiting} <= {"waiting: Gmail per-minute limit", None}
    assert any(row.wait_reason for row in waiting)


def test_in_flight_limit_holds_across_workers(stores: list[Store]) -> None:
    limits = TenantLimits("Microsoft 365", in_flight=3)
    for _ in range(10):
        stores[0].enqueue(new_message("m365", limits=limits))
    now = time.time()
    held = [
        len(store.claim(f"w{n}", limit=10, lease=60, now=now)) for n, store in enumerate(stores)
    ]
    assert sum(held) == 3


def test_enqueue_wakes_an_idle_worker_in_another_process_at_once(stores: list[Store]) -> None:
    worker, application = stores[:2]
    worker.wait(5)  # the first wait starts listening and returns at once: look again
    timer = threading.Timer(0.2, lambda: application.enqueue(new_message()))
    started = time.monotonic()
    timer.start()
    try:
        worker.wait(10)
    finally:
        timer.join()
    assert 0.15 < time.monotonic() - started < 2.0


def test_an_idle_wait_is_bounded_by_its_timeout(stores: list[Store]) -> None:
    stores[0].wait(5)
    started = time.monotonic()
    stores[0].wait(0.3)
    assert 0.25 < time.monotonic() - started < 2.0


def test_close_wakes_a_waiting_worker(postgres_url: str) -> None:
    store = open_store(postgres_url)
    store.wait(5)
    timer = threading.Timer(0.2, store.close)
    started = time.monotonic()
    timer.start()
    try:
        store.wait(10)
    finally:
        timer.join()
    assert time.monotonic() - started < 2.0


def test_a_lost_server_does_not_break_waiting(
    tmp_path: object, postgres_server: RealPostgres
) -> None:
    name = postgres_server.create_database()
    store = open_store(postgres_server.url(name))
    try:
        store.wait(5)
        postgres_server.drop_database(name)  # ends every session, the listener's too
        started = time.monotonic()
        store.wait(0.5)  # returns (bounded), does not raise
        store.wait(0.5)
        assert time.monotonic() - started < 3.0
    finally:
        store.close()


def test_many_processes_may_migrate_at_once(postgres_url: str) -> None:
    opened = [open_store(postgres_url) for _ in range(6)]
    start = threading.Barrier(len(opened))

    def migrate(store: Store) -> int:
        start.wait(10)
        return store.migrate()

    try:
        with ThreadPoolExecutor(len(opened)) as pool:
            versions = list(pool.map(migrate, opened))
        assert len(set(versions)) == 1
        assert {store.schema_version() for store in opened} == set(versions)
    finally:
        for store in opened:
            store.close()


def test_the_same_idempotency_key_at_once_stores_one_message(stores: list[Store]) -> None:
    start = threading.Barrier(len(stores))

    def enqueue(store: Store) -> tuple[str, bool]:
        start.wait(10)
        return store.enqueue(new_message(key="invoice-2026-001"))

    for _ in range(5):  # the race is narrow: try it a few times
        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(enqueue, stores))
        assert len({id for id, _ in results}) == 1
        assert sum(created for _, created in results) <= 1
    assert len(stores[0].rows(limit=100)) == 1


def test_rows_are_plain_columns_and_exact_bytes(stores: list[Store], postgres_url: str) -> None:
    import psycopg

    message = new_message()
    stores[0].enqueue(message)
    [claimed] = stores[1].claim("w1", limit=1, lease=60, now=time.time())
    assert claimed.data == message.data
    with psycopg.connect(postgres_url) as connection:
        types = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'outbox_messages'"
            ).fetchall()
        )
        [(table, data_type)] = connection.execute(  # the bytes may live in a table of their own
            "SELECT table_name, data_type FROM information_schema.columns"
            " WHERE column_name = 'data' AND table_name LIKE 'outbox%'"
        ).fetchall()
        data = connection.execute(f"SELECT data FROM {table}").fetchall()
    assert data_type == "bytea"
    assert types["not_before"] == "double precision"
    assert data == [(message.data,)]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mailbridge:s3cret-pw@127.0.0.1:1/outbox",
        "postgres://mailbridge:s3cret-pw@127.0.0.1:1/outbox?connect_timeout=2",
        "postgresql://mailbridge:s3cret-pw%zz@127.0.0.1:1/outbox",  # a '%' left unencoded
        "postgresql://mailbridge@127.0.0.1:1/outbox?password=s3cret-pw%zz",
        "postgresql://mailbridge:s3cret-pw@[127.0.0.1/outbox",  # not a URL at all
    ],
)
def test_unreachable_server_is_a_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot open the PostgreSQL outbox") as caught:
        open_store(url)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_the_command_line_migrates_and_drains_a_postgresql_outbox(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FakeSmtpServer(tls="none") as server:
        (tmp_path / "outbox_pg_tenants.py").write_text(
            "from mailbridge import DeliveryClient, SmtpSettings\n"
            "def client_for(tenant):\n"
            f"    settings = SmtpSettings('127.0.0.1', {server.port}, 'none')\n"
            "    return DeliveryClient.own_smtp('billing@acme.example', settings)\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        assert main(["outbox", "migrate", "--url", postgres_url]) == 0
        assert capsys.readouterr().out == "outbox schema version 4\n"
        client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
        with Outbox.open(postgres_url, migrate=False) as outbox:
            for n in range(3):
                email = DocumentEmail(to="jane@c.example", subject=f"Invoice {n}", body=".")
                outbox.enqueue("acme", email, client=client)
        resolver = "outbox_pg_tenants:client_for"
        argv = ["outbox", "worker", "--url", postgres_url, "--resolver", resolver, "--until-idle"]
        assert main(argv) == 0
        assert server.delivered_count == 3
    assert main(["outbox", "status", "--url", postgres_url]) == 0
    assert capsys.readouterr().out.split()[-2:] == ["sent", "3"]


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "mailbridge.outbox._postgres")
    with pytest.raises(ConfigurationError, match=r"mailbridge-documents\[postgres\]"):
        open_store("postgresql://mailbridge@127.0.0.1:1/outbox")


def _terminate_outbox_sessions(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        return len(
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'mailbridge-outbox' AND datname = current_database()"
            ).fetchall()
        )


def test_a_connection_lost_between_transactions_is_opened_again(stores: list[Store]) -> None:
    store = stores[0]
    id, _ = store.enqueue(new_message())
    assert _terminate_outbox_sessions(store.url) == len(stores)  # a server restart, a failover
    row = store.get(id)
    assert row is not None and row.state is State.QUEUED
    [claimed] = store.claim("w1", limit=1, lease=60, now=time.time())
    assert store.finish(claimed.id, "w1", State.SENT, now=time.time())


def test_a_connection_lost_inside_a_transaction_is_an_outbox_error(
    stores: list[Store], postgres_url: str
) -> None:
    import psycopg

    store = stores[0]
    store.enqueue(new_message())
    outcome: list[object] = []
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute("LOCK TABLE outbox_messages IN EXCLUSIVE MODE")
        claiming = threading.Thread(
            target=lambda: outcome.append(_outcome(store.claim, "w1", limit=1, lease=60, now=1e12))
        )
        claiming.start()
        try:
            deadline = time.monotonic() + 20
            with psycopg.connect(postgres_url, autocommit=True) as watch:
                while not watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'mailbridge-outbox'"
                ).fetchall():
                    assert time.monotonic() < deadline, "the claim never waited"
                    time.sleep(0.02)
            _terminate_outbox_sessions(postgres_url)
        finally:
            claiming.join(20)
    [error] = outcome
    assert isinstance(error, OutboxError)
    assert "PostgreSQL outbox failed" in str(error)
    assert len(store.claim("w1", limit=1, lease=60, now=time.time())) == 1  # connected again


def _outcome(function: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return exc


def test_a_closed_store_stays_closed(postgres_url: str) -> None:
    store = open_store(postgres_url)
    store.migrate()
    store.close()
    with pytest.raises(OutboxError, match="closed"):
        store.counts()
