"""Outbox mode of the Django backend: checked at once, stored when the caller's transaction
commits, dispatched, sent by the outbox; statuses readable from the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import transaction
from django.test import override_settings

from mailbridge import ConfigurationError, DeliveryClient, HeaderInjection, OutboxError
from mailbridge.django import EmailBackend, close_clients, mailer_outbox, tenant_client
from mailbridge.outbox import Outbox, State
from mailbridge.testing import FakeSmtpServer
from tests.django_project import mail as project_mail

from ._django import BACKEND
from .conftest import USER


@pytest.fixture
def outbox(smtp_server: FakeSmtpServer, tmp_path: Path) -> Iterator[Outbox]:
    """Tenant "acme" on the fake server; the test project's mailer in outbox mode."""
    project_mail.TENANTS["acme"] = (USER, smtp_server.smtp_settings())
    with Outbox.open(f"sqlite:///{tmp_path / 'outbox.db'}") as box:
        options = {"TENANT_RESOLVER": "tests.django_project.mail.resolve", "OUTBOX": box}
        try:
            with override_settings(EMAIL_BACKEND=BACKEND, MAILBRIDGE=options):
                yield box
        finally:
            project_mail.TENANTS.clear()
            close_clients()


def _invoice(subject: str = "Invoice 7", **options: object) -> EmailMessage:
    message = EmailMessage(subject, "body", to=["jane@customer.example"], **options)  # type: ignore[arg-type]
    message.tenant = "acme"
    return message


def test_enqueued_on_commit_dispatched_and_sent_by_the_outbox(
    outbox: Outbox, smtp_server: FakeSmtpServer
) -> None:
    dispatched: list[str] = []
    backend = EmailBackend(outbox_dispatch=dispatched.append)
    message = _invoice()
    with transaction.atomic():
        assert backend.send_messages([message]) == 1
        status = message.mailbridge_result
        assert status.status == "queued" and status.outbox_id is None
        assert outbox.messages() == [] and dispatched == []  # not before the commit
    outbox_id = message.mailbridge_result.outbox_id
    assert outbox_id is not None and dispatched == [outbox_id]
    queued = outbox.status(outbox_id)
    assert queued.state is State.QUEUED and queued.tenant == "acme"
    assert queued.message_id == message.mailbridge_result.message_id
    assert smtp_server.messages == []  # send_messages returned without sending

    sent = outbox.deliver(outbox_id, tenant_client)  # what a dispatched task does
    assert sent.state is State.SENT and sent.accepted == ("jane@customer.example",)
    (received,) = smtp_server.messages
    assert received.message["Message-ID"] == queued.message_id


def test_a_rolled_back_transaction_sends_nothing(outbox: Outbox) -> None:
    dispatched: list[str] = []
    message = _invoice()

    def save_invoice() -> None:
        with transaction.atomic():
            EmailBackend(outbox_dispatch=dispatched.append).send_messages([message])
            raise RuntimeError("the invoice was not saved")

    with pytest.raises(RuntimeError):
        save_invoice()
    assert outbox.messages() == [] and dispatched == []
    assert message.mailbridge_result.outbox_id is None


def test_outside_a_transaction_it_is_stored_at_once_and_a_worker_sends_it(
    outbox: Outbox, smtp_server: FakeSmtpServer
) -> None:
    messages = [_invoice(f"Invoice {n}") for n in range(3)]
    assert EmailBackend().send_messages(messages) == 3
    assert outbox is mailer_outbox()
    assert {m.mailbridge_result.outbox_id for m in messages} == {
        s.id for s in outbox.messages(state=State.QUEUED)
    }
    outbox.worker(tenant_client).run(until_idle=True)
    assert sorted(m.message["Subject"] for m in smtp_server.messages) == [
        "Invoice 0",
        "Invoice 1",
        "Invoice 2",
    ]
    assert {outbox.status(m.mailbridge_result.outbox_id).state for m in messages} == {State.SENT}


def test_bad_messages_are_refused_in_the_caller_and_not_stored(outbox: Outbox) -> None:
    with pytest.raises(HeaderInjection):
        EmailBackend().send_messages([_invoice("Hi\r\nBcc: victim@example.test")])
    assert outbox.messages() == []


def test_outbox_mode_needs_a_tenant_key(outbox: Outbox, smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        backend = EmailBackend(tenant_resolver=lambda message: client)
        with pytest.raises(ConfigurationError, match="must return a Tenant"):
            backend.send_messages([_invoice()])
    assert outbox.messages() == []


def test_outbox_given_as_a_url(tmp_path: Path, smtp_server: FakeSmtpServer) -> None:
    project_mail.TENANTS["acme"] = (USER, smtp_server.smtp_settings())
    url = f"sqlite:///{tmp_path / 'by-url.db'}"
    try:
        message = _invoice()
        assert EmailBackend(outbox=url).send_messages([message]) == 1
        with Outbox.open(url) as box:
            assert box.status(message.mailbridge_result.outbox_id).state is State.QUEUED
        with pytest.raises(ConfigurationError, match="outbox URL"):
            EmailBackend(outbox="outbox.db").send_messages([_invoice()])
    finally:
        project_mail.TENANTS.clear()
        close_clients()


def test_a_failing_dispatch_after_the_commit_loses_nothing(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that is down: the caller's commit stands, every message is stored, the
    application's own on-commit hooks run; the failure is logged."""

    def broker_down(outbox_id: str) -> None:
        raise ConnectionError("broker down")

    hooks: list[str] = []
    first, second = _invoice("A"), _invoice("B")
    with transaction.atomic():
        assert EmailBackend(outbox_dispatch=broker_down).send_messages([first, second]) == 2
        transaction.on_commit(lambda: hooks.append("the application's hook"))
    assert hooks == ["the application's hook"]
    ids = {first.mailbridge_result.outbox_id, second.mailbridge_result.outbox_id}
    assert None not in ids and {m.id for m in outbox.messages()} == ids
    assert all(outbox.status(id).state is State.QUEUED for id in ids)  # a worker sends them
    assert caplog.text.count("dispatching it failed") == 2


def test_a_message_the_outbox_cannot_store_after_the_commit_is_marked_failed(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue = outbox.enqueue
    calls: list[str] = []

    def flaky(*args: Any, **kwargs: Any) -> str:
        calls.append("enqueue")
        if len(calls) == 1:
            raise OutboxError("the outbox database is unavailable")
        return enqueue(*args, **kwargs)

    monkeypatch.setattr(outbox, "enqueue", flaky)
    lost, kept = _invoice("A"), _invoice("B")
    with transaction.atomic():
        EmailBackend().send_messages([lost, kept])
    assert lost.mailbridge_result.status == "failed"
    assert isinstance(lost.mailbridge_result.error, OutboxError)
    assert "committed but not stored" in caplog.text
    assert kept.mailbridge_result.outbox_id is not None
    assert [m.id for m in outbox.messages()] == [kept.mailbridge_result.outbox_id]


def test_a_rolled_back_savepoint_stores_only_the_outer_message(outbox: Outbox) -> None:
    outer, inner = _invoice("Outer"), _invoice("Inner")

    def inner_step() -> None:
        with transaction.atomic():
            EmailBackend().send_messages([inner])
            raise LookupError("the inner step failed")

    with transaction.atomic():
        EmailBackend().send_messages([outer])
        with pytest.raises(LookupError, match="inner step"):
            inner_step()
    assert [m.id for m in outbox.messages()] == [outer.mailbridge_result.outbox_id]
    assert inner.mailbridge_result.outbox_id is None
