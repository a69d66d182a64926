"""The outbox store protocol, one suite for every database (`store_url`: SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from mailbridge.outbox import NewMessage, Outcome, State, Store, TenantLimits, open_store
from mailbridge.outbox._schema import SCHEMA_VERSION

from ._outbox_store_urls import STORES, hand_clock, migrated_store, store_url_for

T0 = 1_800_000_000.0


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with migrated_store(store_url) as opened:
        yield opened


def message(
    tenant: str = "acme",
    key: str | None = None,
    *,
    at: float = T0,
    data: bytes = b"Subject: hi\r\n\r\nbody\r\n",
    limits: TenantLimits | None = None,
) -> NewMessage:
    return NewMessage(
        id=uuid.uuid4().hex,
        tenant=tenant,
        idempotency_key=key,
        message_id=f"<{uuid.uuid4().hex}@acme.example>",
        envelope_sender="billing@acme.example",
        recipients=("jane@customer.example", "audit@acme.example"),
        bcc=("audit@acme.example",),
        smtputf8=False,
        mode="own_smtp",
        note=None,
        data=data,
        created_at=at,
        not_before=at,
        deadline=at + 3600,
        limits=limits,
    )


def test_migrate_creates_the_schema_once(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.schema_version() == 0
        assert store.migrate() == SCHEMA_VERSION == 4
        assert store.migrate() == 4
        assert store.schema_version() == 4
    finally:
        store.close()


def test_the_same_idempotency_key_stores_nothing_and_returns_the_first_id(store: Store) -> None:
    first, created = store.enqueue(message(key="invoice-7"))
    again, created_again = store.enqueue(message(key="invoice-7"))
    other_tenant, _ = store.enqueue(message("globex", key="invoice-7"))
    assert (created, created_again, again) == (True, False, first)
    assert other_tenant != first
    assert store.counts() == {State.QUEUED: 2}


def test_bytes_and_envelope_come_back_exactly(store: Store) -> None:
    data = bytes(range(256)) * 4
    id, _ = store.enqueue(message(data=data))
    [claimed] = store.claim("w1", limit=5, lease=30, now=T0)
    assert (claimed.id, claimed.data, claimed.bcc) == (id, data, ("audit@acme.example",))
    assert claimed.recipients == ("jane@customer.example", "audit@acme.example")
    assert (claimed.attempts, claimed.lease_expires, claimed.recovering) == (1, T0 + 30, False)


def test_a_claim_takes_only_due_messages_and_holds_them_under_a_lease(store: Store) -> None:
    due, _ = store.enqueue(message())
    later = message(at=T0)
    store.enqueue(attrs.evolve(later, not_before=T0 + 100))
    assert [c.id for c in store.claim("w1", limit=10, lease=30, now=T0)] == [due]
    assert store.claim("w2", limit=10, lease=30, now=T0 + 10) == []  # w1's lease holds
    row = store.get(due)
    assert row is not None
    assert (row.state, row.lease_owner) == (State.CLAIMED, "w1")


def test_an_expired_lease_is_taken_over_as_recovering_and_the_old_owner_records_nothing(
    store: Store,
) -> None:
    id, _ = store.enqueue(message())
    store.claim("w1", limit=1, lease=30, now=T0)
    [taken] = store.claim("w2", limit=1, lease=30, now=T0 + 31)
    assert (taken.id, taken.recovering, taken.attempts) == (id, True, 1)
    assert not store.finish(id, "w1", State.SENT, now=T0 + 32, result="{}")
    assert store.finish(id, "w2", State.OUTCOME_UNKNOWN, now=T0 + 33, error='{"type": "X"}')
    row = store.get(id)
    assert row is not None
    assert (row.state, row.lease_owner, row.error) == (State.OUTCOME_UNKNOWN, None, '{"type": "X"}')


def test_claim_one_is_idempotent(store: Store) -> None:
    id, _ = store.enqueue(message())
    first = store.claim_one(id, "task-1", lease=30, now=T0)
    assert first is not None
    assert store.claim_one(id, "task-2", lease=30, now=T0 + 1) is None  # held
    assert store.finish(id, "task-1", State.SENT, now=T0 + 2, result='{"accepted": []}')
    assert store.claim_one(id, "task-3", lease=30, now=T0 + 100) is None  # finished
    row = store.get(id)
    assert row is not None
    assert (row.state, row.sent_at, row.attempts) == (State.SENT, T0 + 2, 1)
    assert store.claim_one("no-such-id", "task-4", lease=30, now=T0) is None


def test_claim_one_leaves_a_message_that_is_not_due(store: Store) -> None:
    later = message()
    store.enqueue(attrs.evolve(later, not_before=T0 + 100))
    assert store.claim_one(later.id, "task", lease=30, now=T0) is None
    assert store.claim_one(later.id, "task", lease=30, now=T0 + 100) is not None


def test_reschedule_and_release_put_messages_back(store: Store) -> None:
    a, _ = store.enqueue(message())
    b, _ = store.enqueue(message())
    store.claim("w1", limit=2, lease=30, now=T0)
    assert not store.reschedule(a, "w2", now=T0, not_before=T0 + 60, reason="x")
    assert store.reschedule(a, "w1", now=T0, not_before=T0 + 60, reason="retrying: 451")
    assert store.release([b], "w1", now=T0) == 1
    row_a, row_b = store.get(a), store.get(b)
    assert row_a is not None and row_b is not None
    assert (row_a.state, row_a.not_before, row_a.wait_reason, row_a.attempts) == (
        State.QUEUED,
        T0 + 60,
        "retrying: 451",
        1,
    )
    assert (row_b.state, row_b.attempts, row_b.lease_owner) == (State.QUEUED, 0, None)
    assert store.next_due() == T0


def test_renew_extends_only_the_owners_leases(store: Store) -> None:
    id, _ = store.enqueue(message())
    store.claim("w1", limit=1, lease=30, now=T0)
    assert store.renew([id], "w2", until=T0 + 300) == 0
    assert store.renew([id], "w1", until=T0 + 300) == 1
    assert store.claim("w2", limit=1, lease=30, now=T0 + 100) == []


def test_a_per_minute_limit_holds_messages_back_with_a_reason(store: Store) -> None:
    limits = TenantLimits("Microsoft 365", per_minute=2)
    ids = [store.enqueue(message(limits=limits, at=T0 + i / 100))[0] for i in range(5)]
    other, _ = store.enqueue(message("globex", at=T0 + 1))
    claimed = store.claim("w1", limit=10, lease=300, now=T0 + 2)
    assert sorted(c.id for c in claimed) == sorted([*ids[:2], other])
    held = store.get(ids[2])
    assert held is not None
    assert (held.state, held.not_before) == (State.QUEUED, T0 + 2 + 60)
    assert held.wait_reason == "waiting: Microsoft 365 per-minute limit"
    assert store.claim("w1", limit=10, lease=30, now=T0 + 30) == []
    again = store.claim("w1", limit=10, lease=300, now=T0 + 62)
    assert sorted(c.id for c in again) == sorted(ids[2:4])


def test_a_daily_limit_counts_across_claims(store: Store) -> None:
    limits = TenantLimits("Gmail", per_day=3)
    for i in range(5):
        store.enqueue(message(limits=limits, at=T0 + i))
    assert len(store.claim("w1", limit=2, lease=30, now=T0 + 10)) == 2
    assert len(store.claim("w2", limit=5, lease=30, now=T0 + 11)) == 1
    waiting = store.rows(state=State.QUEUED)
    assert {row.wait_reason for row in waiting} == {"waiting: Gmail daily limit"}
    assert {row.not_before for row in waiting} == {T0 + 10 + 86_400}


def test_in_flight_limit_bounds_a_tenants_claims_across_workers(store: Store) -> None:
    limits = TenantLimits("Microsoft 365", in_flight=2)
    for i in range(4):
        store.enqueue(message(limits=limits, at=T0 + i))
    first = store.claim("w1", limit=10, lease=30, now=T0 + 5)
    assert len(first) == 2
    assert store.claim("w2", limit=10, lease=30, now=T0 + 5) == []
    store.finish(first[0].id, "w1", State.SENT, now=T0 + 6)
    assert len(store.claim("w2", limit=10, lease=30, now=T0 + 6)) == 1
    assert {row.wait_reason for row in store.rows(state=State.QUEUED)} == {None}


def test_retry_cancel_and_purge(store: Store) -> None:
    failed, _ = store.enqueue(message())
    unknown, _ = store.enqueue(message())
    queued, _ = store.enqueue(message(at=T0 + 1))
    store.claim("w", limit=2, lease=30, now=T0)
    store.finish(failed, "w", State.FAILED, now=T0, error="{}")
    store.finish(unknown, "w", State.OUTCOME_UNKNOWN, now=T0, error="{}")
    assert not store.retry(queued, now=T0)
    assert not store.retry(unknown, now=T0 + 5)
    assert store.retry(unknown, now=T0 + 5, force=True)
    assert store.retry(failed, now=T0 + 5)
    row = store.get(failed)
    assert row is not None
    assert (row.state, row.not_before, row.deadline) == (State.QUEUED, T0 + 5, T0 + 5 + 3600)
    assert store.cancel(queued, now=T0 + 6)
    assert not store.cancel(queued, now=T0 + 6)
    assert store.purge(before=T0 + 6) == 0  # cancelled at T0 + 6 exactly: not older
    assert store.purge(before=T0 + 7) == 1
    assert store.get(queued) is None
    assert store.counts() == {State.QUEUED: 2}


def test_rows_filter_by_tenant_and_state_newest_first(store: Store) -> None:
    a, _ = store.enqueue(message("acme", at=T0))
    b, _ = store.enqueue(message("acme", at=T0 + 1))
    store.enqueue(message("globex", at=T0 + 2))
    assert [row.id for row in store.rows(tenant="acme")] == [b, a]
    assert [row.id for row in store.rows(tenant="acme", limit=1, offset=1)] == [a]
    assert store.counts(tenant="globex") == {State.QUEUED: 1}
    assert store.rows(state=State.SENT) == []


def test_concurrent_claims_never_share_a_message(store_url: str, store: Store) -> None:
    for i in range(60):
        store.enqueue(message(at=T0 + i / 1000))
    taken: list[str] = []
    lock = threading.Lock()

    def claim(owner: str) -> None:
        other = hand_clock(open_store(store_url))
        try:
            for _ in range(30):
                got = other.claim(owner, limit=3, lease=30, now=T0 + 1)
                with lock:
                    taken.extend(c.id for c in got)
        finally:
            other.close()

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(taken) == 60
    assert len(set(taken)) == 60


def test_exchange_records_outcomes_and_claims_more_in_one_go(store: Store) -> None:
    ids = [store.enqueue(message(at=T0 + i))[0] for i in range(4)]
    first = store.claim("w1", limit=2, lease=30, now=T0 + 10)
    outcomes = [
        Outcome(first[0].id, State.SENT, result='{"accepted": ["jane@customer.example"]}'),
        Outcome(first[1].id, State.QUEUED, None, '{"type": "X"}', T0 + 99, "retrying", False),
        Outcome(ids[3], State.FAILED, error="{}"),  # not held by w1: not recorded
    ]
    held, claimed = store.exchange(outcomes, "w1", limit=3, lease=30, now=T0 + 11)
    assert held == [True, True, False]
    assert [c.id for c in claimed] == ids[2:]
    sent, retried, other = store.get(ids[0]), store.get(ids[1]), store.get(ids[3])
    assert sent is not None and retried is not None and other is not None
    assert (sent.state, sent.sent_at, sent.lease_owner) == (State.SENT, T0 + 11, None)
    assert (retried.state, retried.not_before, retried.attempts) == (State.QUEUED, T0 + 99, 0)
    assert (retried.wait_reason, retried.error) == ("retrying", '{"type": "X"}')
    assert (other.state, other.lease_owner) == (State.CLAIMED, "w1")
    assert store.exchange([], "w1", limit=0, lease=30, now=T0 + 12) == ([], [])


def test_a_new_sqlite_outbox_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    opened = open_store(f"sqlite:///{path}")
    opened.migrate()
    opened.enqueue(message())
    try:
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        opened.close()
    assert modes["outbox.db"] == 0o600  # the invoices' bytes are in it
    assert modes["outbox.db-wal"] == 0o600


# -- sliding pacing windows (schema v3) and fairness across tenants ------------------


def test_a_per_minute_limit_holds_over_any_sliding_minute(store: Store) -> None:
    limits = TenantLimits("Microsoft 365", per_minute=3)
    for i in range(6):
        store.enqueue(message(limits=limits, at=T0 - 10 + i / 100))
    assert len(store.claim("w1", limit=1, lease=300, now=T0)) == 1
    assert len(store.claim("w1", limit=10, lease=300, now=T0 + 59)) == 2
    # a fixed window starting at T0 would allow 3 more here: 5 within 1.5 seconds
    assert len(store.claim("w2", limit=10, lease=300, now=T0 + 60.5)) == 1
    waiting = store.rows(state=State.QUEUED)
    assert {row.not_before for row in waiting} == {T0 + 59 + 60}
    assert {row.wait_reason for row in waiting} == {"waiting: Microsoft 365 per-minute limit"}
    assert store.claim("w2", limit=10, lease=300, now=T0 + 118) == []
    assert len(store.claim("w2", limit=10, lease=300, now=T0 + 119)) == 2


def test_a_daily_limit_holds_over_any_sliding_day(store: Store) -> None:
    limits = TenantLimits("Gmail", per_day=2)
    for i in range(4):
        store.enqueue(message(limits=limits, at=T0 - 10 + i))
    [first] = store.claim("w1", limit=1, lease=30, now=T0)
    assert store.finish(first.id, "w1", State.SENT, now=T0 + 1)
    [second] = store.claim("w1", limit=5, lease=30, now=T0 + 86_000)
    assert store.finish(second.id, "w1", State.SENT, now=T0 + 86_001)
    assert len(store.claim("w1", limit=5, lease=30, now=T0 + 86_400.5)) == 1
    [waiting] = store.rows(state=State.QUEUED)
    assert (waiting.not_before, waiting.wait_reason) == (
        T0 + 86_000 + 86_400,
        "waiting: Gmail daily limit",
    )


def test_claims_given_back_without_sending_free_their_slot(store: Store) -> None:
    limits = TenantLimits("Gmail", per_minute=2)
    for i in range(4):
        store.enqueue(message(limits=limits, at=T0 + i / 100))
    first, second = store.claim("w1", limit=5, lease=30, now=T0 + 1)
    assert store.release([first.id], "w1", now=T0 + 2) == 1  # SIGTERM: never tried
    [again] = store.claim("w1", limit=5, lease=30, now=T0 + 3)
    # a temporary failure was an attempt (the server may count it): its slot stays taken
    assert store.reschedule(second.id, "w1", now=T0 + 4, not_before=T0 + 4, reason="4xx")
    assert store.claim("w1", limit=5, lease=30, now=T0 + 5) == []
    # proven not transmitted (count_attempt=False): given back
    untried = Outcome(again.id, State.QUEUED, not_before=T0 + 6, count_attempt=False)
    assert store.record([untried], "w1", now=T0 + 6) == [True]
    assert len(store.claim("w1", limit=5, lease=30, now=T0 + 7)) == 1


def test_a_version_2_database_upgrades_in_place_and_keeps_its_sends(store_url: str) -> None:
    from mailbridge.outbox._schema import MIGRATIONS

    old = hand_clock(open_store(store_url))
    try:
        with old._transaction() as cursor:  # type: ignore[attr-defined]
            old._version(cursor)  # type: ignore[attr-defined]
            for number, statements in enumerate(MIGRATIONS[:2], start=1):
                for statement in statements:
                    old._run(cursor, statement.format(blob=old.dialect.blob, real=old.dialect.real))  # type: ignore[attr-defined]
                old._run(cursor, "INSERT INTO outbox_schema (version) VALUES (?)", (number,))  # type: ignore[attr-defined]
        assert old.schema_version() == 2
        ids = [old.enqueue(message(at=T0 + i))[0] for i in range(3)]
        with old._transaction() as cursor:  # type: ignore[attr-defined]
            old._run(  # type: ignore[attr-defined]
                cursor,
                "UPDATE outbox_messages SET state = 'sent', sent_at = ?, updated_at = ?"
                " WHERE id IN (?, ?)",
                (T0 + 5, T0 + 5, *ids[:2]),
            )
            old._run(  # type: ignore[attr-defined]  # the tenant's limits, as v2 kept them
                cursor,
                "INSERT INTO outbox_tenants (tenant, provider, per_day)"
                " VALUES ('acme', 'Gmail', 2)",
            )
        assert old.migrate() == SCHEMA_VERSION == 4
        assert old.schema_version() == 4
        # the two sent under v2 still count: the third waits for the day to slide
        assert old.claim("w1", limit=5, lease=30, now=T0 + 100) == []
        held = old.get(ids[2])
        assert held is not None
        assert (held.not_before, held.wait_reason) == (
            T0 + 5 + 86_400,
            "waiting: Gmail daily limit",
        )
        assert [c.id for c in old.claim("w1", limit=5, lease=30, now=T0 + 86_406)] == [ids[2]]
    finally:
        old.close()


def test_one_tenants_flood_does_not_delay_another_tenants_message(store: Store) -> None:
    for i in range(40):
        store.enqueue(message("flood", at=T0 + i / 100))
    invoice, _ = store.enqueue(message("acme", at=T0 + 5))
    claimed = store.claim("w1", limit=4, lease=30, now=T0 + 6)
    assert invoice in [c.id for c in claimed]
    assert len(claimed) == 4


def test_claims_go_round_robin_over_tenants_oldest_first_within_each(store: Store) -> None:
    ids: dict[str, list[str]] = {}
    for i in range(5):
        for tenant in ("a", "b", "c"):
            ids.setdefault(tenant, []).append(store.enqueue(message(tenant, at=T0 + i))[0])
    first = store.claim("w1", limit=3, lease=30, now=T0 + 10)
    assert sorted(c.id for c in first) == sorted(found[0] for found in ids.values())
    second = store.claim("w1", limit=2, lease=30, now=T0 + 10)
    third = store.claim("w2", limit=4, lease=30, now=T0 + 10)
    taken = [c.id for c in (*second, *third)]
    assert len({c.tenant for c in second}) == 2
    assert {c.tenant for c in third} == {"a", "b", "c"}
    assert all(found[1] in taken for found in ids.values())


# -- clocks: on PostgreSQL the database's clock decides leases and due times -------------


def _one_clock(store_url: str) -> None:
    if not store_url.startswith("postgres"):
        pytest.skip("SQLite is one machine: the local clock is the clock")


def test_a_worker_whose_clock_is_behind_keeps_its_lease(store_url: str) -> None:
    _one_clock(store_url)
    behind, right = open_store(store_url), open_store(store_url)
    try:
        behind.migrate()
        now = time.time()
        id, _ = right.enqueue(message(at=now - 5))
        [claimed] = behind.claim("slow", limit=1, lease=60, now=now - 1000 + 10)
        assert claimed.lease_expires == pytest.approx(now - 1000 + 70, abs=1)  # its own terms
        assert right.claim("fast", limit=1, lease=60, now=now + 1) == []  # no takeover
        row = right.get(id)
        assert row is not None
        assert row.lease_expires == pytest.approx(now + 60, abs=5)  # the database's terms
        assert behind.renew([id], "slow", until=now - 1000 + 130, now=now - 1000 + 10) == 1
        row = right.get(id)
        assert row is not None
        assert row.lease_expires == pytest.approx(now + 120, abs=5)
        assert right.claim("fast", limit=1, lease=60, now=now + 100) == []
        assert behind.finish(id, "slow", State.SENT, now=now - 1000 + 20)
    finally:
        behind.close()
        right.close()


def test_a_message_enqueued_by_a_clock_ahead_is_due_at_once(store_url: str) -> None:
    _one_clock(store_url)
    store = open_store(store_url)
    try:
        store.migrate()
        now = time.time()
        id, _ = store.enqueue(message(at=now + 1000))  # the application's clock is ahead
        assert [c.id for c in store.claim("w", limit=1, lease=60, now=now + 1)] == [id]
    finally:
        store.close()
