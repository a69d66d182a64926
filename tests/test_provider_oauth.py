"""The registry's OAuth2 data: endpoints, scopes, where OAuth2 is a must, and Microsoft's
dated retirement of passwords for SMTP AUTH."""

from __future__ import annotations

import pytest

from mailbridge import ConfigurationError
from mailbridge.providers import Milestone, OAuth2Info, ProviderRegistry

REGISTRY = ProviderRegistry.default()
MS_SCOPES = (
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "offline_access",
)
TIMELINE_SOURCE = (
    "https://techcommunity.microsoft.com/blog/exchange/"
    "updated-exchange-online-smtp-auth-basic-authentication-deprecation-timeline/4489835"
)


def _provider(provider_id: str):  # type: ignore[no-untyped-def]
    provider = REGISTRY.by_id(provider_id)
    assert provider is not None and provider.oauth2 is not None
    return provider


def test_microsoft_365_endpoints_and_scopes() -> None:
    oauth = _provider("microsoft365").oauth2
    base = "https://login.microsoftonline.com/organizations"
    assert oauth.scopes == MS_SCOPES
    assert oauth.authority == base
    assert oauth.auth_url == f"{base}/oauth2/v2.0/authorize"
    assert oauth.token_url == f"{base}/oauth2/v2.0/token"
    assert oauth.device_code_url == f"{base}/oauth2/v2.0/devicecode"
    assert oauth.offers_device_flow
    assert oauth.required_for == ("imap",)  # SMTP still takes passwords where allowed


def test_outlook_com_needs_oauth_everywhere() -> None:
    oauth = _provider("outlook").oauth2
    assert oauth.scopes == MS_SCOPES
    assert oauth.authority == "https://login.microsoftonline.com/consumers"
    assert oauth.required_for == ("smtp", "imap")


@pytest.mark.parametrize("provider_id", ["gmail", "google-workspace"])
def test_google_endpoints_and_no_device_flow_for_mail(provider_id: str) -> None:
    oauth = _provider(provider_id).oauth2
    assert oauth.scopes == ("https://mail.google.com/",)
    assert oauth.auth_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert oauth.token_url == "https://oauth2.googleapis.com/token"
    # Google's device flow does not allow the Gmail scope: no device-code URL for mail.
    assert not oauth.offers_device_flow
    assert oauth.required_for == ()  # app passwords still work


def test_microsoft_365_carries_the_dated_timeline() -> None:
    timeline = _provider("microsoft365").timeline
    assert [step.date for step in timeline] == ["2026-01-27", "2026-12", "2026-12", "2027"]
    assert all(step.source == TIMELINE_SOURCE for step in timeline)
    assert "disabled by default for existing tenants" in timeline[1].change
    assert "final removal date" in timeline[-1].change


BASE = """
schema = 1
[[provider]]
id = "acme"
name = "Acme Mail"
smtp = [{ host = "smtp.acme.example", port = 465, security = "ssl" }]
auth = ["oauth2"]
oauth2 = { issuer = "login.acme.example", scopes = ["mail"]EXTRA }
"""


def test_every_oauth2_key_loads() -> None:
    text = BASE.replace(
        "EXTRA",
        ', authority = "https://login.acme.example/t", auth_url = "https://login.acme.example/a"'
        ', token_url = "https://login.acme.example/t/token", device_code_url = '
        '"https://login.acme.example/d", required_for = ["smtp"]',
    )
    text += (
        '[[provider.timeline]]\ndate = "2026-05"\nchange = "passwords off"\n'
        'source = "https://acme.example/news"\n'
    )
    (provider,) = ProviderRegistry.from_toml(text)
    assert provider.oauth2 == OAuth2Info(
        "login.acme.example",
        ("mail",),
        authority="https://login.acme.example/t",
        auth_url="https://login.acme.example/a",
        token_url="https://login.acme.example/t/token",
        device_code_url="https://login.acme.example/d",
        required_for=("smtp",),
    )
    assert provider.timeline == (
        Milestone("2026-05", "passwords off", "https://acme.example/news"),
    )


@pytest.mark.parametrize(
    ("extra", "field", "problem"),
    [
        (', token_url = "http://login.acme.example/t"', "oauth2.token_url", "https://"),
        (', device_code_url = "javascript:alert(1)"', "oauth2.device_code_url", "https://"),
        (', required_for = ["pop3"]', "oauth2.required_for", "'pop3'"),
        (', required_for = "smtp"', "oauth2.required_for", "list of strings"),
        (', tenant = "common"', "oauth2", "tenant"),
    ],
)
def test_bad_oauth2_data_names_the_field(extra: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ProviderRegistry.from_toml(BASE.replace("EXTRA", extra), source="extra.toml")
    assert info.value.field == f"providers.acme.{field}"
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("timeline", "field", "problem"),
    [
        ('date = "end of 2026"\nchange = "x"\nsource = "https://a.example/"', "date", "YYYY"),
        ('date = 2026-05-01\nchange = "x"\nsource = "https://a.example/"', "date", "YYYY"),
        ('date = "2026-13"\nchange = "x"\nsource = "https://a.example/"', "date", "YYYY"),
        ('date = "2026"\nchange = " "\nsource = "https://a.example/"', "change", "say"),
        ('date = "2026"\nchange = "x"\nsource = "ftp://a.example/"', "source", "https://"),
        ('date = "2026"\nchange = "x"', "", "{date, change, source}"),
    ],
)
def test_bad_milestones_name_the_field(timeline: str, field: str, problem: str) -> None:
    text = BASE.replace("EXTRA", "") + "[[provider.timeline]]\n" + timeline + "\n"
    with pytest.raises(ConfigurationError) as info:
        ProviderRegistry.from_toml(text, source="extra.toml")
    expected = "providers.acme.timeline[0]" + (f".{field}" if field else "")
    assert info.value.field == expected
    assert problem in str(info.value)


def test_the_timeline_is_in_date_order() -> None:
    steps = "".join(
        f'[[provider.timeline]]\ndate = "{date}"\nchange = "x"\nsource = "https://a.example/"\n'
        for date in ("2027", "2026-12")
    )
    with pytest.raises(ConfigurationError, match="date order"):
        ProviderRegistry.from_toml(BASE.replace("EXTRA", "") + steps)
