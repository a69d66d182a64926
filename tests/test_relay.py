"""The default relay mode: the platform's relay and address, the tenant's name and Reply-To."""

from __future__ import annotations

import pytest

from mailbridge import ConfigurationError, DeliveryClient, DocumentEmail, SmtpSettings
from mailbridge._identity import PlatformRelay
from mailbridge.testing import FakeSmtpServer
from mailbridge.testing.realservers import RealMailServers


def _relay(settings: SmtpSettings, **changes: object) -> PlatformRelay:
    values: dict[str, object] = {
        "smtp": settings,
        "app_name": "Example App",
        "noreply_address": "noreply@app.example",
        "bounce_address": "bounces@app.example",
    }
    values.update(changes)
    return PlatformRelay(**values)  # type: ignore[arg-type]


def test_relay_addressing(smtp_server: FakeSmtpServer) -> None:
    relay = _relay(smtp_server.smtp_settings())
    with DeliveryClient.relay("billing@acme.example", relay, display_name="Acme GmbH") as client:
        result = client.send(DocumentEmail(to="jane@customer.example", subject="s", body="b"))
    (received,) = smtp_server.messages
    message = received.message
    assert message["From"] == "Acme GmbH via Example App <noreply@app.example>"
    assert message["Reply-To"] == "Acme GmbH <billing@acme.example>"
    assert received.mail_from == "bounces@app.example"
    assert result.message_id.endswith("@app.example>")
    assert result.envelope_sender == "bounces@app.example"


def test_from_field_means_reply_to_in_relay_mode(smtp_server: FakeSmtpServer) -> None:
    relay = _relay(smtp_server.smtp_settings())
    with DeliveryClient.relay("billing@acme.example", relay, display_name="Acme") as client:
        client.send(
            DocumentEmail(
                to="jane@customer.example",
                subject="s",
                body="b",
                from_override="Sales <sales@acme.example>",
            )
        )
    message = smtp_server.messages[0].message
    assert message["Reply-To"] == "Sales <sales@acme.example>"
    assert message["From"] == "Acme via Example App <noreply@app.example>"


def test_verp_tags_each_message(smtp_server: FakeSmtpServer) -> None:
    relay = _relay(smtp_server.smtp_settings(), verp=True)
    with DeliveryClient.relay("billing@acme.example", relay) as client:
        first = client.send(DocumentEmail(to="a@customer.example", subject="s", body="b"))
        second = client.send(DocumentEmail(to="b@customer.example", subject="s", body="b"))
    tags = [m.mail_from for m in smtp_server.messages]
    assert tags[0] == f"bounces+{relay.bounce_token(first.message_id)}@app.example"
    assert tags[1] == f"bounces+{relay.bounce_token(second.message_id)}@app.example"
    assert tags[0] != tags[1]
    # without a display name the tenant's address is shown first
    assert (
        smtp_server.messages[0]
        .message["From"]
        .startswith('"billing@acme.example via Example App" <')
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"display_name_pattern": "{tenant} via {company}"}, "display_name_pattern"),
        ({"display_name_pattern": "{tenant}\r\nBcc: x@evil.example"}, "display_name_pattern"),
        ({"app_name": ""}, "app_name"),
        ({"noreply_address": "not an address"}, "noreply_address"),
    ],
)
def test_relay_settings_are_validated(
    smtp_server: FakeSmtpServer, changes: dict[str, object], field: str
) -> None:
    with pytest.raises((ConfigurationError, ValueError)) as info:
        _relay(smtp_server.smtp_settings(), **changes)
    assert getattr(info.value, "field", None) == field


@pytest.mark.realserver
def test_relay_end_to_end_through_postfix(real_servers: RealMailServers) -> None:
    real_servers.clear_mailboxes()
    settings = SmtpSettings(
        real_servers.host,
        real_servers.submission_port,
        "starttls",
        username="alice@example.test",
        password="alice-Secret-1",
        ca_file=real_servers.ca_file,
    )
    relay = _relay(
        settings,
        noreply_address="noreply@example.test",
        bounce_address="bounces@example.test",
        verp=True,
    )
    with DeliveryClient.relay("billing@acme.example", relay, display_name="Acme GmbH") as client:
        result = client.send(DocumentEmail(to="bob@example.test", subject="Invoice 5", body="b"))
    (raw,) = real_servers.wait_for_messages("bob@example.test")
    header = raw.split(b"\n\n", 1)[0].decode()
    assert f"Return-Path: <bounces+{relay.bounce_token(result.message_id)}@example.test>" in header
    assert "From: Acme GmbH via Example App <noreply@example.test>" in header
    assert "Reply-To: Acme GmbH <billing@acme.example>" in header
