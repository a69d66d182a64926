"""Turning failures into advice a non-expert can act on.

Each function takes what went wrong (an OS error, a TLS error, a server reply)
and the settings in use, and returns the `DeliveryError` to raise, with its
`Diagnosis`. The advice reads the server's own reply where it says more than
its code (Gmail's 534 5.7.9, Microsoft 365's 5.7.139, ...).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterable, Mapping

from . import _login_advice
from ._pinning import server_name, shown_host, where
from .diagnosis import Category, Diagnosis
from .errors import (
    AuthenticationError,
    ConnectError,
    DeliveryError,
    DeliveryOutcomeUnknown,
    DeliveryTimeout,
    MessageRejected,
    RecipientsRefused,
    SenderRefused,
    TlsError,
    TlsHandshakeTimeout,
)
from .reply import SmtpReply
from .settings import ImapSettings, Security, ServerSettings, SmtpSettings

__all__ = [
    "auth_failed",
    "connect_failed",
    "data_refused",
    "imap_auth_failed",
    "oauth_failed",
    "recipients_refused",
    "sender_refused",
    "tls_failed",
    "tls_timed_out",
]

_WELL_KNOWN_PORTS = {
    993: Security.IMPLICIT_TLS,
    143: Security.STARTTLS,
    465: Security.IMPLICIT_TLS,
    587: Security.STARTTLS,
    25: Security.STARTTLS,
    2525: Security.STARTTLS,
}
_SECURITY_LABEL = {
    Security.IMPLICIT_TLS: "SSL/TLS",
    Security.STARTTLS: "STARTTLS",
    Security.NONE: "no encryption",
}


def security_label(security: Security) -> str:
    """The name a settings form shows for `security`."""
    return _SECURITY_LABEL[security]


def usual_ports(settings: ServerSettings) -> str:
    """The usual ports for the protocol of `settings`, for advice texts."""
    if isinstance(settings, ImapSettings):
        return "993 (SSL/TLS) and 143 (STARTTLS)"
    return "587 (STARTTLS) and 465 (SSL/TLS)"


def port_hints(settings: ServerSettings) -> tuple[str, ...]:
    """Advice when the security mode does not match what the port usually speaks."""
    usual = _WELL_KNOWN_PORTS.get(settings.port)
    if usual is None or usual == settings.security:
        return ()
    if settings.security == Security.NONE and usual == Security.STARTTLS:
        return ()
    return (
        f"Port {settings.port} usually uses {security_label(usual)}, but "
        f"{security_label(settings.security)} is selected.",
    )


def connect_failed(exc: OSError, settings: ServerSettings) -> ConnectError:
    """DNS failure, refused connection or time-out while connecting."""
    place = where(settings)
    if isinstance(exc, socket.gaierror):
        return ConnectError(
            f"the server name {server_name(settings)!r} could not be resolved",
            diagnosis=Diagnosis(
                Category.HOST_NOT_FOUND,
                f"The server name {server_name(settings)} does not exist.",
                (
                    "Check the spelling of the server name (e.g. smtp.example.com).",
                    "Your provider's help pages list the exact SMTP server name.",
                ),
            ),
            temporary=exc.errno in (socket.EAI_AGAIN,),
        )
    if _is_handshake_timeout(exc):
        return tls_timed_out(settings)
    if isinstance(exc, TimeoutError):
        return DeliveryTimeout(
            f"connecting to {place} timed out after {settings.connect_timeout:g} s",
            diagnosis=Diagnosis(
                Category.TIMEOUT,
                f"No answer from {place}.",
                (
                    f"Check the port number: {usual_ports(settings)} are the usual ones.",
                    "A firewall or your hosting provider may block outgoing connections "
                    "to this port (port 25 is often blocked).",
                ),
            ),
            temporary=True,
        )
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return ConnectError(
            f"the connection to {place} was refused",
            diagnosis=Diagnosis(
                Category.CONNECTION_REFUSED,
                f"Nothing accepts connections on {place}.",
                (
                    f"Check the port number: {usual_ports(settings)} are the usual ones.",
                    "Check that the server name is the mail server, not the web server.",
                ),
            ),
            temporary=True,
        )
    return ConnectError(
        f"cannot connect to {place}: {exc.strerror or exc}",
        diagnosis=Diagnosis(
            Category.CONNECTION_REFUSED,
            f"The connection to {place} failed.",
            ("Check the server name and port, and the network connection.",),
        ),
        temporary=True,
    )


def tls_timed_out(settings: ServerSettings) -> TlsHandshakeTimeout:
    """The TCP connection was made, but the TLS handshake did not finish in time."""
    place = where(settings)
    return TlsHandshakeTimeout(
        f"the TLS handshake with {place} timed out after {settings.connect_timeout:g} s",
        diagnosis=Diagnosis(
            Category.TLS_HANDSHAKE,
            f"{place} accepted the connection but did not complete a TLS handshake.",
            port_hints(settings) or ("Check that the port expects the selected security mode.",),
        ),
        temporary=True,
    )


def _is_handshake_timeout(exc: OSError) -> bool:
    # ssl raises a plain TimeoutError ("The handshake operation timed out") when the
    # handshake of a connected socket overruns; callers that connect and wrap in one
    # step (imaplib's IMAP4_SSL) hand it to connect_failed.
    return isinstance(exc, TimeoutError) and "handshake" in str(exc)


def tls_failed(exc: OSError, settings: ServerSettings) -> DeliveryError:
    """A failed TLS handshake, most often a certificate or a security-mode mismatch."""
    mode_hints = port_hints(settings) or (
        "Check that the port expects the selected security mode.",
    )
    if isinstance(exc, TimeoutError):
        return tls_timed_out(settings)
    if not isinstance(exc, ssl.SSLError):
        return ConnectError(
            f"the connection was closed during the TLS handshake ({exc.strerror or exc})",
            diagnosis=Diagnosis(
                Category.TLS_HANDSHAKE,
                "The server closed the connection during the TLS handshake.",
                mode_hints,
            ),
            temporary=True,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            return TlsError(
                f"the certificate of {shown_host(settings)} is not valid for that name",
                diagnosis=Diagnosis(
                    Category.CERTIFICATE_NAME_MISMATCH,
                    "The server's certificate is made out to another name than "
                    f"{server_name(settings)}.",
                    (
                        "Use the server name your provider documents; the certificate names "
                        "it exactly (e.g. the provider's own host instead of mail.yourdomain).",
                    ),
                ),
            )
        return TlsError(
            f"the certificate of {shown_host(settings)} is not trusted: {exc.verify_message}",
            diagnosis=Diagnosis(
                Category.CERTIFICATE_INVALID,
                f"The server's certificate cannot be trusted ({exc.verify_message}).",
                (
                    "The certificate may be self-signed or expired; ask the server's "
                    "administrator to install a valid one.",
                    "For a private certificate authority, pass its certificate as ca_file.",
                ),
            ),
        )
    reason = getattr(exc, "reason", None) or ""
    if (
        reason
        in (
            "WRONG_VERSION_NUMBER",
            "RECORD_LAYER_FAILURE",
            "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG",
            "HTTP_REQUEST",
        )
        and settings.security == Security.IMPLICIT_TLS
    ):
        return TlsError(
            f"{where(settings)} did not answer with TLS",
            diagnosis=Diagnosis(
                Category.EXPECTED_PLAINTEXT,
                f"The server on port {settings.port} does not expect TLS immediately.",
                (
                    "Choose STARTTLS instead of SSL/TLS for this port "
                    "(587 is usually STARTTLS, 465 SSL/TLS).",
                ),
            ),
        )
    return TlsError(
        f"the TLS handshake with {where(settings)} failed: {reason or exc}",
        diagnosis=Diagnosis(
            Category.TLS_HANDSHAKE,
            "A secure connection could not be established.",
            (
                *port_hints(settings),
                "The server may only support outdated TLS versions; mailbridge requires TLS 1.2+.",
            ),
        ),
    )


def auth_failed(reply: SmtpReply, settings: SmtpSettings, mechanism: str) -> AuthenticationError:
    """The server refused the login.

    Microsoft 365's and Google's own replies (5.7.30, 5.7.139 and its sub-texts,
    5.7.3, 5.7.9, 5.7.14, a refused token) get their specific diagnosis with the
    provider's help page (see `_login_advice`).
    """
    if reply.is_temporary:
        return AuthenticationError(
            "the server could not check the login right now",
            reply=reply,
            diagnosis=Diagnosis(
                Category.AUTH_FAILED,
                "The server had a temporary problem checking the login.",
                ("Try again in a few minutes.",),
            ),
        )
    return AuthenticationError(
        f"the server refused the login for {settings.username!r} ({mechanism})",
        reply=reply,
        diagnosis=_login_advice.smtp_refusal(
            reply.enhanced_status,
            reply.text,
            server_name(settings),
            oauth=settings.oauth2_token is not None,
        ),
    )


def imap_auth_failed(settings: ImapSettings, text: str) -> AuthenticationError:
    """The IMAP server refused LOGIN or AUTHENTICATE with `text` (already made safe)."""
    return AuthenticationError(
        f"the IMAP server refused the login for {settings.username!r}: {text}",
        diagnosis=_login_advice.imap_refusal(
            text, server_name(settings), oauth=settings.oauth2_token is not None
        ),
    )


def oauth_failed(
    provider: str, error: str, error_codes: Iterable[int] = (), description: str = ""
) -> Diagnosis:
    """What a token endpoint's refusal means for the tenant (``invalid_grant``, consent, ...).

    `provider` is ``"microsoft"``, ``"google"`` or ``""``; `error` the endpoint's
    ``error`` code, `error_codes` Microsoft's AADSTS numbers, `description` its
    ``error_description`` (the provider's words, never a token).
    """
    return _login_advice.grant_refused(
        " ".join(str(error).split())[:64],
        str(description)[:2000],
        provider=provider or None,
        error_codes=tuple(error_codes),
    )


def sender_refused(reply: SmtpReply, sender: str) -> SenderRefused | ConnectError:
    """MAIL FROM was refused."""
    text = reply.text.lower()
    if reply.code == 530 and "starttls" in text:
        return SenderRefused(
            "the server requires encryption before sending",
            reply=reply,
            diagnosis=Diagnosis(
                Category.AUTH_REQUIRES_TLS,
                "The server only accepts mail over an encrypted connection.",
                ("Choose STARTTLS (usually port 587) or SSL/TLS (usually port 465).",),
            ),
        )
    if (
        reply.code == 530
        or reply.enhanced_status == "5.7.57"  # Microsoft 365: "Client was not authenticated"
        or (reply.enhanced_status == "5.7.0" and "authenticat" in text)
    ):
        return SenderRefused(
            "the server requires a login before sending",
            reply=reply,
            diagnosis=Diagnosis(
                Category.AUTH_REQUIRED,
                "The server only accepts mail from logged-in users.",
                ("Enter the user name and password of the mailbox.",),
            ),
        )
    return SenderRefused(
        f"the server refused the sender address {sender}",
        reply=reply,
        diagnosis=Diagnosis(
            Category.SENDER_REFUSED,
            f"The server does not allow sending as {sender}.",
            (
                "Most providers only allow the mailbox's own address (or configured aliases) "
                "as sender; use the address you log in with.",
            ),
        ),
    )


def recipients_refused(refused: Mapping[str, SmtpReply]) -> RecipientsRefused:
    """Every recipient was refused."""
    listing = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
    temporary = all(reply.is_temporary for reply in refused.values())
    if temporary:
        hints: tuple[str, ...] = (
            "The server asked to try again later (e.g. greylisting or a rate limit).",
        )
    elif any("relay" in reply.text.lower() for reply in refused.values()):
        hints = (
            "The server does not pass mail on for you: log in (user name and password) on the "
            "submission port, 587 with STARTTLS or 465 with SSL/TLS.",
        )
    else:
        hints = ("Check the recipient addresses for typos.",)
    return RecipientsRefused(
        f"every recipient was refused: {listing}",
        refused=refused,
        diagnosis=Diagnosis(
            Category.RECIPIENT_REFUSED, "The server refused all recipients of the message.", hints
        ),
    )


def data_refused(reply: SmtpReply) -> MessageRejected:
    """The server refused the message content (after DATA or the final dot)."""
    # 552 also means "over quota" (5.2.2) or a policy block (5.7.x): only the size
    # codes say the message was too large.
    size = reply.enhanced_status in ("5.3.4", "5.2.3") or (
        reply.code == 552 and reply.enhanced_status is None
    )
    return MessageRejected(
        "the server rejected the message",
        reply=reply,
        diagnosis=Diagnosis(
            Category.MESSAGE_TOO_LARGE if size else Category.MESSAGE_REJECTED,
            "The message is too large for the server."
            if size
            else "The server refused to accept the message.",
            ("Send fewer or smaller attachments.",)
            if size
            else ("The server's reply says why; spam filters and policy rules are common causes.",),
        ),
    )


def server_closed(reply: SmtpReply) -> ConnectError:
    """A 421: the server refuses for now and closes the session; nothing was taken."""
    return ConnectError(
        "the server closed the session",
        reply=reply,
        diagnosis=Diagnosis(
            Category.SERVER_UNAVAILABLE,
            "The server is not accepting mail right now and closed the connection.",
            ("Try again later; the server may be limiting how much is sent at once.",),
        ),
        temporary=True,
    )


def outcome_unknown(cause: DeliveryError) -> DeliveryOutcomeUnknown:
    """A message whose bytes went out but whose final reply never came."""
    return DeliveryOutcomeUnknown(
        "the connection was lost after the whole message was sent; it may have been delivered",
        reply=cause.reply,
        diagnosis=Diagnosis(
            Category.OUTCOME_UNKNOWN,
            "The message was sent, but the server's answer never came.",
            (
                "It may have been delivered: check (e.g. the Sent folder or with the "
                "recipient) before sending again, or it may arrive twice.",
            ),
        ),
        temporary=False,
    )


def kept_refusing(cause: DeliveryError, connections: int) -> ConnectError:
    """The server ended the session before taking the message on every connection tried."""
    return ConnectError(
        f"the server ended the session before taking the message on {connections} connections",
        reply=cause.reply,
        diagnosis=Diagnosis(
            Category.SERVER_UNAVAILABLE,
            "The server kept closing the connection before taking the message; it was not sent.",
            (
                "Try again later; the server may be limiting connections or messages per "
                "connection (then lower max_messages_per_connection).",
            ),
        ),
        temporary=True,
    )


def not_sent(cause: DeliveryError) -> ConnectError:
    """A message none of whose bytes reached a server that read them: safe to resend."""
    return ConnectError(
        "the connection ended before this message was sent",
        reply=cause.reply,
        diagnosis=Diagnosis(
            Category.CONNECTION_LOST,
            "The connection ended before the message was sent; it was not delivered.",
            ("Sending it again is safe.",),
        ),
        temporary=True,
    )


def cancelled() -> ConnectError:
    """An asyncio send was cancelled with its envelope on the wire: the connection ended
    before the message could follow, so the server never took it."""
    return ConnectError(
        "the connection was closed because a send was cancelled before its message went out",
        diagnosis=Diagnosis(
            Category.CONNECTION_LOST,
            "The send was cancelled before the message was sent; it was not delivered.",
            ("Sending it again is safe.",),
        ),
        temporary=True,
    )


def interrupted() -> ConnectError:
    """The thread driving a shared connection was interrupted, so the connection ended."""
    return ConnectError(
        "the connection was closed because the thread driving it was interrupted",
        diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was interrupted."),
        temporary=True,
    )


def closed_before_writing() -> ConnectError:
    """The connection was closed (after another message's failure) before a message
    queued on it could be written: nothing of it went out, so it may go again."""
    return ConnectError(
        "the connection was closed before this message could be written",
        diagnosis=Diagnosis(Category.CONNECTION_LOST, "The connection was closed."),
        temporary=True,
    )


def client_unavailable(cause: str) -> Diagnosis:
    """The outbox could not get a tenant's client: the application's `resolve_client`
    raised (`cause`: a mailbridge error's text, else only the exception's type)."""
    return Diagnosis(
        Category.CLIENT_UNAVAILABLE,
        f"The application could not build this tenant's mail client: {cause}.",
        (
            "Check the tenant's account in the application (deleted, or its settings or "
            "credentials missing); the worker's log names the error.",
            "Once fixed, retry(id) sends the message; nothing was sent meanwhile.",
        ),
    )
