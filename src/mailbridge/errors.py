"""Every error mailbridge raises, in one place.

The hierarchy, so that callers can branch on what they can act on::

    MailbridgeError
    ├── ConfigurationError          settings are invalid (ValueError)
    ├── MessageError                the email cannot be composed (ValueError)
    │   ├── InvalidAddress          .field, .address: an address failed validation
    │   ├── MissingPlaceholder      .field, .name: a {placeholder} has no value
    │   ├── HeaderInjection         .field: CR, LF or NUL inside a header value
    │   ├── MessageFormatError      raw message bytes that cannot be sent as they are
    │   └── TooManyRecipients       more recipients than the provider allows in a whole window
    ├── AutoconfigError             an autoconfig document cannot be used (ValueError)
    ├── SenderNotAuthorized         SPF does not (yet) let the relay send as the tenant; .plan
    ├── DnsLookupError              a DNS lookup failed or timed out; .name, .temporary
    ├── BlacklistError              a blacklist (DNSBL) could not be checked; .zone, .diagnosis
    │   ├── BlacklistQueryRefused   the list answered an error code (Spamhaus 127.255.255.x)
    │   ├── BlacklistResolverUntrusted  self-test failed, or an answer outside 127.0.0.0/8
    │   ├── BlacklistLookupFailed   SERVFAIL, no DNS server reachable, the host has no address
    │   └── BlacklistTimeout        no answer in time (also a TimeoutError)
    ├── RecipientsSuppressed        send() refused recipients on the suppression list; .suppressed
    ├── SuppressionListError        the suppression list's database failed (locked, unreadable)
    ├── UidValidityChanged          an import batch no longer matches the folder's UIDs
    ├── PoolClosed                  the connection pool (or its client) was closed
    ├── OutboxError                 an outbox operation cannot be done: unknown id, schema too new
    ├── VerificationError           a sender-verification token is not valid
    │   ├── TokenExpired            .expired_at
    │   ├── TokenInvalid            malformed, or signed with another secret (tampered)
    │   └── TokenMismatch           valid, but for another address
    └── DeliveryError               talking to a server failed; .reply, .temporary, .diagnosis
        ├── ConnectError            DNS, connection refused, connection lost, 421
        │   ├── DeliveryTimeout     the server did not answer in time (also a TimeoutError)
        │   │   └── ImapTimeout     an IMAP command overran its deadline (imaplib.abort)
        │   └── ImapConnectionLost  the IMAP connection broke or was aborted (imaplib.abort)
        ├── DeliveryOutcomeUnknown  the message went out, its answer never came: may be delivered
        ├── TlsError                handshake, certificate, STARTTLS not offered
        │   └── TlsHandshakeTimeout no TLS handshake in time (also a DeliveryTimeout)
        ├── AuthenticationError     credentials refused, AUTH not offered, no usable mechanism
        │   └── OAuthError          no OAuth2 access token; .provider, .error, .error_codes
        │       ├── OAuthGrantInvalid       invalid_grant: refresh token revoked or expired
        │       ├── OAuthConsentRequired    the user or their admin has not consented to the scopes
        │       ├── OAuthUnavailable        the token endpoint failed lately; .retry_at (temporary)
        │       └── TokenStoreError         the TokenStore could not be read or written
        ├── ProtocolError           the server broke the protocol or closed mid-transaction
        │   ├── ImapCommandFailed       IMAP NO/BAD or an unreadable answer (imaplib.error)
        │   └── ImapLimitExceeded       an IMAP answer over a size/count limit; connection closed
        ├── UnsupportedByServer     the message needs an extension the server lacks (SMTPUTF8, SIZE)
        ├── SenderRefused           MAIL FROM refused
        ├── RecipientsRefused       every recipient refused; .refused maps address to reply
        └── MessageRejected         the server refused the message content after DATA

Every `DeliveryError` keeps the server's `SmtpReply` (when there was one) and a
`Diagnosis`: a category to branch on, a one-line summary a non-expert can read,
and concrete hints. Texts never contain a password or token.
"""

from __future__ import annotations

import datetime
import imaplib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .diagnosis import Diagnosis
    from .reply import SmtpReply

__all__ = [
    "AuthenticationError",
    "AutoconfigError",
    "BlacklistError",
    "BlacklistLookupFailed",
    "BlacklistQueryRefused",
    "BlacklistResolverUntrusted",
    "BlacklistTimeout",
    "ConfigurationError",
    "ConnectError",
    "DeliveryError",
    "DeliveryOutcomeUnknown",
    "DeliveryTimeout",
    "DnsLookupError",
    "HeaderInjection",
    "ImapCommandFailed",
    "ImapConnectionLost",
    "ImapLimitExceeded",
    "ImapTimeout",
    "InvalidAddress",
    "MailbridgeError",
    "MessageError",
    "MessageFormatError",
    "MessageRejected",
    "MissingPlaceholder",
    "OAuthConsentRequired",
    "OAuthError",
    "OAuthGrantInvalid",
    "OAuthUnavailable",
    "OutboxError",
    "PoolClosed",
    "ProtocolError",
    "RecipientsRefused",
    "RecipientsSuppressed",
    "SenderNotAuthorized",
    "SenderRefused",
    "SuppressionListError",
    "TlsError",
    "TlsHandshakeTimeout",
    "TokenExpired",
    "TokenInvalid",
    "TokenMismatch",
    "TokenStoreError",
    "TooManyRecipients",
    "UidValidityChanged",
    "UnsupportedByServer",
    "VerificationError",
]


def _restore(cls: type[MailbridgeError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class MailbridgeError(Exception):
    """Base class of every error raised by mailbridge."""

    def __reduce__(self) -> Any:
        # Keyword-only constructors defeat Exception's pickling; task queues and process
        # pools need to carry these errors back to the caller.
        return (_restore, (type(self), self.args, self.__dict__))


class ConfigurationError(MailbridgeError, ValueError):
    """A setting is invalid; `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class MessageError(MailbridgeError, ValueError):
    """The email cannot be composed as given; `field` names the part at fault."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidAddress(MessageError):
    """An email address failed validation."""

    def __init__(self, field: str, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(field, f"invalid address {address!r}: {reason}")


class MissingPlaceholder(MessageError):
    """A `{placeholder}` in the subject or body has no value."""

    def __init__(self, field: str, name: str) -> None:
        self.name = name
        super().__init__(field, f"no value for placeholder {{{name}}}")


class HeaderInjection(MessageError):
    """A header value contains CR, LF or NUL, which could inject headers."""

    def __init__(self, field: str) -> None:
        super().__init__(field, "line breaks (CR/LF) and NUL are not allowed in a header value")


class MessageFormatError(MessageError):
    """Message bytes that cannot be transmitted as they are (e.g. a line over 998 octets)."""


class TooManyRecipients(MessageError):
    """A message has more recipients than its provider lets the mailbox send in a whole
    minute or day; `limit_field` (``per_day_recipients``) and `limit` say which limit."""

    def __init__(
        self, count: int, limit_field: str, limit: int, provider: str, window: str
    ) -> None:
        self.count = count
        self.limit_field = limit_field
        self.limit = limit
        self.provider = provider
        super().__init__(
            "recipients",
            f"{count} recipients, but {provider} lets a mailbox send to {limit} a {window}"
            f" ({limit_field} = {limit}): split the message",
        )


class AutoconfigError(MailbridgeError, ValueError):
    """An autoconfig document (or the address given with it) cannot be used."""


class SenderNotAuthorized(MailbridgeError):
    """The tenant's SPF record does not authorise the platform's relay.

    `plan` (an `SpfPlan`, when the relay's include is known) says exactly what
    the tenant must publish; `results` are the SPF results per relay IP.
    """

    def __init__(self, message: str, *, plan: Any = None, results: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.plan = plan
        self.results = results


class DnsLookupError(MailbridgeError):
    """A DNS lookup of `name` failed: no answer in time, SERVFAIL, no server reachable.

    `temporary` is True: asking again later may succeed.
    """

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        self.temporary = True
        super().__init__(f"the DNS lookup of {name} failed: {problem}")


class BlacklistError(MailbridgeError):
    """A blacklist (DNSBL) could not be checked, so its verdict is unknown.

    `zone` names the list (a DQS key shown as `<key>`; None for the host lookup),
    `diagnosis` says what to do, `temporary` whether asking again later may help.
    Never a listing: a listed address is a result, not an error.
    """

    def __init__(
        self, message: str, *, zone: str | None, diagnosis: Diagnosis, temporary: bool = False
    ) -> None:
        super().__init__(message)
        self.zone = zone
        self.diagnosis = diagnosis
        self.temporary = temporary


class BlacklistQueryRefused(BlacklistError):
    """The list answered with an error code (e.g. Spamhaus 127.255.255.254: the resolver is
    blocked), never a listing; `codes` are the answers."""

    def __init__(
        self, message: str, *, zone: str | None, diagnosis: Diagnosis, codes: tuple[str, ...]
    ) -> None:
        super().__init__(message, zone=zone, diagnosis=diagnosis)
        self.codes = codes


class BlacklistResolverUntrusted(BlacklistError):
    """The DNS resolver's answers cannot be trusted: the RFC 5782 self-test failed, or it
    answered with an address outside 127.0.0.0/8 (a resolver that rewrites unknown names)."""


class BlacklistLookupFailed(BlacklistError):
    """A DNS lookup for the check failed: SERVFAIL, no server reachable, or the host name
    to check has no address."""


class BlacklistTimeout(BlacklistLookupFailed, TimeoutError):
    """No answer within the check's time limit; `temporary` is True."""


class RecipientsSuppressed(MailbridgeError):
    """`send()` refused the message before sending anything: recipients on the suppression
    list. `suppressed` maps each address to its `Suppression` (reason, status)."""

    def __init__(self, suppressed: Mapping[str, Any]) -> None:
        self.suppressed = dict(suppressed)
        listing = "; ".join(
            f"{address} ({entry.reason}{', ' + entry.status if entry.status else ''})"
            for address, entry in self.suppressed.items()
        )
        super().__init__(
            f"not sent: recipients on the suppression list (they bounced before): {listing}"
        )


class SuppressionListError(MailbridgeError):
    """The suppression list's database failed (locked too long, unreadable, disk full)."""


class UidValidityChanged(MailbridgeError):
    """The IMAP folder's UIDVALIDITY changed between fetching and committing an import."""


class PoolClosed(MailbridgeError):
    """The connection pool was closed (`close()`), so it hands out no more connections."""


class OutboxError(MailbridgeError):
    """An outbox operation cannot be done: no such message, or a schema newer than this code."""


class VerificationError(MailbridgeError):
    """A sender-verification token cannot be accepted."""


class TokenExpired(VerificationError):
    """The token was valid but has expired; `expired_at` says when (UTC)."""

    def __init__(self, expired_at: datetime.datetime) -> None:
        self.expired_at = expired_at
        super().__init__(f"the verification link expired at {expired_at:%Y-%m-%d %H:%M} UTC")


class TokenInvalid(VerificationError):
    """The token is malformed or its signature does not match (tampered or another secret)."""


class TokenMismatch(VerificationError):
    """The token is valid but was issued for another address."""


class DeliveryError(MailbridgeError):
    """Talking to the mail server failed.

    `reply` is the server's reply when there was one, `temporary` tells whether
    trying again later may succeed, `diagnosis` explains it for a person.
    """

    def __init__(
        self,
        message: str,
        *,
        diagnosis: Diagnosis,
        reply: SmtpReply | None = None,
        temporary: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = reply
        self.diagnosis = diagnosis
        if temporary is None:
            temporary = reply.is_temporary if reply is not None else False
        self.temporary = temporary

    def __str__(self) -> str:
        text = super().__str__()
        if self.reply is not None and str(self.reply) not in text:
            text = f"{text} (server said: {self.reply})"
        return text


class ConnectError(DeliveryError):
    """The server could not be reached or ended the session: unknown host, refused, lost, 421."""


class DeliveryTimeout(ConnectError, TimeoutError):
    """The server did not connect, greet or answer within the configured time-out."""


class DeliveryOutcomeUnknown(DeliveryError):
    """The whole message went out but the server's answer never came: it may be delivered.

    Never retried automatically (it could arrive twice); `temporary` is False.
    """


class TlsError(DeliveryError):
    """TLS failed: handshake, certificate verification, or STARTTLS not offered."""


class TlsHandshakeTimeout(TlsError, DeliveryTimeout):
    """The TCP connection was made but the TLS handshake did not finish in time.

    Both a `TlsError` (the advice is about security modes and ports) and a
    `DeliveryTimeout` (so also a `TimeoutError`); `temporary` is True.
    """


class AuthenticationError(DeliveryError):
    """The server refused the credentials, or no safe way to authenticate was available."""


class OAuthError(AuthenticationError):
    """No OAuth2 access token could be obtained from the authorization server.

    `provider` is "microsoft", "google" or "", `error` the OAuth error code (RFC 6749
    5.2, e.g. "invalid_grant"), `error_codes` Microsoft's AADSTS numbers, `description`
    the server's error_description (shortened; never a token).
    """

    def __init__(
        self,
        message: str,
        *,
        diagnosis: Diagnosis,
        provider: str = "",
        error: str = "",
        error_codes: tuple[int, ...] = (),
        description: str = "",
        temporary: bool = False,
    ) -> None:
        super().__init__(message, diagnosis=diagnosis, temporary=temporary)
        self.provider = provider
        self.error = error
        self.error_codes = error_codes
        self.description = description


class OAuthGrantInvalid(OAuthError):
    """The refresh token was refused (invalid_grant): revoked, expired or the password changed.

    Permanent: the account must be signed in again; it is never retried.
    """


class OAuthConsentRequired(OAuthError):
    """The user, or their organisation's administrator, has not consented to the scopes."""


class OAuthUnavailable(OAuthError):
    """The token endpoint failed moments ago; it is not asked again before `retry_at`.

    Temporary: `retry_at` (epoch seconds) is when the next `token()` tries again.
    """

    def __init__(self, message: str, *, retry_at: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_at = retry_at


class TokenStoreError(OAuthError):
    """The `TokenStore` could not be read or written (its file, its database);
    `temporary` when it was busy or locked."""


class ProtocolError(DeliveryError):
    """The server answered outside the protocol or closed the connection mid-transaction."""


class UnsupportedByServer(DeliveryError):
    """The message needs an SMTP extension (SMTPUTF8, SIZE) that the server does not offer."""


class SenderRefused(DeliveryError):
    """The server refused the envelope sender (MAIL FROM)."""


class RecipientsRefused(DeliveryError):
    """The server refused every recipient; `refused` maps each address to its reply."""

    def __init__(
        self,
        message: str,
        *,
        refused: Mapping[str, SmtpReply],
        diagnosis: Diagnosis,
    ) -> None:
        self.refused = dict(refused)
        replies = list(self.refused.values())
        temporary = bool(replies) and all(r.is_temporary for r in replies)
        super().__init__(
            message,
            diagnosis=diagnosis,
            reply=replies[0] if replies else None,
            temporary=temporary,
        )


class MessageRejected(DeliveryError):
    """The server refused the message after DATA (content, size, policy)."""


# IMAP. Each is also the imaplib exception imapclient users catch, so code written
# against imapclient (`except IMAPClientError`, `except IMAPClientAbortError`) keeps working.


class ImapCommandFailed(ProtocolError, imaplib.IMAP4.error):
    """An IMAP command was answered NO/BAD, or with a response that cannot be parsed."""


class ImapConnectionLost(ConnectError, imaplib.IMAP4.abort):
    """The IMAP connection broke, or was closed because the server misbehaved."""


class ImapLimitExceeded(ProtocolError, imaplib.IMAP4.abort):
    """An IMAP response exceeded a size or count limit; the connection was closed."""


class ImapTimeout(DeliveryTimeout, imaplib.IMAP4.abort):
    """An IMAP command did not complete within its deadline; the connection was closed."""
