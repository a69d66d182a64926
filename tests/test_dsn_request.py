"""RFC 3461: bounces are requested with our envelope id only when the server offers DSN."""

from __future__ import annotations

import asyncio

import pytest

from mailbridge import AsyncDeliveryClient, DeliveryClient, DocumentEmail, MessageError
from mailbridge.smtp._core import plan_attempt
from mailbridge.smtp._core._dsn import xtext
from mailbridge.testing import FakeSmtpServer

EMAIL = DocumentEmail(to="b+tag@customer.example", subject="Invoice", body="Attached.")


def test_xtext_escapes_plus_equals_and_non_printables() -> None:
    assert xtext("abc-42") == "abc-42"
    assert xtext("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+C3+A9"


@pytest.mark.parametrize("dsn", [True, False])
def test_sync_send_requests_dsn_only_when_offered(dsn: bool) -> None:
    with FakeSmtpServer(tls="none", dsn=dsn) as server:
        client = DeliveryClient.own_smtp("a@acme.example", smtp=server.smtp_settings())
        try:
            result = client.send(EMAIL)
        finally:
            client.close()
        (received,) = server.messages
    assert result.envelope_id is not None and len(result.envelope_id) == 32
    assert result.message is not None and result.message.envelope_id == result.envelope_id
    if dsn:
        assert received.mail_options[-2:] == ("RET=HDRS", f"ENVID={result.envelope_id}")
        assert received.rcpt_options == (
            "NOTIFY=FAILURE,DELAY",
            "ORCPT=rfc822;b+2Btag@customer.example",
        )
    else:
        assert not any(o.startswith(("RET=", "ENVID=")) for o in received.mail_options)
        assert received.rcpt_options == ()


def test_async_send_requests_dsn_like_the_sync_one() -> None:
    async def main(server: FakeSmtpServer) -> str | None:
        async with AsyncDeliveryClient.own_smtp(
            "a@acme.example", smtp=server.smtp_settings()
        ) as client:
            return (await client.send(EMAIL)).envelope_id

    with FakeSmtpServer(tls="none", dsn=True) as server:
        envelope_id = asyncio.run(main(server))
        (received,) = server.messages
    assert envelope_id and f"ENVID={envelope_id}" in received.mail_options
    assert "NOTIFY=FAILURE,DELAY" in received.rcpt_options


def test_plan_builds_the_parameters_into_every_command_and_the_log_view() -> None:
    extensions = {"DSN": "", "PIPELINING": "", "CHUNKING": ""}
    attempt = plan_attempt(
        extensions,
        "a@acme.example",
        ["x@c.example", "\u00fc@c.example"],
        b"S: x\r\n\r\nb\r\n",
        smtputf8=False,
        envelope_id="id=1",
    )
    assert attempt.mail.endswith(" RET=HDRS ENVID=id+3D1")
    assert (
        b"RCPT TO:<x@c.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x@c.example\r\n" in attempt.head
    )
    assert "RCPT TO:<\u00fc@c.example> NOTIFY=FAILURE,DELAY" in attempt.head_commands  # no ORCPT
    plain = plan_attempt({"PIPELINING": ""}, "a@acme.example", ["x@c.example"], b"b\r\n")
    assert b"NOTIFY" not in plain.head and b"ENVID" not in plain.head


def test_an_overlong_envelope_id_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="envelope_id"):
        plan_attempt({"DSN": ""}, "a@acme.example", ["x@c.example"], b"b\r\n", envelope_id="+" * 40)


def test_connections_take_an_envelope_id_sync_and_async() -> None:
    from mailbridge.smtp import AsyncSmtpConnection, SmtpConnection

    with FakeSmtpServer(tls="none", dsn=True) as server:
        settings = server.smtp_settings()
        connection = SmtpConnection.open(settings)
        try:
            connection.send(
                "a@acme.example", ["x@c.example"], b"S: 1\r\n\r\nb\r\n", envelope_id="s1"
            )
        finally:
            connection.quit()

        async def main() -> None:
            connection = await AsyncSmtpConnection.open(settings)
            try:
                await connection.send(
                    "a@acme.example", ["x@c.example"], b"S: 2\r\n\r\nb\r\n", envelope_id="a1"
                )
            finally:
                await connection.quit()

        asyncio.run(main())
        sync, async_ = server.messages
    assert "ENVID=s1" in sync.mail_options and "ENVID=a1" in async_.mail_options
    assert (
        sync.rcpt_options
        == async_.rcpt_options
        == (
            "NOTIFY=FAILURE,DELAY",
            "ORCPT=rfc822;x@c.example",
        )
    )


def test_an_empty_envelope_id_is_a_message_error_not_a_refused_mail_command() -> None:
    with pytest.raises(MessageError, match="envelope_id"):
        plan_attempt({"DSN": ""}, "a@acme.example", ["x@c.example"], b"b\r\n", envelope_id="")
