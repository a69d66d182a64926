"""mailbridge.outbox.celery without a broker: options, checks, scheduling and the sweep."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailbridge import ConfigurationError, DeliveryClient, DocumentEmail
from mailbridge.testing import FakeSmtpServer

pytest.importorskip("celery", reason="the celery extra is not installed")

from celery import Celery

from mailbridge.outbox import MessageStatus, Outbox, State
from mailbridge.outbox import celery as outbox_celery
from mailbridge.outbox.celery import OutboxTasks, register

EMAIL = DocumentEmail(to="jane@example.test", subject="Invoice", body="Attached.")


@dataclass
class Eager:
    outbox: Outbox
    tasks: OutboxTasks
    server: FakeSmtpServer
    scheduled: list[tuple[tuple[Any, ...], dict[str, Any]]]


@pytest.fixture
def eager(tmp_path: Path, smtp_server: FakeSmtpServer) -> Iterator[Eager]:
    """Tasks that run in this process at once (task_always_eager), over a real outbox."""
    client = DeliveryClient.own_smtp("tenant@example.test", smtp_server.smtp_settings())
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    app = Celery("api_tests", broker="memory://")
    app.conf.task_always_eager = True
    tasks = register(app, url, lambda tenant: client, lease=5)
    outbox = Outbox.open(url, resolve_client=lambda tenant: client)
    yield Eager(outbox, tasks, smtp_server, [])
    outbox.close()
    tasks.outbox().close()
    client.close()


def status(state: State, *, not_before: dt.datetime | None = None) -> MessageStatus:
    now = dt.datetime.now(dt.UTC)
    return MessageStatus(
        id="x", tenant="acme", state=state, message_id="<x@example.test>", recipients=(),
        attempts=0, created_at=now, updated_at=now, not_before=not_before or now, deadline=now,
    )  # fmt: skip


def test_the_task_is_idempotent_and_acknowledged_late(eager: Eager) -> None:
    task = eager.tasks.deliver
    assert task.name == "mailbridge.outbox.deliver"
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.ignore_result is True
    assert task.serializer == "json"
    id = eager.outbox.enqueue("acme", EMAIL, dispatch=eager.tasks.dispatch)
    assert eager.outbox.status(id).state is State.SENT
    assert task.delay(id).get() == "sent"  # again: the claim fails, nothing is sent
    assert eager.tasks.run(id) is not None
    assert len(eager.server.messages) == 1


def test_an_unknown_id_is_nothing_to_do(eager: Eager) -> None:
    assert eager.tasks.run("no-such-id") is None
    assert eager.tasks.deliver.delay("no-such-id").get() == "missing"
    with pytest.raises(TypeError, match="outbox id"):
        eager.tasks.deliver.delay(42).get()


def test_a_message_not_due_is_scheduled_for_when_it_is(
    eager: Eager, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = eager.outbox.enqueue("acme", EMAIL, not_before=dt.timedelta(seconds=90))
    much_later = eager.outbox.enqueue("acme", EMAIL, not_before=dt.timedelta(hours=5))
    # Eagerly (in a request, or a test) the task runs once and does not schedule itself.
    assert eager.tasks.deliver.delay(later).get() == "queued"
    scheduled: list[dict[str, Any]] = []
    monkeypatch.setattr(
        eager.tasks.deliver, "apply_async", lambda args, **options: scheduled.append(options)
    )
    for id in (later, much_later):  # as a worker runs it: a new message with a countdown
        assert eager.tasks.deliver.run(id) == "queued"
    assert 85 < scheduled[0]["countdown"] <= 90
    assert scheduled[1]["countdown"] == outbox_celery.DEFAULT_MAX_COUNTDOWN
    assert eager.server.messages == []


def test_next_check_follows_the_outbox_state(eager: Eager) -> None:
    tasks = eager.tasks
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert tasks.next_check(None) is None
    for final in (State.SENT, State.FAILED, State.OUTCOME_UNKNOWN, State.PARKED, State.CANCELLED):
        assert tasks.next_check(status(final)) is None
    assert 29 < (tasks.next_check(status(State.QUEUED, not_before=soon)) or 0) <= 30
    assert tasks.next_check(status(State.QUEUED)) == 0.5  # due now: soon, never at once
    assert tasks.next_check(status(State.CLAIMED)) == 5.0  # another run's lease


def test_the_sweep_dispatches_what_nobody_is_working_on(eager: Eager) -> None:
    lost = eager.outbox.enqueue("acme", EMAIL)  # committed; the dispatch never happened
    waiting = eager.outbox.enqueue("acme", EMAIL, not_before=dt.timedelta(hours=1))
    abandoned = eager.outbox.enqueue("acme", EMAIL)
    store = eager.outbox.store
    assert store.claim_one(abandoned, "dead-worker", lease=0.05, now=time.time()) is not None
    time.sleep(0.1)  # the worker died; its lease has ended
    assert eager.tasks.sweep() == 0  # due for less than sweep_after (300 s)
    assert eager.tasks.sweep_task.delay(0).get() == 2
    assert eager.outbox.status(lost).state is State.SENT
    assert eager.outbox.status(waiting).state is State.QUEUED
    # Taken over from a dead worker: settled, never resent blindly (no IMAP here).
    assert eager.outbox.status(abandoned).state is State.OUTCOME_UNKNOWN
    assert len(eager.server.messages) == 1
    assert eager.tasks.sweep(older_than=0) == 0
    with pytest.raises(TypeError, match="seconds"):
        eager.tasks.sweep_task.delay("soon").get()


def test_each_process_opens_its_own_outbox(eager: Eager, monkeypatch: pytest.MonkeyPatch) -> None:
    first = eager.tasks.outbox()
    assert eager.tasks.outbox() is first
    monkeypatch.setattr(outbox_celery.os, "getpid", lambda: -1)  # as in a forked pool process
    child = eager.tasks.outbox()
    assert child is not first
    first.close()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"app": object()}, "app"),
        ({"resolve_client": "module:function"}, "resolve_client"),
        ({"outbox": 42}, "outbox"),
        ({"lease": 0}, "lease"),
        ({"lease": True}, "lease"),
        ({"sweep_after": float("nan")}, "sweep_after"),
        ({"max_countdown": 86401}, "max_countdown"),
    ],
)
def test_register_checks_its_arguments(arguments: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "app": Celery("checks", broker="memory://"),
        "outbox": "sqlite:///unused.db",
        "resolve_client": lambda tenant: None,
        **arguments,
    }
    app, outbox, resolve = values.pop("app"), values.pop("outbox"), values.pop("resolve_client")
    with pytest.raises(ConfigurationError, match=field):
        register(app, outbox, resolve, **values)
