from __future__ import annotations

import pickle
import ssl

import pytest

from mailbridge import ConfigurationError, ImapSettings, Secret, Security, SmtpSettings


def test_security_parse_accepts_form_labels() -> None:
    assert Security.parse("SSL/TLS") is Security.IMPLICIT_TLS
    assert Security.parse("starttls") is Security.STARTTLS
    assert Security.parse(Security.NONE) is Security.NONE
    with pytest.raises(ConfigurationError, match="security: unknown security mode 'tls1'"):
        Security.parse("tls1")


@pytest.mark.parametrize("port", [0, 65536, -1, True, "587"])
def test_port_must_be_a_port_number(port: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        SmtpSettings("smtp.example.com", port, Security.STARTTLS)  # type: ignore[arg-type]
    assert info.value.field == "port"


@pytest.mark.parametrize("host", ["", "  ", "smtp example.com", "http://smtp.example.com"])
def test_host_must_be_a_host_name(host: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SmtpSettings(host, 587, Security.STARTTLS)
    assert info.value.field == "host"


def test_starttls_on_465_is_allowed() -> None:
    assert SmtpSettings("smtp.example.com", 465, "starttls").security is Security.STARTTLS


def test_timeouts_are_bounded_by_rfc5321() -> None:
    with pytest.raises(ConfigurationError, match="command_timeout: 301 s is longer"):
        SmtpSettings("h.example", 587, "starttls", command_timeout=301)
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        SmtpSettings("h.example", 587, "starttls", connect_timeout=0)
    assert SmtpSettings("h.example", 587, "starttls", data_timeout=600).data_timeout == 600


def test_credentials_come_in_pairs() -> None:
    with pytest.raises(ConfigurationError, match="password: a user name needs"):
        SmtpSettings("h.example", 587, "starttls", username="u")
    with pytest.raises(ConfigurationError, match="username: a password"):
        SmtpSettings("h.example", 587, "starttls", password="p")
    with pytest.raises(ConfigurationError, match="either a password or an OAuth2"):
        SmtpSettings(
            "h.example", 587, "starttls", username="u", password="p", oauth2_token=lambda: "t"
        )


def test_ca_file_and_context_are_exclusive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigurationError, match="ca_file: give either"):
        SmtpSettings(
            "h.example", 587, "starttls", ca_file=ca, ssl_context=ssl.create_default_context()
        )
    with pytest.raises(ConfigurationError, match="is not a readable file"):
        SmtpSettings("h.example", 587, "starttls", ca_file=tmp_path / "missing.pem")


def test_unknown_auth_mechanism() -> None:
    with pytest.raises(ConfigurationError, match="auth_mechanism: 'NTLM'"):
        SmtpSettings("h.example", 587, "starttls", auth_mechanism="ntlm")


def test_secret_never_shows() -> None:
    settings = SmtpSettings("h.example", 587, "starttls", username="u", password="hunter2-xyz")
    for text in (repr(settings), str(settings), f"{settings}", repr(settings.password)):
        assert "hunter2-xyz" not in text
    assert settings.password is not None
    assert settings.password.reveal() == "hunter2-xyz"
    with pytest.raises(TypeError):
        pickle.dumps(Secret("hunter2-xyz"))


def test_default_tls_context_verifies() -> None:
    context = SmtpSettings("h.example", 465, "implicit_tls").create_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_imap_settings_fields() -> None:
    imap = ImapSettings(
        "imap.example.com", 993, "ssl", username="u", password="pw-imap-1", folder="Sent"
    )
    assert imap.security is Security.IMPLICIT_TLS
    assert "pw-imap-1" not in repr(imap)


@pytest.mark.parametrize("name", ["client.example", "[192.0.2.1]", "[IPv6:2001:db8::1]"])
def test_local_hostname_accepts_names_and_literals(name: str) -> None:
    assert SmtpSettings("h.example", 587, "starttls", local_hostname=name).local_hostname == name


@pytest.mark.parametrize("name", ["client\x00", "two words", "a_b.example", "[not-an-ip]"])
def test_local_hostname_refuses_garbage(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SmtpSettings("h.example", 587, "starttls", local_hostname=name)
    assert info.value.field == "local_hostname"


def test_errors_survive_pickling() -> None:
    from mailbridge import (
        Category,
        ConnectError,
        Diagnosis,
        InvalidAddress,
        MissingPlaceholder,
        RecipientsRefused,
        SmtpReply,
    )

    diagnosis = Diagnosis(Category.TIMEOUT, "slow", ("wait",))
    reply = SmtpReply(550, "5.1.1", "unknown")
    errors = [
        ConfigurationError("port", "bad"),
        InvalidAddress("to", "x", "no @"),
        MissingPlaceholder("subject", "number"),
        ConnectError("timed out", diagnosis=diagnosis, temporary=True),
        RecipientsRefused("all refused", refused={"a@x.example": reply}, diagnosis=diagnosis),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert copy.__dict__ == error.__dict__
