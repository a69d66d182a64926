from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mailbridge import ConfigurationError, Security
from mailbridge.providers import (
    Endpoint,
    Provider,
    ProviderRegistry,
    expand,
    normalize_domain,
)

REGISTRY = ProviderRegistry.default()
PROVIDERS = list(REGISTRY)
IDS = [provider.id for provider in PROVIDERS]

VALID = """
schema = 1
[[provider]]
id = "acme"
name = "Acme Mail"
domains = ["acme.example"]
mx_patterns = ["mx.acme.example"]
smtp = [{ host = "smtp.acme.example", port = 465, security = "ssl" }]
imap = [{ host = "imap.acme.example", port = 993, security = "implicit_tls" }]
"""


def _registry_error(text: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        ProviderRegistry.from_toml(text, source="extra.toml")
    return info.value


# --- the built-in data file --------------------------------------------------------------


def test_default_registry_loads_once_and_has_at_least_40_providers() -> None:
    assert ProviderRegistry.default() is REGISTRY
    assert len(REGISTRY) >= 40
    assert len(set(IDS)) == len(IDS)


def test_every_required_provider_is_present() -> None:
    required = {
        "gmail", "google-workspace", "microsoft365", "outlook", "icloud", "yahoo", "aol",
        "gmx", "gmx-com", "webde", "t-online", "ionos", "strato", "mailbox-org", "posteo",
        "fastmail", "zoho", "proton", "yandex", "mailru", "ovh", "infomaniak", "freenet",
        "vodafone", "orange", "free", "libero", "virgilio", "seznam", "swisscom", "godaddy",
        "namecheap", "rackspace", "hostpoint", "all-inkl", "netcup", "hetzner", "aruba",
        "telenet", "proximus", "ziggo", "kpn", "bluehost",
    }  # fmt: skip
    assert required <= set(IDS)


@pytest.mark.parametrize("provider", PROVIDERS, ids=IDS)
def test_every_provider_can_send_over_tls(provider: Provider) -> None:
    assert provider.smtp
    assert any(endpoint.uses_tls for endpoint in provider.smtp)
    assert all(e.uses_tls or e.is_local for e in (*provider.smtp, *provider.imap))


SANE = {465: Security.IMPLICIT_TLS, 587: Security.STARTTLS, 993: Security.IMPLICIT_TLS}


@pytest.mark.parametrize("provider", PROVIDERS, ids=IDS)
def test_ports_and_security_are_sane(provider: Provider) -> None:
    for endpoint in provider.smtp:
        assert 1 <= endpoint.port <= 65535
        if endpoint.is_local:
            continue
        assert endpoint.port in (465, 587), endpoint
        assert endpoint.security is SANE[endpoint.port], endpoint
    for endpoint in provider.imap:
        if endpoint.is_local:
            continue
        assert endpoint.port in (993, 143), endpoint
        assert endpoint.security is SANE.get(endpoint.port, Security.STARTTLS), endpoint


@pytest.mark.parametrize("provider", PROVIDERS, ids=IDS)
def test_provider_data_is_complete(provider: Provider) -> None:
    assert provider.name.strip()
    assert provider.domains or provider.mx_patterns or provider.id == "bluehost"
    assert provider.auth
    if provider.supports_oauth2:
        assert provider.oauth2 is not None
    for url in provider.docs.values():
        assert url.startswith("https://")
    assert provider.imap, "archiving needs an IMAP endpoint"


def test_every_domain_belongs_to_exactly_one_provider() -> None:
    counts = Counter(domain for provider in PROVIDERS for domain in provider.domains)
    assert [domain for domain, n in counts.items() if n > 1] == []
    for provider in PROVIDERS:
        for domain in provider.domains:
            assert REGISTRY.by_domain(domain) is provider


def test_proton_is_bridge_on_localhost() -> None:
    proton = REGISTRY.by_domain("proton.me")
    assert proton is not None and proton.id == "proton"
    assert {(e.host, e.port, e.security) for e in proton.smtp} == {
        ("127.0.0.1", 1025, Security.STARTTLS)
    }
    assert {(e.host, e.port, e.security) for e in proton.imap} == {
        ("127.0.0.1", 1143, Security.STARTTLS)
    }


def test_gmail_and_microsoft365_file_their_own_sent_copy() -> None:
    gmail = REGISTRY.by_id("gmail")
    m365 = REGISTRY.by_id("microsoft365")
    assert gmail is not None and m365 is not None
    assert gmail.files_sent_copy and m365.files_sent_copy
    assert gmail.sent_folder == "[Gmail]/Sent Mail"
    assert gmail.requires_app_password and gmail.supports_oauth2
    assert gmail.oauth2 is not None
    assert (gmail.oauth2.issuer, gmail.oauth2.scopes) == (
        "accounts.google.com",
        ("https://mail.google.com/",),
    )
    assert any("2-Step Verification" in hint for hint in gmail.hints)
    assert any("Less secure apps" in hint for hint in gmail.hints)
    assert any("SMTP AUTH must be enabled" in hint for hint in m365.hints)
    assert any("OAuth2" in hint and "retired" in hint for hint in m365.hints)
    gmx = REGISTRY.by_id("gmx")
    assert gmx is not None and not gmx.files_sent_copy


# --- look-ups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "provider_id"),
    [
        ("gmail.com", "gmail"),
        ("googlemail.com", "gmail"),
        ("GMail.COM", "gmail"),
        ("gmail.com.", "gmail"),
        ("anna@gmail.com", "gmail"),
        ("gmx.de", "gmx"),
        ("gmx.net", "gmx"),
        ("gmx.ch", "gmx"),
        ("gmx.at", "gmx"),
        ("gmx.com", "gmx-com"),
        ("web.de", "webde"),
        ("t-online.de", "t-online"),
        ("outlook.com", "outlook"),
        ("hotmail.com", "outlook"),
        ("live.com", "outlook"),
        ("icloud.com", "icloud"),
        ("posteo.de", "posteo"),
    ],
)
def test_by_domain(domain: str, provider_id: str) -> None:
    provider = REGISTRY.by_domain(domain)
    assert provider is not None
    assert provider.id == provider_id


@pytest.mark.parametrize("domain", ["example.com", "", "not a domain", "gmail.com.evil"])
def test_by_domain_unknown(domain: str) -> None:
    assert REGISTRY.by_domain(domain) is None


def test_by_domain_normalises_idna() -> None:
    registry = REGISTRY.load_toml(VALID.replace("acme.example", "bücher.example"))
    assert registry.by_domain("BÜCHER.example") is registry.by_id("acme")
    assert registry.by_domain("xn--bcher-kva.example") is registry.by_id("acme")
    assert normalize_domain("Bücher.Example.") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("mx", "provider_id"),
    [
        ("aspmx.l.google.com.", "google-workspace"),
        ("ASPMX.L.GOOGLE.COM", "google-workspace"),
        ("alt1.aspmx.l.google.com", "google-workspace"),
        ("alt4.aspmx.l.google.com.", "google-workspace"),
        ("smtp.google.com", "google-workspace"),
        ("gmail-smtp-in.l.google.com", "gmail"),
        ("alt2.gmail-smtp-in.l.google.com", "gmail"),
        ("acme-de.mail.protection.outlook.com", "microsoft365"),
        ("acme-de.mail.protection.outlook.com.", "microsoft365"),
        ("eur.olc.protection.outlook.com", "outlook"),
        ("mx-aol.mail.gm0.yahoodns.net", "aol"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("mx00.gmx.net", "gmx"),
        ("mx-ha01.web.de", "webde"),
        ("mx00.t-online.de", "t-online"),
        ("in1-smtp.messagingengine.com", "fastmail"),
        ("mx2f3a.netcup.net", "netcup"),
        ("w0123456.kasserver.com", "all-inkl"),
        ("mx.zoho.eu", "zoho-eu"),
        ("mx.zoho.com", "zoho"),
    ],
)
def test_by_mx(mx: str, provider_id: str) -> None:
    provider = REGISTRY.by_mx(mx)
    assert provider is not None
    assert provider.id == provider_id


@pytest.mark.parametrize("mx", ["mx.example.com", "outlook.com.evil.example", "google.com", ""])
def test_by_mx_unknown(mx: str) -> None:
    assert REGISTRY.by_mx(mx) is None


def test_by_mx_hosts_takes_the_first_match() -> None:
    provider = REGISTRY.by_mx_hosts(["backup.example.com", "alt1.aspmx.l.google.com"])
    assert provider is not None and provider.id == "google-workspace"
    assert REGISTRY.by_mx_hosts([]) is None


def test_by_mx_prefers_the_more_specific_pattern() -> None:
    base = Endpoint("smtp.x.example", 465, "ssl")
    broad = Provider(id="broad", name="Broad", smtp=[base], mx_patterns=["*.example.net"])
    narrow = Provider(id="narrow", name="Narrow", smtp=[base], mx_patterns=["mx.b.example.net"])
    registry = ProviderRegistry([narrow, broad])
    assert registry.by_mx("mx.b.example.net").id == "narrow"  # type: ignore[union-attr]
    assert registry.by_mx("in.mx.b.example.net").id == "narrow"  # type: ignore[union-attr]
    assert registry.by_mx("other.example.net").id == "broad"  # type: ignore[union-attr]


def test_by_id() -> None:
    gmail = REGISTRY.by_id("gmail")
    assert gmail is not None and gmail.name == "Gmail"
    assert REGISTRY.by_id("nope") is None
    assert "gmail" in REGISTRY
    assert REGISTRY.ids == tuple(IDS)


# --- endpoints and placeholders ------------------------------------------------------------


def test_username_for() -> None:
    icloud = REGISTRY.by_id("icloud")
    assert icloud is not None
    assert icloud.imap[0].username_for("emily.parker@icloud.com") == "emily.parker"
    assert icloud.smtp[0].username_for("emily.parker@icloud.com") == "emily.parker@icloud.com"
    with pytest.raises(ConfigurationError) as info:
        icloud.smtp[0].username_for("no-at-sign")
    assert info.value.field == "email"


def test_expand() -> None:
    assert expand("mail.%EMAILDOMAIN%", "Anna@Example.COM") == "mail.example.com"
    assert expand("%EMAILLOCALPART%.%EMAILDOMAIN%", "anna@bücher.de") == "anna.xn--bcher-kva.de"
    assert expand("%EMAILADDRESS%", "anna@example.com") == "anna@example.com"
    assert expand("smtp.example.com", "not used") == "smtp.example.com"
    assert expand("%MXHOST%", "a@example.com", mx_host="MX1.Example.NET.") == "mx1.example.net"
    with pytest.raises(ConfigurationError, match="no MX host is known"):
        expand("%MXHOST%", "a@example.com")
    with pytest.raises(ConfigurationError, match="unknown placeholder %NOPE%"):
        expand("%NOPE%.example.com", "a@example.com")


def test_bluehost_host_is_per_domain() -> None:
    bluehost = REGISTRY.by_id("bluehost")
    assert bluehost is not None
    endpoint = bluehost.smtp[0]
    assert endpoint.is_template
    assert endpoint.host_for("info@acme.example") == "mail.acme.example"


def test_endpoint_validation() -> None:
    assert Endpoint("smtp.example.com", 587, "STARTTLS").security is Security.STARTTLS
    with pytest.raises(ConfigurationError) as info:
        Endpoint("smtp.example.com", 70000, "starttls")
    assert info.value.field == "port"
    with pytest.raises(ConfigurationError) as info:
        Endpoint("smtp example.com", 587, "starttls")
    assert info.value.field == "host"
    with pytest.raises(ConfigurationError) as info:
        Endpoint("smtp.example.com", 587, "starttls", username="login")  # type: ignore[arg-type]
    assert info.value.field == "username"


def test_server_aliases_recognise_a_host_and_are_never_offered() -> None:
    smtp = (Endpoint("smtp.example.com", 587, "starttls"),)
    provider = Provider(id="ex", name="Ex", smtp=smtp, server_aliases=["SMTP.Old-Name.example."])
    assert provider.server_aliases == ("smtp.old-name.example",)
    assert ProviderRegistry([provider]).by_server("smtp.old-name.example") is provider
    assert all(endpoint.host != "smtp.old-name.example" for endpoint in provider.smtp)
    with pytest.raises(ConfigurationError) as info:
        Provider(id="ex", name="Ex", smtp=smtp, server_aliases="smtp.old-name.example")
    assert info.value.field == "server_aliases"
    with pytest.raises(ConfigurationError) as info:
        Provider(id="ex", name="Ex", smtp=smtp, server_aliases=["not a host"])
    assert info.value.field == "server_aliases"


def test_values_are_frozen_and_hashable() -> None:
    gmail = REGISTRY.by_id("gmail")
    assert gmail is not None
    with pytest.raises(AttributeError):
        gmail.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        gmail.docs["spf"] = "x"  # type: ignore[index]
    assert hash(gmail) == hash(gmail)


# --- registering and loading -----------------------------------------------------------------


def test_register_returns_a_new_registry_and_leaves_the_default_alone() -> None:
    acme = ProviderRegistry.from_toml(VALID).by_id("acme")
    assert acme is not None
    extended = REGISTRY.register(acme)
    assert extended.by_domain("acme.example") is acme
    assert REGISTRY.by_domain("acme.example") is None
    assert ProviderRegistry.default().by_id("acme") is None
    assert len(extended) == len(REGISTRY) + 1
    assert list(extended)[-1] is acme


def test_register_refuses_duplicates_unless_replacing() -> None:
    gmail = REGISTRY.by_id("gmail")
    assert gmail is not None
    with pytest.raises(ConfigurationError, match="already registered"):
        REGISTRY.register(gmail)
    thief = Provider(
        id="thief",
        name="Thief",
        smtp=[Endpoint("smtp.x.example", 465, "ssl")],
        domains=["gmail.com"],
    )
    with pytest.raises(ConfigurationError) as info:
        REGISTRY.register(thief)
    assert info.value.field == "providers.thief.domains"
    assert "'gmail'" in str(info.value)
    custom = Provider(
        id="gmail",
        name="My Gmail",
        smtp=[Endpoint("smtp.gmail.com", 587, "starttls")],
        domains=["gmail.com"],
    )
    replaced = REGISTRY.register(custom, replace=True)
    assert replaced.by_domain("googlemail.com") is None
    assert replaced.by_domain("gmail.com") is custom
    assert REGISTRY.by_domain("googlemail.com") is gmail


def test_load_adds_a_file(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(VALID, encoding="utf-8")
    extended = REGISTRY.load(path)
    assert extended.by_mx("mx.acme.example.") is extended.by_id("acme")
    assert REGISTRY.by_id("acme") is None
    assert ProviderRegistry.from_file(path).ids == ("acme",)
    with pytest.raises(ConfigurationError, match="cannot read"):
        REGISTRY.load(tmp_path / "missing.toml")


# --- invalid data files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("port = 465", "port = 0"), "providers.acme.smtp[0].port", "port number"),
        (("port = 465", 'port = "465"'), "providers.acme.smtp[0].port", "port number"),
        (('security = "ssl"', 'security = "tls1"'), "providers.acme.smtp[0].security", "tls1"),
        (
            ('security = "ssl"', 'security = "none"'),
            "providers.acme.smtp[0].security",
            "unencrypted",
        ),
        (('host = "smtp.acme.example"', 'host = ""'), "providers.acme.smtp[0].host", "empty"),
        (('host = "smtp.acme.example"', 'host = "%FOO%"'), "providers.acme.smtp[0].host", "%FOO%"),
        (
            ('security = "ssl" }', 'security = "ssl", user = "x" }'),
            "providers.acme.smtp[0]",
            "user",
        ),
        (('name = "Acme Mail"', "name = 3"), "providers.acme.name", "not a string"),
        (('["acme.example"]', '["acme example"]'), "providers.acme.domains", "acme example"),
        (('["acme.example"]', '"acme.example"'), "providers.acme.domains", "list of strings"),
        (('id = "acme"', 'id = "Acme Mail"'), "providers.Acme Mail.id", "not an id"),
        (('name = "Acme Mail"', 'name = "A"\nauth = ["pin"]'), "providers.acme.auth", "'pin'"),
        (
            ('name = "Acme Mail"', 'name = "A"\nauth = ["oauth2"]'),
            "providers.acme.oauth2",
            "issuer",
        ),
        (('name = "Acme Mail"', 'name = "A"\ncolour = 1'), "providers.acme", "colour"),
        (
            ('name = "Acme Mail"', 'name = "A"\nfiles_sent_copy = "yes"'),
            "providers.acme.files_sent_copy",
            "boolean",
        ),
        (
            ('name = "Acme Mail"', 'name = "A"\ndocs = { spf = "http://x" }'),
            "providers.acme.docs.spf",
            "https",
        ),
        (('["mx.acme.example"]', '["mx .x"]'), "providers.acme.mx_patterns", "host pattern"),
    ],
)
def test_invalid_data_names_provider_and_field(
    change: tuple[str, str], field: str, words: str
) -> None:
    old, new = change
    assert old in VALID
    error = _registry_error(VALID.replace(old, new, 1))
    assert error.field == field
    assert words in str(error)
    assert "extra.toml" in str(error)


def test_missing_smtp_is_an_error() -> None:
    text = VALID.replace(
        'smtp = [{ host = "smtp.acme.example", port = 465, security = "ssl" }]', ""
    )
    error = _registry_error(text)
    assert error.field == "providers.acme.smtp"
    assert "'acme'" in str(error)


def test_duplicates_in_one_file_are_errors() -> None:
    error = _registry_error(VALID + VALID.replace("schema = 1", ""))
    assert error.field == "providers.acme.id"
    twin = VALID + VALID.replace('id = "acme"', 'id = "acme2"').replace("schema = 1", "")
    error = _registry_error(twin)
    assert error.field == "providers.acme2.domains"
    assert "'acme.example'" in str(error)


def test_broken_toml_and_schema() -> None:
    assert "not valid TOML" in str(_registry_error("[[provider]\n"))
    assert _registry_error("schema = 2").field == "schema"
    assert _registry_error("providers = 1").field == "providers"


def test_app_password_and_password_are_exclusive() -> None:
    with pytest.raises(ConfigurationError) as info:
        Provider(
            id="x",
            name="X",
            smtp=[Endpoint("smtp.x.example", 465, "ssl")],
            auth=["password", "app_password"],
        )
    assert info.value.field == "auth"
