"""DKIM signing in SPF-imitation mode: the signature validates against the published key."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailbridge import ConfigurationError, DeliveryClient, DocumentEmail, PlatformRelay
from mailbridge.dnsauth._dkim import DkimSigner
from mailbridge.testing import FakeDnsServer, FakeSmtpServer


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _verify(message: bytes, record: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"app1._domainkey.tenant.example."
        return record

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


@pytest.mark.dns_server(
    zones={
        "tenant.example": {"@": {"TXT": '"v=spf1 include:spf.app.example -all"'}},
        "app.example": {"spf": {"TXT": '"v=spf1 ip4:127.0.0.1 -all"'}},
    }
)
def test_spf_imitation_messages_are_signed_and_verify(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer, key_pair: tuple[str, bytes]
) -> None:
    pem, record = key_pair
    signer = DkimSigner("tenant.example", "app1", pem)
    assert "BEGIN" not in repr(signer)
    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=("127.0.0.1",),
    )
    with DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, "Acme", resolver=dns_server.resolver(), dkim=signer
    ) as client:
        result = client.send(
            DocumentEmail(to="jane@customer.example", subject="Invoice", body="Grüße\n.\nend")
        )
    assert result.mode == "spf_imitation"
    received = smtp_server.messages[0].data
    assert received.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert b"d=tenant.example" in received and b"s=app1" in received
    assert _verify(received, record)
    tampered = received.replace(b"Invoice", b"Invoize")
    assert not _verify(tampered, record)


@pytest.mark.dns_server(zones={"tenant.example": {"@": {"TXT": '"v=spf1 -all"'}}})
def test_relay_fallback_is_not_signed_with_the_tenant_key(
    smtp_server: FakeSmtpServer, dns_server: FakeDnsServer, key_pair: tuple[str, bytes]
) -> None:
    relay = PlatformRelay(
        smtp=smtp_server.smtp_settings(),
        app_name="Example App",
        noreply_address="noreply@app.example",
        bounce_address="bounces@app.example",
        sending_ips=("127.0.0.1",),
    )
    signer = DkimSigner("tenant.example", "app1", key_pair[0])
    with DeliveryClient.spf_imitation(
        "billing@tenant.example", relay, resolver=dns_server.resolver(), dkim=signer
    ) as client:
        assert client.send(DocumentEmail(to="j@customer.example", subject="s", body="b")).mode == (
            "relay"
        )
    assert not smtp_server.messages[0].data.startswith(b"DKIM-Signature")


def test_signer_needs_a_pem_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        DkimSigner("tenant.example", "app1", "not a key")
    assert info.value.field == "private_key"
