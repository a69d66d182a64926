"""parse_autoconfig(): Thunderbird clientConfig v1.1 documents, real-world quirks, hostile input."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge import Security
from mailbridge.errors import MailbridgeError
from mailbridge.providers._autoconfig import (
    MAX_DOCUMENT_SIZE,
    AutoconfigCandidate,
    AutoconfigError,
    OAuth2Config,
    parse_autoconfig,
)

CORPUS = Path(__file__).parent / "autoconfig_corpus"
EMAIL = "Jana.Berg@kunde.example"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def servers(candidates: list[AutoconfigCandidate]) -> list[tuple[str, str, int, Security]]:
    return [(c.protocol, c.host, c.port, c.security) for c in candidates]


def test_big_provider() -> None:
    candidates = parse_autoconfig(corpus("big_provider.xml"), EMAIL)
    assert servers(candidates) == [
        ("imap", "imap.postwerk.example", 993, Security.IMPLICIT_TLS),
        ("pop3", "pop.postwerk.example", 995, Security.IMPLICIT_TLS),
        ("smtp", "smtp.postwerk.example", 465, Security.IMPLICIT_TLS),
        ("smtp", "smtp.postwerk.example", 587, Security.STARTTLS),
    ]
    oauth2 = OAuth2Config(
        issuer="login.postwerk.example",
        scopes=("https://mail.postwerk.example/", "offline_access"),
        auth_url="https://login.postwerk.example/oauth2/authorize",
        token_url="https://login.postwerk.example/oauth2/token",
    )
    for candidate in candidates:
        assert candidate.username == EMAIL
        assert candidate.auth_methods == ("oauth2", "password")
        assert candidate.provider_id == "postwerk.example"
        assert candidate.display_name == "Postwerk Mail"
        assert candidate.documentation == (
            "https://help.postwerk.example/mail-clients",
            "https://help.postwerk.example/app-passwords",
        )
        assert candidate.oauth2 == oauth2


def test_small_isp_uses_the_local_part() -> None:
    candidates = parse_autoconfig(corpus("small_isp_localpart.xml"), EMAIL)
    assert servers(candidates) == [
        ("pop3", "pop3.kabelnetz-nord.example", 995, Security.IMPLICIT_TLS),
        ("imap", "imap.kabelnetz-nord.example", 143, Security.STARTTLS),
        ("smtp", "mail.kabelnetz-nord.example", 587, Security.STARTTLS),
    ]
    assert {c.username for c in candidates} == {"Jana.Berg"}
    assert all(c.oauth2 is None and c.documentation == () for c in candidates)
    assert candidates[0].display_name == "Kabelnetz Nord"


def test_emailaddress_without_closing_percent_and_padded_values() -> None:
    imap, smtp = parse_autoconfig(corpus("emailaddress_quirk.xml"), EMAIL)
    assert (imap.protocol, imap.host, imap.port, imap.security) == (
        "imap",
        "imap.hanse-web.example",
        993,
        Security.IMPLICIT_TLS,
    )
    assert smtp.host == "smtp.hanse-web.example"  # the trailing dot of an FQDN is dropped
    assert smtp.port == 465
    assert imap.username == smtp.username == EMAIL
    assert imap.auth_methods == smtp.auth_methods == ("password",)
    assert imap.provider_id == "hanse-web.example"
    assert imap.display_name == "Hanse Web"


def test_emaildomain_in_hostnames() -> None:
    candidates = parse_autoconfig(corpus("domain_hostnames.xml"), "info@Bäckerei-Sonne.example")
    assert servers(candidates) == [
        ("imap", "imap.xn--bckerei-sonne-bfb.example", 993, Security.IMPLICIT_TLS),
        ("smtp", "smtp.xn--bckerei-sonne-bfb.example", 587, Security.STARTTLS),
        ("smtp", "xn--bckerei-sonne-bfb.example", 465, Security.IMPLICIT_TLS),
    ]
    # User names keep the Unicode domain, as the person typed it (normalised).
    assert {c.username for c in candidates} == {"info@bäckerei-sonne.example"}
    assert candidates[0].display_name == "bäckerei-sonne.example (hosted by Webhost Alpha)"


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("mail.example.org", "mail.example.org"),
        ("Mail.Example.ORG.", "mail.example.org"),
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8::25", "2001:db8::25"),
        ("mail.bücher.example", "mail.xn--bcher-kva.example"),
        ("fe80::1%eth0", None),
        ("10.1", None),
        ("mail.example.org/x", None),
        ("mail.example.org\\x", None),
        ("mail\texample.org", None),
        ("-mail.example.org", None),
        ("mail..example.org", None),
        ("[192.0.2.7]", None),
        ("user@mail.example.org", None),
        ("a" * 64 + ".example", None),
        ("", None),
    ],
)
def test_hostname_validation(hostname: str, expected: str | None) -> None:
    document = (
        "<clientConfig><emailProvider><outgoingServer type='smtp'>"
        f"<hostname>{hostname}</hostname><port>465</port><socketType>SSL</socketType>"
        "</outgoingServer><outgoingServer type='smtp'><hostname>fallback.example</hostname>"
        "<port>465</port><socketType>SSL</socketType></outgoingServer>"
        "</emailProvider></clientConfig>"
    )
    hosts = [c.host for c in parse_autoconfig(document, EMAIL)]
    assert hosts == ([expected] if expected else []) + ["fallback.example"]


def test_several_authentication_methods_and_client_ip() -> None:
    imap, relay, submission = parse_autoconfig(corpus("multi_auth_client_ip.xml"), EMAIL)
    # Unknown methods (NTLM, GSSAPI, TLS-client-cert) are left out; duplicates collapse.
    assert imap.auth_methods == ("password-encrypted", "password")
    assert (relay.host, relay.port, relay.security) == (
        "relay.firmennetz.example",
        25,
        Security.STARTTLS,
    )
    assert relay.auth_methods == ("client-ip", "none")
    assert relay.username is None
    assert submission.auth_methods == ("password-encrypted", "password")


def test_plain_socket_type_and_unknown_servers_skipped() -> None:
    pop3, smtp = parse_autoconfig(corpus("plain_socket.xml"), EMAIL)
    assert (pop3.protocol, pop3.host, pop3.port, pop3.security) == (
        "pop3",
        "pop.altpost.example",
        110,
        Security.NONE,
    )
    assert pop3.username is None
    # IMAP with an unknown socketType and the "exchange" server are skipped.
    assert (smtp.protocol, smtp.host, smtp.security) == ("smtp", "192.0.2.25", Security.NONE)
    assert smtp.username is None  # an empty <username/> counts as none
    assert smtp.auth_methods == ("none",)


def test_bad_hostnames_are_skipped() -> None:
    candidates = parse_autoconfig(corpus("bad_hostname.xml"), EMAIL)
    # Slashes, spaces, NEL, an @, a port in the host, port 99999, an unknown placeholder,
    # no host at all and a line separator in the user name: only the last server is left.
    assert servers(candidates) == [("smtp", "smtp.tricky.example", 465, Security.IMPLICIT_TLS)]
    assert candidates[0].username == EMAIL


@pytest.mark.parametrize(
    "name", ["billion_laughs.xml", "xxe_passwd.xml", "external_dtd.xml"], ids=str
)
def test_dtds_and_entities_are_refused(name: str) -> None:
    with pytest.raises(AutoconfigError, match="unsafe XML") as info:
        parse_autoconfig(corpus(name), EMAIL)
    assert "root:" not in str(info.value)


@pytest.fixture
def file_access() -> Iterator[list[tuple[str, Any]]]:
    """Records file opens and network use while the test runs (audit hooks stay installed)."""
    events: list[tuple[str, Any]] = []
    active = [True]

    def hook(event: str, args: Any) -> None:
        if active[0] and event in {"open", "urllib.Request", "socket.connect"}:
            events.append((event, args))

    sys.addaudithook(hook)
    yield events
    active[0] = False


def test_xxe_never_reads_the_file(tmp_path: Path, file_access: list[tuple[str, Any]]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CANARY")
    document = corpus("xxe_passwd.xml").replace(b"file:///etc/passwd", secret.as_uri().encode())
    file_access.clear()
    for variant in (document, document.decode()):
        with pytest.raises(AutoconfigError) as info:
            parse_autoconfig(variant, EMAIL)
        assert "TOP-SECRET-CANARY" not in str(info.value)
    opened = [str(args[0]) for event, args in file_access if event == "open"]
    assert not any("secret" in path or "passwd" in path for path in opened)
    assert not [event for event, _ in file_access if event != "open"]
    assert secret.read_text() == "TOP-SECRET-CANARY"  # and the hook does see reads:
    assert any(str(secret) in str(args[0]) for event, args in file_access if event == "open")


def test_oversized_document_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    # An otherwise valid document, padded past the limit (made here, not stored in git).
    valid = corpus("small_isp_localpart.xml")
    padding = b"<!-- " + b"padding " * (MAX_DOCUMENT_SIZE // 8 + 1) + b"-->\n"
    document = valid.replace(b"?>", b"?>\n" + padding, 1)
    assert len(document) > MAX_DOCUMENT_SIZE

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a document over the size limit")

    monkeypatch.setattr("defusedxml.ElementTree.fromstring", no_parsing)
    with pytest.raises(AutoconfigError, match="larger than"):
        parse_autoconfig(document, EMAIL)
    with pytest.raises(AutoconfigError, match="larger than"):
        parse_autoconfig(document.decode(), EMAIL)


def test_max_size_is_configurable() -> None:
    document = corpus("small_isp_localpart.xml")
    assert parse_autoconfig(document, EMAIL, max_size=len(document))
    with pytest.raises(AutoconfigError, match="larger than"):
        parse_autoconfig(document, EMAIL, max_size=len(document) - 1)
    # A str is measured in UTF-8 bytes, not characters.
    text = document.decode().replace("Kabelnetz Nord", "Kabelnetz Nörd")
    with pytest.raises(AutoconfigError, match="larger than"):
        parse_autoconfig(text, EMAIL, max_size=len(text))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("malformed.xml", "not well-formed"),
        ("wrong_root.xml", "not clientConfig"),
        ("no_provider.xml", "no emailProvider"),
    ],
)
def test_broken_documents(name: str, message: str) -> None:
    with pytest.raises(AutoconfigError, match=message):
        parse_autoconfig(corpus(name), EMAIL)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"\x00\x01\x02",
        b"not xml at all",
        b'<?xml version="1.0" encoding="x-no-such-codec"?><clientConfig/>',
        "<clientConfig>\ud800</clientConfig>",
        b"<clientConfig><emailProvider>&#1;</emailProvider></clientConfig>",
        b"<clientConfig/>",
        b"<clientConfig><emailProvider id='x'/></clientConfig>",
        b"<clientConfig><emailProvider><outgoingServer type='smtp'/></emailProvider>"
        b"</clientConfig>",
    ],
)
def test_bad_input_only_raises_autoconfig_error(document: bytes | str) -> None:
    with pytest.raises(AutoconfigError):
        parse_autoconfig(document, EMAIL)


def test_str_documents_and_utf16() -> None:
    text = corpus("big_provider.xml").decode()
    assert parse_autoconfig(text, EMAIL) == parse_autoconfig(text.encode(), EMAIL)
    utf16 = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert parse_autoconfig(utf16, EMAIL) == parse_autoconfig(text, EMAIL)


def test_namespaces_and_element_case_are_tolerated() -> None:
    document = (
        '<cc:clientConfig xmlns:cc="urn:example:clientconfig" version="1.1">'
        "<cc:emailProvider id='ns.example'><cc:OutgoingServer type='SMTP'>"
        "<cc:hostname>smtp.ns.example</cc:hostname><cc:port>587</cc:port>"
        "<cc:SocketType>starttls</cc:SocketType><cc:Authentication>OAuth2</cc:Authentication>"
        "</cc:OutgoingServer></cc:emailProvider></cc:clientConfig>"
    )
    (smtp,) = parse_autoconfig(document, EMAIL)
    assert (smtp.protocol, smtp.host, smtp.port, smtp.security) == (
        "smtp",
        "smtp.ns.example",
        587,
        Security.STARTTLS,
    )
    assert smtp.auth_methods == ("oauth2",)
    assert smtp.provider_id == "ns.example" and smtp.display_name is None


def test_unusable_oauth2_and_documentation_are_dropped() -> None:
    text = corpus("big_provider.xml").decode()
    text = text.replace("https://login.postwerk.example/oauth2/token", "http://login.example/t")
    text = text.replace(
        "https://help.postwerk.example/app-passwords", "javascript:alert(document.cookie)"
    )
    candidate = parse_autoconfig(text, EMAIL)[0]
    assert candidate.oauth2 is None  # a token URL without TLS is not used
    assert candidate.documentation == ("https://help.postwerk.example/mail-clients",)


def test_candidates_are_frozen() -> None:
    candidate = parse_autoconfig(corpus("small_isp_localpart.xml"), EMAIL)[0]
    with pytest.raises(AttributeError):
        candidate.host = "evil.example"  # type: ignore[misc]


@pytest.mark.parametrize(
    "email", ["", "jana", "jana@", "@kunde.example", "a b@kunde.example", "a@b@c.example"]
)
def test_email_must_be_an_address(email: str) -> None:
    with pytest.raises(AutoconfigError, match="not an email address"):
        parse_autoconfig(corpus("small_isp_localpart.xml"), email)


def test_email_is_checked_before_the_document() -> None:
    with pytest.raises(AutoconfigError, match="not an email address"):
        parse_autoconfig(b"<broken", "not-an-address")


def test_error_hierarchy() -> None:
    assert issubclass(AutoconfigError, MailbridgeError)
    assert issubclass(AutoconfigError, ValueError)


def test_document_type_is_checked() -> None:
    with pytest.raises(TypeError):
        parse_autoconfig(123, EMAIL)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_documents_only_raise_autoconfig_error(data: st.DataObject) -> None:
    document = bytearray(corpus("multi_auth_client_ip.xml"))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(document) - 1))
        document[position : position + 1] = data.draw(st.binary(max_size=3))
    try:
        candidates = parse_autoconfig(bytes(document), EMAIL)
    except AutoconfigError:
        return
    for candidate in candidates:
        assert candidate.protocol in {"smtp", "imap", "pop3"}
        assert 1 <= candidate.port <= 65535
        assert candidate.host.isascii() and candidate.host.isprintable()
        assert not any(char in candidate.host for char in " /\\@%")
        assert candidate.username is None or candidate.username.isprintable()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_hostname_text_is_validated_or_skipped(text: str) -> None:
    document = (
        "<clientConfig><emailProvider><outgoingServer type='smtp'><hostname>"
        f"{xml_escape(text)}</hostname><port>465</port><socketType>SSL</socketType>"
        "</outgoingServer></emailProvider></clientConfig>"
    )
    try:
        (candidate,) = parse_autoconfig(document, EMAIL)
    except AutoconfigError:
        return
    assert all(label and len(label) <= 63 for label in candidate.host.split("."))
    assert not any(char.isspace() or not char.isprintable() for char in candidate.host)
    assert "/" not in candidate.host
