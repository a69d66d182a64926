"""The SMTP layer against an in-process aiosmtpd server (FakeSmtpServer)."""

from __future__ import annotations

import email
import email.policy
import logging
import threading

import pytest

from mailbridge import (
    Attachment,
    AuthenticationError,
    Category,
    ConnectError,
    DeliveryClient,
    DeliveryOutcomeUnknown,
    DocumentEmail,
    MessageError,
    MessageRejected,
    RecipientsRefused,
    SenderRefused,
    SmtpSettings,
    TlsError,
    UnsupportedByServer,
)
from mailbridge.smtp import SmtpConnection
from mailbridge.smtp.wire import Channel
from mailbridge.testing import FakeSmtpServer

from .conftest import INVOICE_PDF, PASSWORD, USER


def _invoice(**fields: object) -> DocumentEmail:
    values: dict[str, object] = {
        "to": "customer@example.test",
        "subject": "Invoice {number}",
        "body": "Dear customer,\nplease find invoice {number} attached.\n",
        "placeholders": {"number": "2026-001"},
        "attachments": [Attachment("invoice-2026-001.pdf", INVOICE_PDF)],
    }
    values.update(fields)
    return DocumentEmail(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_send_over_tls_with_auth(tls: str) -> None:
    with FakeSmtpServer(tls=tls, users={USER: PASSWORD}) as server:  # type: ignore[arg-type]
        with DeliveryClient.own_smtp(
            USER, server.smtp_settings(), display_name="Acme GmbH"
        ) as client:
            result = client.send(_invoice())
        (received,) = server.messages
    assert result.accepted == ("customer@example.test",)
    assert result.refused == {}
    assert result.ok
    assert received.tls and received.user == USER
    assert received.mail_from == USER
    message = received.message
    assert message["Subject"] == "Invoice 2026-001"
    assert message["From"] == f"Acme GmbH <{USER}>"
    assert message["Message-ID"] == result.message_id
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content() == INVOICE_PDF


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_mechanisms(smtp_server: FakeSmtpServer, mechanism: str) -> None:
    with DeliveryClient.own_smtp(
        USER, smtp_server.smtp_settings(auth_mechanism=mechanism)
    ) as client:
        client.send(_invoice())
    assert smtp_server.messages[0].user == USER


def test_xoauth2() -> None:
    with FakeSmtpServer(tokens={USER: "ya29.token"}) as server:
        settings = server.smtp_settings(
            username=USER, oauth2_token=lambda: "ya29.token", auth_mechanism="XOAUTH2"
        )
        with DeliveryClient.own_smtp(USER, settings) as client:
            client.send(_invoice())
        assert server.messages[0].user == USER

        bad = server.smtp_settings(
            username=USER, oauth2_token=lambda: "expired", auth_mechanism="XOAUTH2"
        )
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(bad)
    assert info.value.reply is not None and info.value.reply.code == 535
    assert "status=401" in info.value.reply.text  # the server's JSON error, decoded
    assert "expired" not in str(info.value)


def test_wrong_password_is_diagnosed(smtp_server: FakeSmtpServer) -> None:
    with pytest.raises(AuthenticationError) as info:
        SmtpConnection.open(smtp_server.smtp_settings(username=USER, password="wrong-one"))
    error = info.value
    assert error.reply is not None and error.reply.code == 535
    assert error.diagnosis.category == Category.AUTH_FAILED
    assert any("app password" in hint for hint in error.diagnosis.hints)
    assert not error.temporary


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        (
            "534 5.7.9 Application-specific password required. For more information, go to "
            "https://support.google.com/mail/?p=InvalidSecondFactor",
            Category.APP_PASSWORD_REQUIRED,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for "
            "the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
            Category.AUTH_DISABLED,
        ),
    ],
)
def test_provider_replies_are_recognised(
    smtp_server: FakeSmtpServer, reply: str, category: Category
) -> None:
    smtp_server.login_reply = reply
    with pytest.raises(AuthenticationError) as info:
        SmtpConnection.open(smtp_server.smtp_settings())
    assert info.value.diagnosis.category == category


def test_partial_refusal_still_delivers_to_the_others(smtp_server: FakeSmtpServer) -> None:
    smtp_server.refuse_recipient("gone@example.test", "550 5.1.1 <gone@example.test>: unknown")
    smtp_server.refuse_recipient("full@example.test", "452 4.2.2 Mailbox full")
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        result = client.send(
            _invoice(
                to="a@example.test, gone@example.test", cc="full@example.test", bcc="b@example.test"
            )
        )
    assert result.accepted == ("a@example.test", "b@example.test")
    assert set(result.refused) == {"gone@example.test", "full@example.test"}
    assert result.refused["gone@example.test"].enhanced_status == "5.1.1"
    assert result.refused["full@example.test"].is_temporary
    assert not result.ok
    assert smtp_server.messages[0].rcpt_tos == ("a@example.test", "b@example.test")


@pytest.mark.parametrize("pipelining", [True, False])
def test_all_refused_is_an_error_and_nothing_is_sent(pipelining: bool) -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, pipelining=pipelining) as server:
        server.refuse_recipient("x@example.test")
        server.refuse_recipient("y@example.test", "450 4.7.1 Greylisted, try later")
        with DeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
            with pytest.raises(RecipientsRefused) as info:
                client.send(_invoice(to="x@example.test, y@example.test"))
            assert set(info.value.refused) == {"x@example.test", "y@example.test"}
            assert not info.value.temporary  # one permanent refusal: retrying cannot help all
            assert info.value.diagnosis.category == Category.RECIPIENT_REFUSED
            # the session is still usable afterwards
            assert client.send(_invoice(to="z@example.test")).accepted == ("z@example.test",)
        assert [m.rcpt_tos for m in server.messages] == [("z@example.test",)]


def test_sender_refused(smtp_server: FakeSmtpServer) -> None:
    smtp_server.sender_reply = "553 5.7.1 Sender address rejected: not owned by user"
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(SenderRefused) as info:
            client.send(_invoice())
    assert info.value.reply is not None and info.value.reply.code == 553
    assert info.value.diagnosis.category == Category.SENDER_REFUSED
    assert smtp_server.messages == []


def test_temporary_data_rejection(smtp_server: FakeSmtpServer) -> None:
    smtp_server.data_reply = "451 4.3.0 Temporary local problem"
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(MessageRejected) as info:
            client.send(_invoice())
    assert info.value.temporary


def test_pipelining_sends_envelope_and_data_in_one_write(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    original = Channel.write

    def counting_write(self: Channel, data: bytes, timeout: float) -> None:
        writes.append(data)
        original(self, data, timeout)

    connection = SmtpConnection.open(smtp_server.smtp_settings())
    try:
        monkeypatch.setattr(Channel, "write", counting_write)
        data = b"Subject: t\r\n\r\nhello\r\n"
        recipients = ["a@example.test", "b@example.test", "c@example.test"]
        connection.send(USER, recipients, data)
        assert len(writes) == 2  # envelope + DATA in one write, then the message
        assert writes[0].count(b"RCPT TO:") == 3 and writes[0].endswith(b"DATA\r\n")
        smtp_server.refuse_recipient("b@example.test")
        writes.clear()
        result = connection.send(USER, recipients, data)
        assert len(writes) == 2
        assert result.accepted == ("a@example.test", "c@example.test")
        assert list(result.refused) == ["b@example.test"]
    finally:
        connection.quit()


def test_without_pipelining_falls_back_to_lock_step(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, pipelining=False) as server:
        connection = SmtpConnection.open(server.smtp_settings())
        writes: list[bytes] = []
        original = Channel.write
        monkeypatch.setattr(
            Channel,
            "write",
            lambda self, data, timeout: (writes.append(data), original(self, data, timeout)),
        )
        try:
            connection.send(USER, ["a@example.test", "b@example.test"], b"Subject: t\r\n\r\nx\r\n")
        finally:
            connection.quit()
    assert [w.split(b":")[0] for w in writes[:4]] == [
        b"MAIL FROM",
        b"RCPT TO",
        b"RCPT TO",
        b"DATA\r\n",
    ]


def test_starttls_required_but_not_offered() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, omit_starttls=True) as server:
        with pytest.raises(TlsError) as info:
            SmtpConnection.open(server.smtp_settings())
        assert info.value.diagnosis.category == Category.STARTTLS_NOT_OFFERED
        assert server.messages == []


def test_certificate_for_another_name_is_refused() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, certificate_hostnames=["other.example"]) as server:
        with pytest.raises(TlsError) as info:
            SmtpConnection.open(server.smtp_settings())
    assert info.value.diagnosis.category == Category.CERTIFICATE_NAME_MISMATCH


def test_untrusted_certificate_is_refused() -> None:
    with FakeSmtpServer(tls="implicit", users={USER: PASSWORD}) as server:
        with pytest.raises(TlsError) as info:
            SmtpConnection.open(server.smtp_settings(ca_file=None))  # system trust store only
    assert info.value.diagnosis.category == Category.CERTIFICATE_INVALID


def test_password_never_sent_without_tls_unless_allowed() -> None:
    with FakeSmtpServer(tls="none", users={USER: PASSWORD}) as server:
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(server.smtp_settings())
        assert info.value.diagnosis.category == Category.AUTH_REQUIRES_TLS
        connection = SmtpConnection.open(server.smtp_settings(allow_plaintext_auth=True))
        assert connection.authenticated
        connection.quit()


def test_unsupported_mechanism() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, auth_mechanisms=["PLAIN", "LOGIN"]) as server:
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(server.smtp_settings(username=USER, oauth2_token=lambda: "t"))
        assert info.value.diagnosis.category == Category.AUTH_MECHANISM_UNSUPPORTED
        assert "PLAIN" in str(info.value)
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(server.smtp_settings(auth_mechanism="CRAM-MD5"))
        assert info.value.diagnosis.category == Category.AUTH_MECHANISM_UNSUPPORTED


def test_no_auth_local_relay() -> None:
    with FakeSmtpServer(tls="none") as server:
        settings = SmtpSettings(server.host, server.port, "none")
        with DeliveryClient.own_smtp("app@acme.example", settings) as client:
            client.send(_invoice())
        assert server.messages[0].user is None and not server.messages[0].tls


def test_smtputf8(smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        client.send(_invoice(to="jürgen@example.test"))
    received = smtp_server.messages[0]
    assert "SMTPUTF8" in received.mail_options
    assert received.rcpt_tos == ("jürgen@example.test",)


def test_smtputf8_needed_but_not_offered() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, smtputf8=False) as server:
        with DeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
            with pytest.raises(UnsupportedByServer) as info:
                client.send(_invoice(to="jürgen@example.test"))
        assert info.value.diagnosis.category == Category.SMTPUTF8_UNSUPPORTED
        assert server.messages == []


def test_message_larger_than_size_limit() -> None:
    with FakeSmtpServer(users={USER: PASSWORD}, data_size_limit=500) as server:
        with DeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
            with pytest.raises(MessageRejected) as info:
                client.send(_invoice())
    assert info.value.diagnosis.category == Category.MESSAGE_TOO_LARGE


def test_421_reconnects_for_the_next_message(smtp_server: FakeSmtpServer) -> None:
    smtp_server.close_after = 1
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        client.send(_invoice(to="a@example.test"))
        with pytest.raises(ConnectError) as info:
            client.send(_invoice(to="b@example.test"))  # fresh connection also gets 421
        assert info.value.temporary and info.value.reply is not None
        assert info.value.reply.code == 421
        smtp_server.close_after = None
        client.send(_invoice(to="c@example.test"))
    assert [m.rcpt_tos for m in smtp_server.messages] == [("a@example.test",), ("c@example.test",)]


def test_stale_connection_is_replaced_transparently(smtp_server: FakeSmtpServer) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        client.send(_invoice(to="a@example.test"))
        first_connections = smtp_server.connections
        smtp_server.drop_connections()  # the server's idle time-out ends the session
        result = client.send(_invoice(to="b@example.test"))
    assert result.accepted == ("b@example.test",)
    assert smtp_server.connections == first_connections + 1


def test_dropped_connection_after_data_is_not_retried(smtp_server: FakeSmtpServer) -> None:
    smtp_server.drop_before_data_reply = True
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(DeliveryOutcomeUnknown) as info:
            client.send(_invoice())
    assert info.value.diagnosis.category == Category.OUTCOME_UNKNOWN
    assert not info.value.temporary  # retrying could deliver it twice
    assert smtp_server.connections == 1  # no second attempt: the message may have arrived


def test_stalled_server_times_out(smtp_server: FakeSmtpServer) -> None:
    smtp_server.stall_seconds = 3
    settings = smtp_server.smtp_settings(command_timeout=0.5)
    with DeliveryClient.own_smtp(USER, settings) as client:
        with pytest.raises(ConnectError) as info:
            client.send(_invoice())
    assert info.value.diagnosis.category == Category.TIMEOUT
    assert info.value.temporary


def test_preview_is_exactly_what_is_sent(smtp_server: FakeSmtpServer) -> None:
    body = "Totals:\n.\n..\nend\n" + "long line " * 200
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        prepared = client.prepare(_invoice(body=body))
        assert client.preview(prepared) == prepared.data
        client.send(prepared)
    assert smtp_server.messages[0].data == prepared.data
    parsed = email.message_from_bytes(prepared.data, policy=email.policy.default)
    text = parsed.get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == body + "\n"


def test_secrets_never_in_logs_or_errors(
    smtp_server: FakeSmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
        with DeliveryClient.own_smtp(
            USER, smtp_server.smtp_settings(auth_mechanism=mechanism)
        ) as client:
            client.send(_invoice())
            texts.append(repr(client))
            texts.append(str(client.test_connection()))
        try:
            SmtpConnection.open(
                smtp_server.smtp_settings(
                    username=USER, password=PASSWORD + "x", auth_mechanism=mechanism
                )
            )
        except AuthenticationError as exc:
            texts.extend([str(exc), repr(exc), str(exc.diagnosis)])
    texts.append(caplog.text)
    texts.append(repr(smtp_server.smtp_settings()))
    joined = "\n".join(texts)
    assert "C: AUTH PLAIN ********" in caplog.text  # the conversation was logged...
    for secret in (
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ):
        assert secret not in joined  # ...without the secret in any form


def test_client_is_thread_safe(smtp_server: FakeSmtpServer) -> None:
    errors: list[BaseException] = []
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:

        def worker(n: int) -> None:
            try:
                for i in range(5):
                    client.send(_invoice(to=f"t{n}-{i}@example.test"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert len(smtp_server.messages) == 20


def test_closed_client_refuses_to_send(smtp_server: FakeSmtpServer) -> None:
    client = DeliveryClient.own_smtp(USER, smtp_server.smtp_settings())
    client.close()
    with pytest.raises(Exception, match="closed"):
        client.send(_invoice())


class _Interrupted(BaseException):
    """Stands in for a task time limit or KeyboardInterrupt."""


def test_interrupted_transaction_never_leaks_into_the_next(
    smtp_server: FakeSmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        client.send(_invoice(to="warmup@example.test"))
        original = SmtpConnection.read_reply
        calls = {"n": 0}

        def interrupt_once(self: SmtpConnection, what: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 1:
                raise _Interrupted
            return original(self, what, timeout)

        monkeypatch.setattr(SmtpConnection, "read_reply", interrupt_once)
        with pytest.raises(_Interrupted):
            client.send(_invoice(to="alice@example.test", subject="For Alice"))
        result = client.send(_invoice(to="bob@example.test", subject="For Bob"))
    assert result.accepted == ("bob@example.test",)
    bob = [m for m in smtp_server.messages if "bob@example.test" in m.rcpt_tos]
    assert len(bob) == 1
    assert bob[0].rcpt_tos == ("bob@example.test",)
    assert bob[0].message["Subject"] == "For Bob"


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("a@x.test> RET=FULL", "b@x.test"),
        ("a@x.test", "b@x.test> NOTIFY=NEVER"),
        ("a@x.test", "b@x.test\tX"),
    ],
)
def test_envelope_parameters_cannot_be_smuggled(
    smtp_server: FakeSmtpServer, sender: str, recipient: str
) -> None:
    connection = SmtpConnection.open(smtp_server.smtp_settings())
    try:
        with pytest.raises(MessageError):
            connection.send(sender, [recipient], b"Subject: x\r\n\r\nx\r\n")
    finally:
        connection.quit()
    assert smtp_server.messages == []


def test_failing_token_provider_is_an_authentication_error() -> None:
    def revoked() -> str:
        raise RuntimeError("refresh token rt-SECRET-123 revoked")

    with FakeSmtpServer(tokens={USER: "t"}) as server:
        with pytest.raises(AuthenticationError) as info:
            SmtpConnection.open(server.smtp_settings(username=USER, oauth2_token=revoked))
    assert "rt-SECRET-123" not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("530 5.7.0 Must issue a STARTTLS command first", Category.AUTH_REQUIRES_TLS),
        ("530 5.7.0 Authentication required", Category.AUTH_REQUIRED),
        ("550 5.7.57 Client not authenticated to send mail", Category.AUTH_REQUIRED),
        ("553 5.7.1 Sender address rejected: not owned by user", Category.SENDER_REFUSED),
    ],
)
def test_sender_refusals_are_told_apart(
    smtp_server: FakeSmtpServer, reply: str, category: Category
) -> None:
    smtp_server.sender_reply = reply
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(SenderRefused) as info:
            client.send(_invoice())
    assert info.value.diagnosis.category == category


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("552 5.3.4 Message size exceeds fixed limit", Category.MESSAGE_TOO_LARGE),
        ("552 5.2.2 Mailbox full", Category.MESSAGE_REJECTED),
        ("552 5.7.0 Message blocked for security reasons", Category.MESSAGE_REJECTED),
        ("554 5.7.1 Spam detected", Category.MESSAGE_REJECTED),
    ],
)
def test_data_refusals_are_told_apart(
    smtp_server: FakeSmtpServer, reply: str, category: Category
) -> None:
    smtp_server.data_reply = reply
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(MessageRejected) as info:
            client.send(_invoice())
    assert info.value.diagnosis.category == category


def test_relay_denied_gets_relay_advice(smtp_server: FakeSmtpServer) -> None:
    smtp_server.refuse_recipient(
        "x@elsewhere.example", "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    )
    with DeliveryClient.own_smtp(USER, smtp_server.smtp_settings()) as client:
        with pytest.raises(RecipientsRefused) as info:
            client.send(_invoice(to="x@elsewhere.example"))
    assert "submission port" in info.value.diagnosis.hints[0]
