"""Microsoft 365's and Google's login refusals, from the texts they really send, become
diagnoses that say what the tenant or their admin must do, with the provider's help page."""

from __future__ import annotations

import pytest

from mailbridge import DeliveryClient
from mailbridge.diagnosis import Category
from mailbridge.diagnostics import auth_failed, imap_auth_failed, oauth_failed
from mailbridge.reply import SmtpReply
from mailbridge.settings import ImapSettings, SmtpSettings
from mailbridge.testing import FakeImapServer, FakeSmtpServer

USER = "billing@acme.example"
MS_LINK = "https://learn.microsoft.com/"
GOOGLE_LINK = "https://support.google.com/"

# (reply as the server sends it, category, a phrase the advice must contain, link prefix)
SMTP_PASSWORD_REPLIES = [
    pytest.param(
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        Category.BASIC_AUTH_DISABLED,
        "Sign in with Microsoft",
        "https://techcommunity.microsoft.com/",
        id="5.7.30",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
        "[MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]",
        Category.AUTH_DISABLED,
        "Set-TransportConfig -SmtpClientAuthenticationDisabled $false",
        MS_LINK,
        id="5.7.139-tenant",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. "
        "[TY1PR01CA0183.jpnprd01.prod.outlook.com]",
        Category.AUTH_DISABLED,
        "Manage email apps > tick “Authenticated SMTP”",
        MS_LINK,
        id="5.7.139-mailbox",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
        "[BM1P287CA0015.INDP287.PROD.OUTLOOK.COM]",
        Category.BASIC_AUTH_DISABLED,
        "Sign in with Microsoft",
        "https://techcommunity.microsoft.com/",
        id="5.7.139-basic-auth",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, user is locked by your organization's "
        "security defaults policy. Contact your administrator.",
        Category.AUTH_BLOCKED_BY_POLICY,
        "security defaults",
        MS_LINK,
        id="5.7.139-security-defaults",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, the request did not meet the criteria to be "
        "authenticated successfully. Contact your administrator. "
        "[BN9PR03CA0716.namprd03.prod.outlook.com 2026-07-01T01:57:31.695Z 08DED6A3FAA75B29]",
        Category.AUTH_BLOCKED_BY_POLICY,
        "Conditional Access",
        MS_LINK,
        id="5.7.139-conditional-access",
    ),
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, federated STS service was unreachable.",
        Category.AUTH_FAILED,
        "federation server",
        MS_LINK,
        id="5.7.139-federation",
    ),
    pytest.param(
        "535 5.7.3 Authentication unsuccessful [BN3PR03CA0067.namprd03.prod.outlook.com]",
        Category.AUTH_FAILED,
        "Authenticated SMTP",
        MS_LINK,
        id="5.7.3",
    ),
    pytest.param(
        "534 5.7.9 Application-specific password required. For more information, go to "
        "https://support.google.com/mail/?p=InvalidSecondFactor 5b1f17b1804b1-487116ee57esm"
        " - gsmtp",
        Category.APP_PASSWORD_REQUIRED,
        "App passwords",
        GOOGLE_LINK,
        id="gmail-5.7.9",
    ),
]


@pytest.mark.parametrize(("reply", "category", "phrase", "link"), SMTP_PASSWORD_REPLIES)
def test_the_connection_test_shows_the_smtp_diagnosis(
    reply: str, category: Category, phrase: str, link: str
) -> None:
    with FakeSmtpServer(users={USER: "secret"}) as server:
        server.login_reply = reply
        with DeliveryClient.own_smtp(USER, server.smtp_settings()) as client:
            report = client.test_connection()
    assert not report.ok
    diagnosis = report.diagnosis
    assert diagnosis is not None and diagnosis.category == category
    assert diagnosis.help_url is not None and diagnosis.help_url.startswith(link)
    assert any(phrase in hint for hint in diagnosis.hints), diagnosis.hints
    shown = str(report)
    assert f"More: {diagnosis.help_url}" in shown and diagnosis.summary in shown
    assert "secret" not in shown


def _reply(raw: str) -> SmtpReply:
    """A (multi-line) reply as the wire brings it, through the same parser."""
    lines = raw.split("\r\n")
    return SmtpReply.parse(int(lines[0][:3]), [line[4:] for line in lines])


GMAIL_WEB_LOGIN = (
    "534-5.7.14 <https://accounts.google.com/signin/continue?sarp=1&scc=1&plt=AKgnsbtP\r\n"
    "534-5.7.14 UXUJqxDDJgQ1fbaeAVXXjMiIIB9Wj_troKHiFFVzhbyGZMsdrmZq6eoque02bX9Yct2Uq4> "
    "Please log\r\n"
    "534-5.7.14 in via your web browser and then try again.\r\n"
    "534-5.7.14  Learn more at\r\n"
    "534 5.7.14  https://support.google.com/mail/answer/78754 f189sm10463455qkb.79 - gsmtp"
)
GMAIL_APP_PASSWORD = (
    "534-5.7.9 Application-specific password required. Learn more at\r\n"
    "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor "
    "o16-20020a170902d4d000b0016d3935eff0sm4816631plg.176 - gsmtp"
)
GMAIL_BAD_TOKEN = (
    "535-5.7.8 Username and Password not accepted. Learn more at\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1sm123 - gsmtp"
)


def test_gmail_asks_for_a_web_sign_in() -> None:
    settings = SmtpSettings("smtp.gmail.com", 587, "starttls", username=USER, password="pw")
    diagnosis = auth_failed(_reply(GMAIL_WEB_LOGIN), settings, "PLAIN").diagnosis
    assert diagnosis.category == Category.WEB_LOGIN_REQUIRED
    assert diagnosis.help_url == "https://support.google.com/mail/answer/78754"
    assert any("web browser" in hint for hint in diagnosis.hints)


def test_gmail_multi_line_app_password_reply() -> None:
    settings = SmtpSettings("smtp.gmail.com", 465, "implicit_tls", username=USER, password="pw")
    diagnosis = auth_failed(_reply(GMAIL_APP_PASSWORD), settings, "PLAIN").diagnosis
    assert diagnosis.category == Category.APP_PASSWORD_REQUIRED
    assert diagnosis.help_url == "https://support.google.com/accounts/answer/185833"
    assert any("Sign in with Google" in hint for hint in diagnosis.hints)


@pytest.mark.parametrize(
    ("host", "reply", "scope_hint", "link"),
    [
        (
            "smtp.office365.com",
            "535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]",
            "https://outlook.office.com/SMTP.Send",
            MS_LINK,
        ),
        (
            "smtp.gmail.com",
            GMAIL_BAD_TOKEN,
            "https://mail.google.com/",
            "https://developers.google",
        ),
    ],
)
def test_a_refused_token_names_the_scope(host: str, reply: str, scope_hint: str, link: str) -> None:
    settings = SmtpSettings(host, 587, "starttls", username=USER, oauth2_token=lambda: "tok")
    diagnosis = auth_failed(_reply(reply), settings, "XOAUTH2").diagnosis
    assert diagnosis.category == Category.OAUTH_TOKEN_REFUSED
    assert any(scope_hint in hint for hint in diagnosis.hints)
    assert diagnosis.help_url is not None and diagnosis.help_url.startswith(link)


def test_microsoft_token_refused_on_the_wire_is_recognised_by_its_text() -> None:
    """On loopback the host says nothing: Microsoft's reply itself names its servers."""
    with FakeSmtpServer(tokens={USER: "good"}) as server:
        server.login_reply = (
            "535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]"
        )
        settings = server.smtp_settings(username=USER, oauth2_token=lambda: "good")
        with DeliveryClient.own_smtp(USER, settings) as client:
            report = client.test_connection()
    assert report.diagnosis is not None
    assert report.diagnosis.category == Category.OAUTH_TOKEN_REFUSED
    assert "Authenticated SMTP" in str(report)


def test_an_unknown_server_keeps_the_generic_advice() -> None:
    settings = SmtpSettings("mail.example.net", 587, "starttls", username=USER, password="pw")
    diagnosis = auth_failed(
        SmtpReply(535, "5.7.8", "Error: authentication failed"), settings, "PLAIN"
    ).diagnosis
    assert diagnosis.category == Category.AUTH_FAILED and diagnosis.help_url is None
    assert any("app password" in hint for hint in diagnosis.hints)


# -- IMAP ----------------------------------------------------------------------------------


def _imap(host: str, *, oauth: bool) -> ImapSettings:
    if oauth:
        return ImapSettings(host, 993, "implicit_tls", username=USER, oauth2_token=lambda: "t")
    return ImapSettings(host, 993, "implicit_tls", username=USER, password="pw")


@pytest.mark.parametrize(
    ("host", "oauth", "text", "category", "phrase"),
    [
        (
            "imap.gmail.com",
            True,
            "[AUTHENTICATIONFAILED] Invalid credentials (Failure)",
            Category.OAUTH_TOKEN_REFUSED,
            "https://mail.google.com/",
        ),
        (
            "outlook.office365.com",
            True,
            "AUTHENTICATE failed.",
            Category.OAUTH_TOKEN_REFUSED,
            "https://outlook.office.com/IMAP.AccessAsUser.All",
        ),
        (
            "outlook.office365.com",
            False,
            "LOGIN failed.",
            Category.BASIC_AUTH_DISABLED,
            "IMAP in Exchange Online needs OAuth2",
        ),
        (
            "imap.gmail.com",
            False,
            "[ALERT] Application-specific password required: "
            "https://support.google.com/accounts/answer/185833 (Failure)",
            Category.APP_PASSWORD_REQUIRED,
            "App passwords",
        ),
        (
            "imap.gmail.com",
            False,
            "[ALERT] Please log in via your web browser: "
            "https://support.google.com/mail/accounts/answer/78754 (Failure)",
            Category.WEB_LOGIN_REQUIRED,
            "web browser",
        ),
    ],
)
def test_imap_refusals(host: str, oauth: bool, text: str, category: Category, phrase: str) -> None:
    error = imap_auth_failed(_imap(host, oauth=oauth), text)
    assert error.diagnosis.category == category
    assert any(phrase in hint for hint in error.diagnosis.hints), error.diagnosis.hints
    assert error.diagnosis.help_url is not None


def test_the_connection_test_shows_a_refused_imap_token() -> None:
    with (
        FakeSmtpServer(tokens={USER: "good"}) as smtp,
        FakeImapServer(users={}, tokens={USER: "good"}) as imap,
    ):
        imap.login_reply = "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
        client = DeliveryClient.own_smtp(
            USER,
            smtp.smtp_settings(username=USER, oauth2_token=lambda: "good"),
            imap=imap.imap_settings(),
        )
        with client:
            report = client.test_connection()
    assert not report.ok and report.imap is not None
    assert report.imap.diagnosis is not None
    assert report.imap.diagnosis.category == Category.OAUTH_TOKEN_REFUSED
    assert "OAuth2 access token" in str(report)


# -- The token endpoint --------------------------------------------------------------------

GRANTS = [
    pytest.param(
        "invalid_grant",
        "Token has been expired or revoked.",
        "accounts.google.com",
        Category.OAUTH_GRANT_INVALID,
        "7 days",
        "https://developers.google.com/identity/protocols/oauth2#expiration",
        id="google-revoked",
    ),
    pytest.param(
        "invalid_grant",
        "AADSTS700082: The refresh token has expired due to inactivity. The token was issued "
        "on 2026-04-20T14:30:28.0990908Z and was inactive for 90.00:00:00.\r\nTrace ID: af0",
        "login.microsoftonline.com",
        Category.OAUTH_GRANT_INVALID,
        "90 days",
        MS_LINK,
        id="microsoft-inactive",
    ),
    pytest.param(
        "invalid_grant",
        "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth "
        "token is needed. The user might have changed or reset their password.",
        None,
        Category.OAUTH_GRANT_INVALID,
        "password change",
        MS_LINK,
        id="microsoft-revoked",
    ),
    pytest.param(
        "invalid_grant",
        "AADSTS65001: The user or administrator has not consented to use the application with "
        "ID '00000000-0000-0000-0000-000000000000' named 'Invoices'. Send an interactive "
        "authorization request for this user and resource.",
        "login.microsoftonline.com",
        Category.OAUTH_CONSENT_REQUIRED,
        "admin consent",
        MS_LINK,
        id="consent-missing",
    ),
    pytest.param(
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided.",
        "login.microsoftonline.com",
        Category.OAUTH_CLIENT_INVALID,
        "client secret",
        MS_LINK,
        id="client-secret",
    ),
]


@pytest.mark.parametrize(("error", "description", "issuer", "category", "phrase", "link"), GRANTS)
def test_token_endpoint_errors(
    error: str, description: str, issuer: str | None, category: Category, phrase: str, link: str
) -> None:
    provider = {"accounts.google.com": "google", "login.microsoftonline.com": "microsoft"}
    diagnosis = oauth_failed(provider.get(issuer or "", ""), error, (), description)
    assert diagnosis.category == category
    assert any(phrase in hint for hint in diagnosis.hints), diagnosis.hints
    assert diagnosis.help_url is not None and diagnosis.help_url.startswith(link)


def test_microsoft_error_codes_decide_without_a_description() -> None:
    diagnosis = oauth_failed("microsoft", "invalid_grant", (700082,), "")
    assert diagnosis.category == Category.OAUTH_GRANT_INVALID
    assert any("90 days" in hint for hint in diagnosis.hints)
    consent = oauth_failed("microsoft", "invalid_grant", (65001,))
    assert consent.category == Category.OAUTH_CONSENT_REQUIRED


def test_device_flow_ends_without_a_grant() -> None:
    assert oauth_failed("", "expired_token").category == Category.TIMEOUT
    assert oauth_failed("microsoft", "authorization_pending").category == Category.TIMEOUT
    declined = oauth_failed("google", "access_denied")
    assert declined.category == Category.OAUTH_CONSENT_REQUIRED


def test_a_hostile_error_code_is_bounded() -> None:
    diagnosis = oauth_failed("", "x" * 10_000 + "\r\nInjected: yes", (), "y" * 1_000_000)
    assert len(str(diagnosis)) < 300 and "Injected" not in str(diagnosis)


# -- A token that cannot be renewed, seen through the connection test ----------------------


def test_a_revoked_refresh_token_is_diagnosed_in_the_report_without_retrying() -> None:
    from mailbridge.oauth import AccessToken, CachingTokenProvider
    from mailbridge.oauth._errors import oauth_error

    calls: list[str | None] = []

    def acquire(rejected: str | None) -> AccessToken:
        calls.append(rejected)
        raise oauth_error(
            "google",
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            "renewing the access token",
        )

    provider = CachingTokenProvider(acquire)
    with FakeSmtpServer(tokens={USER: "good"}) as server:
        settings = server.smtp_settings(username=USER, oauth2_token=provider)
        with DeliveryClient.own_smtp(USER, settings) as client:
            report = client.test_connection()
    assert not report.ok and report.diagnosis is not None
    assert report.diagnosis.category == Category.OAUTH_GRANT_INVALID
    assert "7 days" in str(report)
    assert calls == [None]  # asked once: a dead grant is not retried
