"""CHUNKING (RFC 3030): envelope and message in one write, one round trip per message."""

from __future__ import annotations

import pytest

from mailbridge import (
    Category,
    ConnectError,
    DeliveryClient,
    DeliveryOutcomeUnknown,
    DocumentEmail,
    RecipientsRefused,
    SenderRefused,
)
from mailbridge.smtp import SmtpConnection
from mailbridge.smtp.wire import Channel
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers

from .conftest import PASSWORD, USER, alice_smtp

BODY = b"Subject: chunked\r\n\r\n.\r\n..leading dots stay as they are\r\nend\r\n"


@pytest.fixture
def chunking_server() -> FakeSmtpServer:
    with FakeSmtpServer(users={USER: PASSWORD}, chunking=True) as server:
        yield server  # type: ignore[misc]


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    writes: list[bytes] = []
    original = Channel.write

    def counting(self: Channel, data: bytes, timeout: float) -> None:
        writes.append(data)
        original(self, data, timeout)

    monkeypatch.setattr(Channel, "write", counting)
    return writes


def test_one_write_per_message_and_exact_bytes(
    chunking_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = SmtpConnection.open(chunking_server.smtp_settings())
    try:
        writes = _count_writes(monkeypatch)
        result = connection.send(USER, ["a@example.test", "b@example.test"], BODY)
        assert len(writes) == 1
        assert b"BDAT " in writes[0] and writes[0].endswith(BODY)
        assert result.accepted == ("a@example.test", "b@example.test")
    finally:
        connection.quit()
    assert chunking_server.messages[0].data == BODY  # no dot-stuffing with BDAT


def test_partial_and_total_refusal(chunking_server: FakeSmtpServer) -> None:
    chunking_server.refuse_recipient("gone@example.test")
    with DeliveryClient.own_smtp(USER, chunking_server.smtp_settings()) as client:
        result = client.send(
            DocumentEmail(to="a@example.test, gone@example.test", subject="s", body="b")
        )
        assert result.accepted == ("a@example.test",)
        assert list(result.refused) == ["gone@example.test"]
        with pytest.raises(RecipientsRefused):
            client.send(DocumentEmail(to="gone@example.test", subject="s", body="b"))
        chunking_server.sender_reply = "553 5.7.1 Sender not allowed"
        with pytest.raises(SenderRefused):
            client.send(DocumentEmail(to="a@example.test", subject="s", body="b"))
        chunking_server.sender_reply = None
        assert client.send(DocumentEmail(to="c@example.test", subject="s", body="b")).accepted
    assert [m.rcpt_tos for m in chunking_server.messages] == [
        ("a@example.test",),
        ("c@example.test",),
    ]


def test_lost_final_reply_is_outcome_unknown(chunking_server: FakeSmtpServer) -> None:
    chunking_server.drop_before_data_reply = True
    with DeliveryClient.own_smtp(USER, chunking_server.smtp_settings()) as client:
        with pytest.raises(DeliveryOutcomeUnknown) as info:
            client.send(DocumentEmail(to="a@example.test", subject="s", body="b"))
    assert info.value.diagnosis.category == Category.OUTCOME_UNKNOWN
    assert chunking_server.connections == 1


def test_chunking_can_be_switched_off(
    chunking_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = SmtpConnection.open(chunking_server.smtp_settings(chunking=False))
    try:
        writes = _count_writes(monkeypatch)
        connection.send(USER, ["a@example.test"], BODY)
        assert len(writes) == 2 and b"BDAT" not in writes[0]
    finally:
        connection.quit()


@pytest.mark.realserver
def test_postfix_takes_bdat_in_one_round_trip(
    mta: RealMailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = SmtpConnection.open(alice_smtp(mta))
    try:
        assert "CHUNKING" in connection.extensions
        writes = _count_writes(monkeypatch)
        result = connection.send(
            "alice@example.test", ["bob@example.test", "nobody@example.test"], BODY
        )
        assert len(writes) == 1
    finally:
        connection.quit()
    assert result.accepted == ("bob@example.test",)
    assert result.refused["nobody@example.test"].code == 550
    (raw,) = mta.wait_for_messages("bob@example.test")
    assert raw.replace(b"\r\n", b"\n").endswith(
        BODY.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    )


def test_late_reply_after_bdat_is_outcome_unknown_and_never_resent(
    chunking_server: FakeSmtpServer,
) -> None:
    import time

    with DeliveryClient.own_smtp(USER, chunking_server.smtp_settings(data_timeout=0.5)) as client:
        client.send(DocumentEmail(to="a@example.test", subject="first", body="b"))
        chunking_server.stall_seconds = 1.5  # the server answers only after our patience ends
        with pytest.raises(DeliveryOutcomeUnknown) as info:
            client.send(DocumentEmail(to="a@example.test", subject="second", body="b"))
        assert info.value.diagnosis.category == Category.OUTCOME_UNKNOWN
        assert not info.value.temporary
    time.sleep(2)  # give a resend (there must be none) time to arrive
    subjects = [m.message["Subject"] for m in chunking_server.messages]
    assert subjects.count("second") <= 1  # never sent twice
    assert chunking_server.connections == 1  # no second connection for a retry


def test_explicit_421_with_bdat_is_a_temporary_refusal(chunking_server: FakeSmtpServer) -> None:
    chunking_server.close_after = 0
    with DeliveryClient.own_smtp(USER, chunking_server.smtp_settings()) as client:
        with pytest.raises(ConnectError) as info:
            client.send(DocumentEmail(to="a@example.test", subject="s", body="b"))
    assert info.value.temporary
    assert info.value.diagnosis.category == Category.SERVER_UNAVAILABLE
    assert chunking_server.messages == []


def test_a_bad_message_does_not_cost_the_connection(chunking_server: FakeSmtpServer) -> None:
    from mailbridge import MessageError

    with DeliveryClient.own_smtp(USER, chunking_server.smtp_settings()) as client:
        client.send(DocumentEmail(to="a@example.test", subject="s", body="b"))
        with pytest.raises(MessageError):
            client.transport.deliver(  # type: ignore[attr-defined]
                client.prepare(DocumentEmail(to="a@example.test", subject="s", body="b")).__class__(
                    b"Subject: x\r\n\r\n" + b"x" * 2000, USER, ("a@example.test",), "<i@d>"
                )
            )
        client.send(DocumentEmail(to="b@example.test", subject="s", body="b"))
    assert chunking_server.connections == 1
