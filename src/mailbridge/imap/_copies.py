"""Reading and writing message copies in an IMAP folder: look-up by Message-ID, APPENDUID.

Pure protocol helpers for the archiver, without its batching or session keeping.
"""

from __future__ import annotations

import re
from typing import Any

import imapclient
import imapclient.exceptions

__all__ = [
    "appended_uids",
    "find_by_message_id",
    "quoted",
    "refusal_is_final",
    "refused_literal",
    "reply_text",
]

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([\d:,]+)\]", re.IGNORECASE)
_MESSAGE_ID = re.compile(rb"^Message-ID:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FOLDING = re.compile(rb"\r?\n[ \t]+")
_CODE = re.compile(r"^\s*\[([A-Za-z-]+)")
# Response codes (RFC 5530, RFC 3501) that concern the folder or the account, so
# sending the same messages again one by one would be refused just the same.
_FINAL_CODES = frozenset(
    {
        "OVERQUOTA",
        "NOPERM",
        "TRYCREATE",
        "NONEXISTENT",
        "CANNOT",
        "CONTACTADMIN",
        "AUTHORIZATIONFAILED",
        "EXPIRED",
        "PRIVACYREQUIRED",
        "UNAVAILABLE",
        "INUSE",
        "SERVERBUG",
    }
)


def appended_uids(response: Any, count: int) -> list[int | None]:
    """The UIDs an APPENDUID response code gives `count` messages, in order (RFC 4315).

    A uid-range means every UID between its ends in either order, and UIDs are
    assigned in ascending order as the messages are appended; anything
    unexpected gives None for each.
    """
    if isinstance(response, tuple):  # multiappend: (typ, [data, ...])
        raw = b" ".join(item for item in response[1] if isinstance(item, bytes))
    else:
        raw = bytes(response)
    match = _APPENDUID.search(raw)
    if match is None:
        return [None] * count
    try:
        ranges = []
        total = 0
        for part in match.group(2).split(b","):
            first, _, last = part.partition(b":")
            low, high = sorted((int(first), int(last or first)))
            total += high - low + 1
            if total > count:  # never expand a hostile 1:4000000000
                return [None] * count
            ranges.append((low, high))
    except ValueError:
        return [None] * count
    uids = sorted({uid for low, high in ranges for uid in range(low, high + 1)})
    return list(uids) if len(uids) == count else [None] * count


def quoted(message_id: str) -> bytes:
    # Always a quoted string: imapclient leaves values like <a{3}b@x> unquoted.
    return b'"' + message_id.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def reply_text(response: Any) -> str:
    """The text of an APPEND's tagged reply as imaplib returns it, for people to read."""
    data = response[1] if isinstance(response, tuple) and len(response) > 1 else response
    items = data if isinstance(data, list) else [data]
    parts = [i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i) for i in items]
    return " ".join(part for part in parts if part).strip() or "no reason given"


def refusal_is_final(text: str) -> bool:
    """True when a refused MULTIAPPEND's reply concerns the folder, not the batch's form.

    Such a refusal (over quota, no permission, no such folder, ...) would meet every
    one of the messages again; any other (MULTIAPPEND not supported, LIMIT, TOOBIG,
    a NO without a code that hides which message failed) is not.
    """
    code = _CODE.match(text)
    return code is not None and code.group(1).upper() in _FINAL_CODES


def refused_literal(exc: BaseException) -> bool:
    # imapclient (without LITERAL+) raises this when the server answers the literal's
    # announcement with a tagged NO instead of "+": the command is over, nothing stored.
    return str(exc).startswith("unexpected response while waiting for continuation")


def find_by_message_id(client: imapclient.IMAPClient, message_ids: list[str]) -> dict[str, int]:
    """UIDs of messages already in the folder, by Message-ID: one SEARCH for all.

    SEARCH matches substrings and ignores case, so every hit's Message-ID is
    read back and compared exactly; a hit that cannot be read raises rather
    than risk a second copy.
    """
    criteria = b"HEADER Message-ID " + quoted(message_ids[-1])
    for message_id in reversed(message_ids[:-1]):
        criteria = b"OR HEADER Message-ID " + quoted(message_id) + b" " + criteria
    uids = sorted(int(uid) for uid in client.search(criteria))
    if not uids:
        return {}
    wanted = set(message_ids)
    found: dict[str, int] = {}
    fetched = client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    for uid in uids:
        sections = fetched.get(uid, {})
        header = next(
            (v for k, v in sections.items() if bytes(k).startswith(b"BODY[HEADER.FIELDS")),
            None,
        )
        if header is None:
            if uid in fetched or not fetched:  # expunged meanwhile, or nothing came
                raise imapclient.exceptions.IMAPClientError(
                    "the server did not return the Message-ID of a matching message"
                )
            continue
        unfolded = _FOLDING.sub(b" ", bytes(header))
        match = _MESSAGE_ID.search(unfolded)
        value = match.group(1).strip().decode("ascii", "replace") if match else ""
        if value in wanted:
            found[value] = max(uid, found.get(value, 0))
    return found
