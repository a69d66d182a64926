"""mailbridge: send business documents by email on behalf of your customers.

Start with `DeliveryClient.own_smtp(sender, SmtpSettings(...))` and
`client.send(DocumentEmail(...))`; see the documentation in docs/.
"""

from .addresses import Mailbox
from .attachments import Attachment
from .bulk import BulkOutcome, send_many
from .client import DeliveryClient, SendResult
from .composer import PreparedMessage
from .diagnosis import Category, Diagnosis
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    DeliveryError,
    HeaderInjection,
    InvalidAddress,
    MailbridgeError,
    MessageError,
    MessageFormatError,
    MessageRejected,
    MissingPlaceholder,
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
from .smtp import ConnectionReport, SmtpTransport, Step, Transport

__version__ = "0.1.0.dev0"

__all__ = [
    "Attachment",
    "AuthenticationError",
    "BulkOutcome",
    "Category",
    "Checkpoint",
    "ConfigurationError",
    "ConnectError",
    "ConnectionReport",
    "DeliveryClient",
    "DeliveryError",
    "Diagnosis",
    "DiscoveryResult",
    "DocumentEmail",
    "DocumentKind",
    "HeaderInjection",
    "ImapSettings",
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
