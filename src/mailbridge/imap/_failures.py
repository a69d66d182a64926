"""Turning what imaplib/imapclient raise into typed errors with readable server texts."""

from __future__ import annotations

import ast
import imaplib
import re

from ..diagnosis import Category, Diagnosis
from ..errors import ImapCommandFailed, ImapConnectionLost, ImapTimeout, MailbridgeError

__all__ = ["PARSE_FAILURES", "server_text", "typed_error", "unusable_answer"]

MAX_TEXT = 300
# What imapclient's parsers raise on answers they cannot read: hostile nesting ends in
# RecursionError inside the parser, odd shapes in TypeError/IndexError/KeyError, bad
# modified UTF-7 folder names in UnicodeDecodeError (a ValueError).
PARSE_FAILURES = (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError)

_BYTES_REPR = re.compile(r"""b(['"])((?:\\.|(?!\1).)*)\1""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _unbytes(match: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return match.group(0)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else match.group(0)


def server_text(value: object, limit: int = MAX_TEXT) -> str:
    """A server's text for a message: decoded, no bytes reprs or control characters, bounded."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")
    else:
        text = str(value)[: limit * 8]
        text = _BYTES_REPR.sub(_unbytes, text)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def typed_error(exc: BaseException, action: str) -> MailbridgeError:
    """The typed error for `exc` raised while `action` ("FETCH", "listing folders")."""
    if isinstance(exc, MailbridgeError):
        return exc
    if isinstance(exc, TimeoutError):
        return ImapTimeout(
            f"the IMAP server did not answer {action} in time",
            diagnosis=Diagnosis(Category.TIMEOUT, "The IMAP server took too long to answer."),
            temporary=True,
        )
    if isinstance(exc, (imaplib.IMAP4.abort, OSError)):
        # imaplib's text first: callers match on it (see copies.refused_literal).
        detail = server_text(exc) if isinstance(exc, imaplib.IMAP4.abort) else type(exc).__name__
        return ImapConnectionLost(
            f"{detail} (the IMAP connection broke during {action})",
            diagnosis=Diagnosis(
                Category.CONNECTION_LOST,
                "The connection to the IMAP server was lost.",
                ("Try again; if it keeps happening, the server may be overloaded.",),
            ),
            temporary=True,
        )
    if isinstance(exc, imaplib.IMAP4.error):
        return ImapCommandFailed(
            f"the IMAP server refused {action}: {server_text(exc)}",
            diagnosis=Diagnosis(Category.PROTOCOL, "The IMAP server refused a command."),
        )
    return unusable_answer(action, type(exc).__name__)


def unusable_answer(action: str, why: str) -> ImapCommandFailed:
    """An answer to `action` that breaks the protocol; `why` says how (no server text)."""
    return ImapCommandFailed(
        f"the IMAP server's answer to {action} could not be read ({why})",
        diagnosis=Diagnosis(
            Category.PROTOCOL,
            "The IMAP server sent an answer outside the protocol.",
            ("Tell the email provider; the server software may be faulty.",),
        ),
    )
