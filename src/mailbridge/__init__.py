"""mailbridge: send business documents by email on behalf of your customers.

Start with `DeliveryClient.own_smtp(sender, SmtpSettings(...))` and
`client.send(DocumentEmail(...))`; see the documentation in docs/.
"""

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:
    from ._addresses import Mailbox
    from ._async_client import AsyncDeliveryClient
    from ._attachments import Attachment
    from ._bulk import BulkOutcome, send_many
    from ._client import DeliveryClient, SendResult
    from ._identity import PlatformRelay, SenderAuthorization
    from ._message import DocumentEmail
    from ._results import ConnectionReport, Step
    from ._verification import VerifiedSender, issue_token, verification_email, verify_token
    from .composer import PreparedMessage
    from .diagnosis import Category, Diagnosis
    from .errors import (
        AuthenticationError,
        AutoconfigError,
        ConfigurationError,
        ConnectError,
        DeliveryError,
        DeliveryOutcomeUnknown,
        DeliveryTimeout,
        DnsLookupError,
        HeaderInjection,
        ImapCommandFailed,
        ImapConnectionLost,
        ImapLimitExceeded,
        ImapTimeout,
        InvalidAddress,
        MailbridgeError,
        MessageError,
        MessageFormatError,
        MessageRejected,
        MissingPlaceholder,
        OutboxError,
        PoolClosed,
        ProtocolError,
        RecipientsRefused,
        SenderNotAuthorized,
        SenderRefused,
        TlsError,
        TlsHandshakeTimeout,
        TokenExpired,
        TokenInvalid,
        TokenMismatch,
        UidValidityChanged,
        UnsupportedByServer,
        VerificationError,
    )
    from .imap import Checkpoint, DocumentKind, ImportBatch, ImportedDocument, InboxImporter
    from .providers import DiscoveryResult, SetupResult, discover, setup
    from .reply import SmtpReply
    from .settings import ImapSettings, Secret, Security, SmtpSettings
    from .smtp import AsyncConnectionPool, ConnectionPool, SmtpTransport, Transport

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncConnectionPool",
    "AsyncDeliveryClient",
    "Attachment",
    "AuthenticationError",
    "AutoconfigError",
    "BulkOutcome",
    "Category",
    "Checkpoint",
    "ConfigurationError",
    "ConnectError",
    "ConnectionPool",
    "ConnectionReport",
    "DeliveryClient",
    "DeliveryError",
    "DeliveryOutcomeUnknown",
    "DeliveryTimeout",
    "Diagnosis",
    "DiscoveryResult",
    "DnsLookupError",
    "DocumentEmail",
    "DocumentKind",
    "HeaderInjection",
    "ImapCommandFailed",
    "ImapConnectionLost",
    "ImapLimitExceeded",
    "ImapSettings",
    "ImapTimeout",
    "ImportBatch",
    "ImportedDocument",
    "InboxImporter",
    "InvalidAddress",
    "Mailbox",
    "MailbridgeError",
    "MessageError",
    "MessageFormatError",
    "MessageRejected",
    "MissingPlaceholder",
    "OutboxError",
    "PlatformRelay",
    "PoolClosed",
    "PreparedMessage",
    "ProtocolError",
    "RecipientsRefused",
    "Secret",
    "Security",
    "SendResult",
    "SenderAuthorization",
    "SenderNotAuthorized",
    "SenderRefused",
    "SetupResult",
    "SmtpReply",
    "SmtpSettings",
    "SmtpTransport",
    "Step",
    "TlsError",
    "TlsHandshakeTimeout",
    "TokenExpired",
    "TokenInvalid",
    "TokenMismatch",
    "Transport",
    "UidValidityChanged",
    "UnsupportedByServer",
    "VerificationError",
    "VerifiedSender",
    "__version__",
    "discover",
    "issue_token",
    "send_many",
    "setup",
    "verification_email",
    "verify_token",
]

if not TYPE_CHECKING:  # type checkers see the imports above, not a module __getattr__
    __getattr__, __dir__ = exports(
        __name__,
        {
            "._addresses": ("Mailbox",),
            "._async_client": ("AsyncDeliveryClient",),
            "._attachments": ("Attachment",),
            "._bulk": ("BulkOutcome", "send_many"),
            "._client": ("DeliveryClient", "SendResult"),
            ".composer": ("PreparedMessage",),
            ".diagnosis": ("Category", "Diagnosis"),
            ".errors": (
                "AuthenticationError",
                "AutoconfigError",
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
                "OutboxError",
                "PoolClosed",
                "ProtocolError",
                "RecipientsRefused",
                "SenderNotAuthorized",
                "SenderRefused",
                "TlsError",
                "TlsHandshakeTimeout",
                "TokenExpired",
                "TokenInvalid",
                "TokenMismatch",
                "UidValidityChanged",
                "UnsupportedByServer",
                "VerificationError",
            ),
            "._identity": ("PlatformRelay", "SenderAuthorization"),
            ".imap": (
                "Checkpoint",
                "DocumentKind",
                "ImportBatch",
                "ImportedDocument",
                "InboxImporter",
            ),
            "._message": ("DocumentEmail",),
            "._verification": (
                "VerifiedSender",
                "issue_token",
                "verification_email",
                "verify_token",
            ),
            ".providers": ("DiscoveryResult", "SetupResult", "discover", "setup"),
            ".reply": ("SmtpReply",),
            ".settings": ("ImapSettings", "Secret", "Security", "SmtpSettings"),
            "._results": ("ConnectionReport", "Step"),  # leaf values: no SMTP code loaded
            ".smtp": ("AsyncConnectionPool", "ConnectionPool", "SmtpTransport", "Transport"),
        },
        globals(),
    )
