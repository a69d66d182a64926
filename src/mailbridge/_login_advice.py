"""Why Microsoft 365 or Google refused a login, and what the tenant or their admin must do.

Reads the providers' own reply texts (SMTP ``550 5.7.30``, ``535 5.7.139`` and its
sub-texts, ``535 5.7.3``, Gmail's ``534 5.7.9`` and ``534 5.7.14``; IMAP
``NO [AUTHENTICATIONFAILED]`` / ``NO AUTHENTICATE failed.``) and the OAuth2 token
endpoint's errors (``invalid_grant``, ``AADSTS65001`` consent, ...), and returns a
`Diagnosis` in plain words with the provider's help page. Used by `diagnostics`;
returns None where it knows nothing more than the generic advice.
"""

from __future__ import annotations

import re

from .diagnosis import Category, Diagnosis

__all__ = ["grant_refused", "imap_refusal", "smtp_refusal", "vendor"]

# The providers' help pages (checked in 2026), one per failure.
MS_SMTP_AUTH = (
    "https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/"
    "authenticated-client-smtp-submission"
)
MS_OAUTH = (
    "https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/"
    "how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth"
)
MS_BASIC_AUTH_TIMELINE = (
    "https://techcommunity.microsoft.com/blog/exchange/"
    "updated-exchange-online-smtp-auth-basic-authentication-deprecation-timeline/4489835"
)
MS_SMTP_TROUBLESHOOTING = (
    "https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/"
    "fix-issues-with-printers-scanners-and-lob-applications-that-send-email-using-off"
)
MS_ADMIN_CONSENT = (
    "https://learn.microsoft.com/en-us/entra/identity/enterprise-apps/grant-admin-consent"
)
MS_ERROR_CODES = "https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes"
GOOGLE_APP_PASSWORDS = "https://support.google.com/accounts/answer/185833"
GOOGLE_WEB_LOGIN = "https://support.google.com/mail/answer/78754"
GOOGLE_XOAUTH2 = "https://developers.google.com/gmail/imap/xoauth2-protocol"
GOOGLE_REFRESH_EXPIRY = "https://developers.google.com/identity/protocols/oauth2#expiration"

_MICROSOFT_HOSTS = ("office365.com", "outlook.com", "office.com", "microsoftonline.com")
_GOOGLE_HOSTS = ("gmail.com", "googlemail.com", "google.com", "googleapis.com")
_AADSTS = re.compile(r"\bAADSTS(\d{5,7})\b")

_OAUTH_INSTEAD = (
    "Sign in with Microsoft (OAuth2) instead of a password: choose “Sign in with "
    "Microsoft” in the mail settings; no password is stored then."
)


def vendor(host: str, text: str = "") -> str | None:
    """``"microsoft"``, ``"google"`` or None: who runs `host` (or wrote the reply `text`)."""
    name = host.lower().rstrip(".")
    lowered = text.lower()
    if any(name == h or name.endswith("." + h) for h in _MICROSOFT_HOSTS) or (
        ".prod.outlook.com" in lowered
    ):
        return "microsoft"
    if any(name == h or name.endswith("." + h) for h in _GOOGLE_HOSTS) or (
        "gsmtp" in lowered or "support.google.com" in lowered
    ):
        return "google"
    return None


# ---------------------------------------------------------------------------
# Shared findings (SMTP and IMAP say the same things in different words)


def _app_password() -> Diagnosis:
    return Diagnosis(
        Category.APP_PASSWORD_REQUIRED,
        "Google does not accept the normal account password from mail programs.",
        (
            "Sign in with Google (OAuth2) instead: choose “Sign in with Google” in the "
            "mail settings.",
            "Or create an app password in the Google account (Security > 2-Step "
            "Verification > App passwords; 2-Step Verification must be on) and enter it "
            "instead of the normal password.",
            "In Google Workspace the administrator can forbid app passwords; then only "
            "OAuth2 works.",
        ),
        GOOGLE_APP_PASSWORDS,
    )


def _web_login() -> Diagnosis:
    return Diagnosis(
        Category.WEB_LOGIN_REQUIRED,
        "Google blocked this sign-in as unusual and wants the account holder to confirm it.",
        (
            "Sign in to the Google account once in a web browser and confirm the security "
            "alert (“Yes, it was me”), then try again.",
            "Lasting fix: sign in with Google (OAuth2) or use an app password; Google "
            "blocks password sign-ins from servers it does not know.",
        ),
        GOOGLE_WEB_LOGIN,
    )


def _google_token_refused(protocol: str) -> Diagnosis:
    return Diagnosis(
        Category.OAUTH_TOKEN_REFUSED,
        f"Google refused the OAuth2 access token for {protocol}.",
        (
            "The sign-in must grant the scope https://mail.google.com/ (full mail access); "
            "tokens for other Google APIs do not work for SMTP or IMAP.",
            "The user name must be the address of the Google account that signed in.",
            "If this keeps happening, sign in with Google again to renew the authorisation.",
        ),
        GOOGLE_XOAUTH2,
    )


def _microsoft_token_refused(protocol: str) -> Diagnosis:
    scope = "SMTP.Send" if protocol == "SMTP" else "IMAP.AccessAsUser.All"
    switch = "Authenticated SMTP" if protocol == "SMTP" else "IMAP"
    return Diagnosis(
        Category.OAUTH_TOKEN_REFUSED,
        f"Microsoft 365 refused the OAuth2 access token for {protocol}.",
        (
            f"The token must be issued for https://outlook.office.com/{scope} (not for "
            "Microsoft Graph): check the app registration's API permissions.",
            "The user name must be the mailbox address the token was issued for.",
            f"The mailbox must have “{switch}” enabled, with OAuth2 too: Microsoft 365 "
            f"admin center > Users > Active users > the user > Mail > Manage email apps > "
            f"tick “{switch}”.",
            "If this keeps happening, sign in with Microsoft again to renew the authorisation.",
        ),
        MS_OAUTH,
    )


def _microsoft_basic_auth_off(protocol: str) -> Diagnosis:
    if protocol == "IMAP":
        return Diagnosis(
            Category.BASIC_AUTH_DISABLED,
            "Microsoft 365 no longer accepts passwords for IMAP (basic authentication is off).",
            (_OAUTH_INSTEAD, "App passwords do not help: IMAP in Exchange Online needs OAuth2."),
            MS_OAUTH,
        )
    return Diagnosis(
        Category.BASIC_AUTH_DISABLED,
        "Microsoft 365 no longer accepts passwords for sending (basic authentication "
        "is switched off for SMTP).",
        (
            _OAUTH_INSTEAD,
            "Until then a Microsoft 365 administrator can switch basic authentication for "
            "SMTP AUTH back on for the organisation (Microsoft turns it off by default at the "
            "end of December 2026 and will remove it for good later).",
        ),
        MS_BASIC_AUTH_TIMELINE,
    )


def _smtp_auth_switched_off(scope: str) -> Diagnosis:
    if scope == "tenant":
        where = (
            "An administrator must allow it for the organisation: Exchange admin center > "
            "Settings > Mail flow > untick “Turn off SMTP AUTH protocol for your "
            "organization” (PowerShell: Set-TransportConfig "
            "-SmtpClientAuthenticationDisabled $false)."
        )
        summary = "SMTP AUTH is switched off for the whole Microsoft 365 organisation."
    else:
        where = (
            "An administrator must allow it for this mailbox: Microsoft 365 admin center > "
            "Users > Active users > the user > Mail > Manage email apps > tick "
            "“Authenticated SMTP” (PowerShell: Set-CASMailbox -Identity <address> "
            "-SmtpClientAuthenticationDisabled $false)."
        )
        summary = "SMTP AUTH (sending from other programs) is switched off for this mailbox."
    return Diagnosis(
        Category.AUTH_DISABLED,
        summary,
        (
            where,
            "This switch applies to OAuth2 sign-ins too; with it on, prefer signing in with "
            "Microsoft (OAuth2) over the password.",
        ),
        MS_SMTP_AUTH,
    )


def _policy_block(text: str) -> Diagnosis:
    if "security defaults" in text:
        first = (
            "The organisation's Microsoft Entra security defaults block password sign-ins "
            "from mail programs."
        )
    else:
        first = (
            "A Conditional Access or authentication policy of the organisation blocks "
            "password sign-ins from mail programs for this user."
        )
    return Diagnosis(
        Category.AUTH_BLOCKED_BY_POLICY,
        "Microsoft 365 refused the login because of the organisation's security policy.",
        (
            first,
            _OAUTH_INSTEAD + " OAuth2 works with security defaults and MFA.",
            "Switching the policy off is an administrator's decision and weakens the "
            "organisation's protection; OAuth2 needs no exception.",
        ),
        MS_SMTP_TROUBLESHOOTING,
    )


# ---------------------------------------------------------------------------
# SMTP


def smtp_refusal(enhanced: str | None, text: str, host: str, *, oauth: bool) -> Diagnosis:
    """The diagnosis for a permanently refused SMTP AUTH.

    `enhanced` is the reply's enhanced status code ("5.7.139"), `text` its text,
    `host` the server's name, `oauth` whether a token (not a password) was sent.
    """
    return _smtp_specific(enhanced, text, host, oauth=oauth) or _generic(
        who=vendor(host, text), oauth=oauth, weak=enhanced == "5.7.9", protocol="SMTP"
    )


def _smtp_specific(enhanced: str | None, text: str, host: str, *, oauth: bool) -> Diagnosis | None:
    lowered = " ".join(text.lower().split())
    who = vendor(host, text)
    if enhanced == "5.7.30" or "not supported for client submission" in lowered:
        return _microsoft_basic_auth_off("SMTP")
    if enhanced == "5.7.139" or "smtpclientauthentication is disabled" in lowered:
        return _microsoft_5_7_139(lowered)
    if "application-specific password" in lowered or (enhanced == "5.7.9" and who == "google"):
        return _app_password()
    if enhanced == "5.7.14" or "log in via your web browser" in lowered:
        return _web_login()
    if oauth and who == "microsoft":
        return _microsoft_token_refused("SMTP")
    if oauth and who == "google":
        return _google_token_refused("SMTP")
    if enhanced == "5.7.3" and who == "microsoft":
        return Diagnosis(
            Category.AUTH_FAILED,
            "Microsoft 365 refused the user name or password.",
            (
                "Check the user name (the full mailbox address) and the password.",
                "If the password is right, SMTP AUTH may be switched off for the mailbox, "
                "or multi-factor authentication blocks password logins: an administrator "
                "checks “Authenticated SMTP” under Manage email apps.",
                _OAUTH_INSTEAD,
            ),
            MS_SMTP_TROUBLESHOOTING,
        )
    return None


def _microsoft_5_7_139(text: str) -> Diagnosis:
    if "disabled for the tenant" in text:
        return _smtp_auth_switched_off("tenant")
    if "disabled for the mailbox" in text or "smtpclientauthentication is disabled" in text:
        return _smtp_auth_switched_off("mailbox")
    if "basic authentication is disabled" in text:
        return _microsoft_basic_auth_off("SMTP")
    if "security defaults" in text or "did not meet the criteria" in text:
        return _policy_block(text)
    if "federated sts" in text:
        return Diagnosis(
            Category.AUTH_FAILED,
            "Microsoft 365 could not reach the organisation's own sign-in server (federation).",
            (
                "The organisation's administrator must check its federation server (such as "
                "AD FS): reachable from the internet over HTTPS with TLS 1.2.",
            ),
            MS_SMTP_TROUBLESHOOTING,
        )
    return Diagnosis(
        Category.AUTH_DISABLED,
        "Microsoft 365 refused the login for a policy reason (5.7.139).",
        (
            "An administrator should check that “Authenticated SMTP” is on for the mailbox and "
            "that no security policy blocks the sign-in.",
            _OAUTH_INSTEAD,
        ),
        MS_SMTP_AUTH,
    )


# ---------------------------------------------------------------------------
# IMAP


def imap_refusal(text: str, host: str, *, oauth: bool) -> Diagnosis:
    """The diagnosis for a refused IMAP LOGIN or AUTHENTICATE (`text`: the server's words)."""
    return _imap_specific(text, host, oauth=oauth) or _generic(
        who=None, oauth=False, weak="app password" in text.lower(), protocol="IMAP"
    )


def _imap_specific(text: str, host: str, *, oauth: bool) -> Diagnosis | None:
    lowered = " ".join(text.lower().split())
    who = vendor(host, text)
    if "application-specific password" in lowered:
        return _app_password()
    if "log in via your web browser" in lowered or "web login required" in lowered:
        return _web_login()
    if oauth and who == "google":
        return _google_token_refused("IMAP")
    if oauth and who == "microsoft":
        return _microsoft_token_refused("IMAP")
    if oauth:
        return Diagnosis(
            Category.OAUTH_TOKEN_REFUSED,
            "The IMAP server refused the OAuth2 access token.",
            (
                "The token may have expired or lack the scope for IMAP; sign in again to "
                "renew the authorisation.",
                "The user name must be the address of the account that signed in.",
            ),
        )
    if who == "microsoft":
        return _microsoft_basic_auth_off("IMAP")
    if who == "google":
        return _app_password()
    return None


def _generic(*, who: str | None, oauth: bool, weak: bool, protocol: str) -> Diagnosis:
    """What is known without a provider-specific text: the advice for any server."""
    hints: list[str] = []
    category = Category.AUTH_FAILED
    if weak:  # RFC 4954's 534 5.7.9; Google and others use it for "app password required"
        category = Category.APP_PASSWORD_REQUIRED
        hints.append(
            "This account needs an app password: create one in the account's security "
            "settings (this needs 2-step verification) and use it instead of the normal password."
        )
    if oauth:
        hints.append(
            f"The OAuth2 token was refused: it may be expired or lack the {protocol} scope."
        )
        if not weak:
            category = Category.OAUTH_TOKEN_REFUSED
        return Diagnosis(category, "The OAuth2 sign-in was refused by the server.", hints)
    if who == "google":
        hints.append(
            "Google accounts need an app password (with 2-step verification) or OAuth2; "
            "'less secure apps' no longer exist."
        )
    elif who == "microsoft":
        hints.append(
            "Microsoft 365 is retiring basic authentication: the mailbox needs "
            "'Authenticated SMTP' enabled, or use OAuth2."
        )
    hints.append("Check the user name (usually the full email address) and the password.")
    if not weak:
        hints.append(
            "If this account uses two-factor authentication, create an app password "
            "and use it instead."
        )
    return Diagnosis(category, "The user name or password was rejected by the server.", hints)


# ---------------------------------------------------------------------------
# The token endpoint


def grant_refused(
    error: str,
    description: str = "",
    *,
    provider: str | None = None,
    issuer: str | None = None,
    error_codes: tuple[int, ...] = (),
) -> Diagnosis:
    """The diagnosis for an OAuth2 token endpoint error (RFC 6749 section 5.2).

    `error` is the ``error`` field (``invalid_grant``), `description` the
    ``error_description`` (Microsoft puts ``AADSTS…`` codes there, and in
    `error_codes`), `provider` ``"microsoft"`` or ``"google"`` when known, else
    `issuer`, the authority's host name, tells.
    """
    code = error.strip().lower()
    match = _AADSTS.search(description)
    aadsts = str(error_codes[0]) if error_codes else (match.group(1) if match else None)
    who = provider or vendor(issuer or "", description) or ("microsoft" if aadsts else None)
    name = {"microsoft": "Microsoft", "google": "Google"}.get(who or "", "the provider")
    if aadsts in ("65001", "65004", "90094", "90095") or code == "consent_required":
        return _consent(aadsts)
    if code == "invalid_grant" or aadsts in ("700082", "70008", "50173", "70043"):
        return _grant_invalid(who, name, aadsts)
    if code == "interaction_required" or aadsts in ("50076", "50079", "50158", "53003"):
        return Diagnosis(
            Category.OAUTH_CONSENT_REQUIRED,
            f"{name} wants the user to sign in again in person (multi-factor authentication "
            "or a Conditional Access policy).",
            (f"Sign in with {name} again in the mail settings.",),
            MS_ERROR_CODES if who == "microsoft" else None,
        )
    if code in ("access_denied", "authorization_declined"):
        return Diagnosis(
            Category.OAUTH_CONSENT_REQUIRED,
            "The sign-in was declined, so no access to the mailbox was granted.",
            (
                f"Sign in with {name} again and accept the requested mail permissions.",
                "If an administrator must approve the app first, ask them to grant consent.",
            ),
            MS_ADMIN_CONSENT if who == "microsoft" else None,
        )
    if code in ("temporarily_unavailable", "server_error"):
        return Diagnosis(
            Category.SERVER_UNAVAILABLE,
            f"{name} could not issue an access token right now.",
            ("Try again in a few minutes; nothing needs to change.",),
        )
    if code in ("expired_token", "authorization_pending", "slow_down"):
        return Diagnosis(
            Category.TIMEOUT,
            "The sign-in was not finished in time (the code was not entered, or expired).",
            ("Start the sign-in again and enter the new code within its time limit.",),
        )
    if code in ("invalid_client", "unauthorized_client", "invalid_scope", "invalid_request"):
        return Diagnosis(
            Category.OAUTH_CLIENT_INVALID,
            f"{name} refused the application's own registration ({code}); this is not "
            "the tenant's fault.",
            (
                "The application's operator must check its client ID, client secret (not "
                "expired), redirect URI and requested scopes in the app registration.",
            ),
            MS_ERROR_CODES if who == "microsoft" else None,
        )
    return Diagnosis(
        Category.AUTH_FAILED,
        f"{name} refused to issue an access token ({code or 'no error code'}).",
        (f"Sign in with {name} again in the mail settings.",),
        MS_ERROR_CODES if who == "microsoft" else None,
    )


def _consent(aadsts: str | None) -> Diagnosis:
    admin = aadsts in ("90094", "90095")
    return Diagnosis(
        Category.OAUTH_CONSENT_REQUIRED,
        "The application has not been allowed to use this mailbox"
        + (" until an administrator approves it." if admin else " (consent is missing)."),
        (
            "An administrator of the Microsoft 365 organisation must grant consent: Microsoft "
            "Entra admin center > Enterprise applications > the app > Permissions > “Grant "
            "admin consent”."
            if admin
            else "Sign in again and accept the requested mail permissions; if the organisation "
            "only lets administrators consent, ask one to grant admin consent for the app.",
            "The permissions needed are SMTP.Send, IMAP.AccessAsUser.All and offline_access.",
        ),
        MS_ADMIN_CONSENT,
    )


def _grant_invalid(who: str | None, name: str, aadsts: str | None) -> Diagnosis:
    hints = [f"Sign in with {name} again in the mail settings to renew the authorisation."]
    link = None
    if who == "google":
        hints += [
            "If this happens every 7 days: the application's Google Cloud project is in "
            "“Testing” status, and Google lets refresh tokens of such apps expire after 7 "
            "days; its operator must publish the app (“In production”).",
            "Other causes: the user removed the app's access, changed the password, or did "
            "not use it for six months.",
        ]
        link = GOOGLE_REFRESH_EXPIRY
    elif who == "microsoft":
        reason = {
            "700082": "it was not used for 90 days",
            "70008": "it was not used for too long",
            "50173": "it was revoked (for example after a password change)",
        }.get(aadsts or "")
        if reason:
            hints.append(f"Microsoft says the authorisation expired because {reason}.")
        hints.append(
            "An administrator may also have revoked the user's sessions or the app's access."
        )
        link = MS_ERROR_CODES
    return Diagnosis(
        Category.OAUTH_GRANT_INVALID,
        f"The stored authorisation for {name} is no longer valid (expired or revoked).",
        tuple(hints),
        link,
    )
