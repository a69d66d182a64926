"""mailbridge: send business documents by email on behalf of your customers.

Start with `DeliveryClient.own_smtp(sender, SmtpSettings(...))` and
`client.send(DocumentEmail(...))`; see the documentation in docs/.
"""

from ._async_client import AsyncDeliveryClient
from .addresses import Mailbox
from .attachments import Attachment
from .bulk import BulkOutcome, send_many
from .client import DeliveryClient, SendResult
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
    PoolClosed,
    ProtocolError,
    RecipientsRefused,
    SenderNotAuthorized,
    SenderRefused,
    TlsError,
    TokenExpired,
    TokenInvalid,
    TokenMismatch,
    UidValidityChanged,
    UnsupportedByServer,
    VerificationError,
)
from .identity import PlatformRelay, SenderAuthorization
from .imap import Checkpoint, DocumentKind, ImportBatch, ImportedDocument, InboxImporter
from .message import DocumentEmail
from .providers import DiscoveryResult, SetupResult, discover, setup
from .reply import SmtpReply
from .settings import ImapSettings, Secret, Security, SmtpSettings
from .smtp import (
    AsyncConnectionPool,
    ConnectionPool,
    ConnectionReport,
    SmtpTransport,
    Step,
    Transport,
)

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
    "TokenExpired",
    "TokenInvalid",
    "TokenMismatch",
    "Transport",
    "UidValidityChanged",
    "UnsupportedByServer",
    "VerificationError",
    "__version__",
    "discover",
    "send_many",
    "setup",
]
