"""Limits that count recipients (Microsoft 365: 10,000 recipients a day), on every database.

A message to 3 addresses uses 3 of such a limit; each send in `outbox_sends` keeps its
recipient count (schema v4), and a message no whole window could carry is refused at
enqueue with `TooManyRecipients`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from mailbridge import DeliveryClient, DocumentEmail, MessageError, TooManyRecipients
from mailbridge.errors import ConfigurationError
from mailbridge.outbox import NewMessage, Outbox, State, Store, TenantLimits, open_store
from mailbridge.outbox._schema import MIGRATIONS, SCHEMA_VERSION
from mailbridge.providers import ProviderRegistry
from mailbridge.testing import FakeSmtpServer

from ._outbox_store_urls import STORES, hand_clock, migrated_store, store_url_for

T0 = 1_800_000_000.0
DAY = 86_400.0
LIMIT = TenantLimits("Microsoft 365", per_minute=30, per_day_recipients=10)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url_for(request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with migrated_store(store_url) as opened:
        yield opened


def message(
    tenant: str = "acme",
    recipients: int = 3,
    *,
    at: float = T0,
    limits: TenantLimits | None = LIMIT,
) -> NewMessage:
    return NewMessage(
        id=uuid.uuid4().hex,
        tenant=tenant,
        idempotency_key=None,
        message_id=f"<{uuid.uuid4().hex}@acme.example>",
        envelope_sender="billing@acme.example",
        recipients=tuple(f"r{n}@customer.example" for n in range(recipients)),
        bcc=(),
        smtputf8=False,
        mode="own_smtp",
        note=None,
        data=b"Subject: invoice\r\n\r\nbody\r\n",
        created_at=at,
        not_before=at,
        deadline=at + 3 * DAY,
        limits=limits,
    )


def test_a_daily_recipient_limit_counts_each_recipient(store: Store) -> None:
    ids = [store.enqueue(message(at=T0 + i))[0] for i in range(4)]
    other, _ = store.enqueue(message("globex", 1, at=T0 + 5))
    claimed = store.claim("w1", limit=10, lease=60, now=T0 + 10)
    # 3 x 3 = 9 of 10: the 4th (3 more) waits for the day to slide; globex is not held
    assert sorted(c.id for c in claimed) == sorted([*ids[:3], other])
    waiting = store.get(ids[3])
    assert waiting is not None and waiting.state is State.QUEUED
    assert (waiting.not_before, waiting.wait_reason) == (
        T0 + 10 + DAY,
        "waiting: Microsoft 365 daily recipient limit",
    )
    for c in claimed:
        assert store.finish(c.id, "w1", State.SENT, now=T0 + 11)
    assert store.claim("w1", limit=10, lease=60, now=T0 + 10 + DAY - 1) == []
    assert [c.id for c in store.claim("w1", limit=10, lease=60, now=T0 + 10 + DAY)] == [ids[3]]


def test_a_held_message_waits_until_enough_recipients_left_the_window(store: Store) -> None:
    for i in range(3):  # sends of 3, 3 and 3 recipients, 100 s apart
        store.enqueue(message(at=T0 + i))
        assert len(store.claim("w1", limit=5, lease=3600, now=T0 + 100 * i)) == 1
    small, _ = store.enqueue(message(recipients=1, at=T0 + 300))
    assert [c.id for c in store.claim("w1", limit=5, lease=3600, now=T0 + 300)] == [small]
    # 10 of 10 used; a message to 7 needs 7 to leave: the sends at T0 and T0 + 100 (3 + 3
    # are not enough), so the one at T0 + 200 — a message count would say T0 + DAY
    big, _ = store.enqueue(message(recipients=7, at=T0 + 400))
    assert store.claim("w1", limit=5, lease=3600, now=T0 + 400) == []
    held = store.get(big)
    assert held is not None and held.not_before == T0 + 200 + DAY


def test_a_window_may_count_messages_and_recipients_at_once(store: Store) -> None:
    workspace = TenantLimits("Google Workspace", per_day=2, per_day_recipients=100)
    ids = [store.enqueue(message(recipients=1, at=T0 + i, limits=workspace))[0] for i in range(3)]
    assert len(store.claim("w1", limit=5, lease=60, now=T0 + 10)) == 2
    held = store.get(ids[2])
    assert held is not None and held.wait_reason == "waiting: Google Workspace daily limit"
    bulk = TenantLimits("Google Workspace", per_day=100, per_day_recipients=4)
    store.enqueue(message("globex", 3, at=T0, limits=bulk))
    later, _ = store.enqueue(message("globex", 2, at=T0 + 1, limits=bulk))
    assert len(store.claim("w1", limit=5, lease=60, now=T0 + 20)) == 1
    held = store.get(later)
    assert held is not None
    assert held.wait_reason == "waiting: Google Workspace daily recipient limit"


def test_a_message_bigger_than_a_shrunken_limit_goes_once_the_window_is_empty(
    store: Store,
) -> None:
    # enqueued when the limit allowed it; the provider's figure dropped to 2 since
    first, _ = store.enqueue(message(recipients=5, at=T0))
    second, _ = store.enqueue(message(recipients=5, at=T0 + 1))
    store.enqueue(message("acme", 1, at=T0 + 2, limits=TenantLimits("X", per_day_recipients=2)))
    assert [c.id for c in store.claim("w1", limit=1, lease=60, now=T0 + 10)] == [first]
    assert store.finish(first, "w1", State.SENT, now=T0 + 11)
    assert store.claim("w1", limit=5, lease=60, now=T0 + 20) == []
    held = store.get(second)
    assert held is not None and held.not_before == T0 + 10 + DAY  # never "forever"
    assert [c.id for c in store.claim("w1", limit=1, lease=60, now=T0 + 10 + DAY)] == [second]


def test_a_version_3_database_upgrades_and_its_sends_count_their_recipients(
    store_url: str,
) -> None:
    old = hand_clock(open_store(store_url))
    try:
        with old._transaction() as cursor:  # type: ignore[attr-defined]
            old._version(cursor)  # type: ignore[attr-defined]
            for number, statements in enumerate(MIGRATIONS[:3], start=1):
                for statement in statements:
                    old._run(cursor, statement.format(blob=old.dialect.blob, real=old.dialect.real))  # type: ignore[attr-defined]
                old._run(cursor, "INSERT INTO outbox_schema (version) VALUES (?)", (number,))  # type: ignore[attr-defined]
        assert old.schema_version() == 3
        sent = [old.enqueue(message(at=T0 + i, limits=None))[0] for i in range(2)]
        with old._transaction() as cursor:  # type: ignore[attr-defined]
            for i, id in enumerate(sent):  # what the v3 code logged and recorded
                old._run(  # type: ignore[attr-defined]
                    cursor,
                    "INSERT INTO outbox_sends (tenant, id, owner, at) VALUES ('acme', ?, 'w0', ?)",
                    (id, T0 + 10 + i),
                )
                old._run(  # type: ignore[attr-defined]
                    cursor,
                    "UPDATE outbox_messages SET state = 'sent', sent_at = ? WHERE id = ?",
                    (T0 + 10 + i, id),
                )
        assert old.migrate() == SCHEMA_VERSION == 4
        assert old.schema_version() == 4
        # the two v3 sends used 3 recipients each: 6 of 10, so a message to 5 waits until
        # the first leaves (counted as 1 each, 2 + 5 would have gone at once)
        waiting, _ = old.enqueue(message(recipients=5, at=T0 + 20))
        assert old.claim("w1", limit=5, lease=60, now=T0 + 30) == []
        held = old.get(waiting)
        assert held is not None and held.not_before == T0 + 10 + DAY
        assert [c.id for c in old.claim("w1", limit=5, lease=60, now=T0 + 10 + DAY)] == [waiting]
    finally:
        old.close()


# -- the provider registry and enqueue -------------------------------------------------

SMALL = """
[[provider]]
id = "smallmail"
name = "Small Mail"
smtp = [{ host = "127.0.0.1", port = 465, security = "implicit_tls" }]
limits = { per_minute = 30, per_day_recipients = 10, source = "a test" }
"""


def test_the_registry_says_which_limits_count_recipients() -> None:
    registry = ProviderRegistry.default()
    microsoft, gmail = registry.by_id("microsoft365"), registry.by_id("gmail")
    workspace = registry.by_id("google-workspace")
    assert microsoft is not None and microsoft.limits is not None
    assert (microsoft.limits.per_day, microsoft.limits.per_day_recipients) == (None, 10_000)
    assert microsoft.limits.per_minute == 30  # messages
    assert workspace is not None and workspace.limits is not None
    assert (workspace.limits.per_day, workspace.limits.per_day_recipients) == (2000, 10_000)
    assert gmail is not None and gmail.limits is not None
    assert (gmail.limits.per_day, gmail.limits.per_day_recipients) == (500, 500)
    small = ProviderRegistry.from_toml(SMALL).by_id("smallmail")
    assert small is not None and small.limits is not None
    assert small.limits.per_day_recipients == 10
    with pytest.raises(ConfigurationError, match="per_day_recipients"):
        ProviderRegistry.from_toml(
            SMALL.replace("per_day_recipients = 10", "per_day_recipients = 0")
        )


def test_enqueue_refuses_a_message_no_whole_day_could_carry(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_toml(SMALL)
    with FakeSmtpServer(tls="none") as server:
        client = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
        with Outbox.open(
            f"sqlite:///{tmp_path / 'outbox.db'}",
            resolve_client=lambda tenant: client,
            registry=registry,
        ) as outbox:
            everyone = [f"r{n}@customer.example" for n in range(11)]
            with pytest.raises(TooManyRecipients) as caught:
                outbox.enqueue("acme", DocumentEmail(to=everyone, subject="News", body="."))
            assert isinstance(caught.value, MessageError)
            assert (caught.value.limit_field, caught.value.limit, caught.value.count) == (
                "per_day_recipients",
                10,
                11,
            )
            assert "per_day_recipients = 10" in str(caught.value)
            assert outbox.counts() == {}  # nothing stored
            # ten go in; through the worker, 3 + 3 + 3 of them today, then a tenant's 1
            ids = [
                outbox.enqueue("acme", DocumentEmail(to=everyone[:3], subject=f"{n}", body="."))
                for n in range(4)
            ]
            other = outbox.enqueue("globex", DocumentEmail(to=everyone[0], subject="x", body="."))
            outbox.worker().run(until_idle=True)
            states = [outbox.status(id) for id in ids]
            assert [s.state for s in states].count(State.SENT) == 3
            assert states[3].summary == "waiting: Small Mail daily recipient limit"
            assert outbox.status(other).state is State.SENT
            assert server.delivered_count == 4


def test_later_messages_wait_behind_a_held_one_in_later_claims_too(store: Store) -> None:
    limits = TenantLimits("Small Mail", per_day_recipients=10)
    for i in range(3):  # 9 of 10 recipients today
        store.enqueue(message(at=T0 + i, limits=limits))
    for sent in store.claim("w1", limit=5, lease=3600, now=T0 + 10):
        assert store.finish(sent.id, "w1", State.SENT, now=T0 + 11)
    big, _ = store.enqueue(message(recipients=3, at=T0 + 20, limits=limits))
    small, _ = store.enqueue(message(recipients=1, at=T0 + 21, limits=limits))
    # claims of one (a worker's last free slot): the big one is held, and the small one,
    # though it fits, waits behind it in the next claim, by id (Celery) or not, and so
    # does one enqueued after the hold
    assert store.claim("w1", limit=1, lease=3600, now=T0 + 30) == []
    assert store.claim_one(small, "w1", lease=3600, now=T0 + 31) is None
    assert store.claim("w1", limit=1, lease=3600, now=T0 + 31) == []
    later, _ = store.enqueue(message(recipients=1, at=T0 + 40, limits=limits))
    assert store.claim("w1", limit=5, lease=3600, now=T0 + 41) == []
    for id in (big, small, later):
        row = store.get(id)
        assert row is not None and row.state is State.QUEUED
        assert row.not_before == T0 + 10 + DAY
        assert row.wait_reason == "waiting: Small Mail daily recipient limit"
    # the day slid: all three are due at once, in the order they were enqueued
    claimed = store.claim("w1", limit=5, lease=3600, now=T0 + 10 + DAY)
    assert [c.id for c in claimed] == [big, small, later]


def test_a_tenant_whose_new_provider_has_no_limits_is_no_longer_paced(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_toml(SMALL)  # limits for 127.0.0.1 only
    with FakeSmtpServer(tls="none") as server:
        small = DeliveryClient.own_smtp("billing@acme.example", server.smtp_settings())
        # the tenant moved to its own server, which the registry has no figures for
        own = DeliveryClient.own_smtp(
            "billing@acme.example", attrs.evolve(server.smtp_settings(), host="localhost")
        )
        with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}", registry=registry) as outbox:
            team = [f"r{n}@customer.example" for n in range(3)]
            ids = [
                outbox.enqueue(
                    "acme", DocumentEmail(to=team, subject=f"{n}", body="."), client=small
                )
                for n in range(4)
            ]
            store, now = outbox.store, outbox.clock()
            assert len(store.claim("w1", limit=10, lease=60, now=now)) == 3  # 9 of 10
            moved = outbox.enqueue(
                "acme", DocumentEmail(to=team, subject="x", body="."), client=own
            )
            # Small Mail's 10 a day no longer apply: the message goes at once, and so
            # does the one they held back
            claimed = store.claim("w1", limit=10, lease=60, now=now + 1)
            assert [c.id for c in claimed] == [ids[3], moved]


def test_new_limits_let_the_held_messages_be_judged_again(store: Store) -> None:
    ids = [store.enqueue(message(at=T0 + i))[0] for i in range(4)]
    for sent in store.claim("w1", limit=10, lease=60, now=T0 + 10):  # 9 of 10
        assert store.finish(sent.id, "w1", State.SENT, now=T0 + 11)
    held = store.get(ids[3])
    assert held is not None and held.not_before == T0 + 10 + DAY
    # the tenant moved to a bigger plan: its held message need not wait for tomorrow
    bigger = TenantLimits("Microsoft 365", per_minute=30, per_day_recipients=100)
    new, _ = store.enqueue(message(at=T0 + 20, limits=bigger))
    assert [c.id for c in store.claim("w1", limit=10, lease=60, now=T0 + 21)] == [ids[3], new]
    # 15 used: with 16 a day, the next waits for tomorrow; the same limits again at the
    # next enqueue leave it there (only a change sets it free)
    smaller = TenantLimits("Microsoft 365", per_minute=30, per_day_recipients=16)
    waiting, _ = store.enqueue(message(at=T0 + 30, limits=smaller))
    assert store.claim("w1", limit=10, lease=60, now=T0 + 31) == []
    store.enqueue(message(at=T0 + 32, limits=smaller))
    row = store.get(waiting)
    assert row is not None and row.not_before == T0 + 10 + DAY
