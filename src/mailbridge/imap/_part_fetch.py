"""Reading messages' descriptions and attachment parts from an untrusted IMAP server.

Each part is requested as partial FETCHes (``BODY.PEEK[2]<0.n>``) no longer in all
than a part within the caller's limit can be, and at most WINDOW bytes each, so an
oversized or lying part costs at most that many bytes and no literal is larger than
a window (the connection's own literal cap is the second line). A message
whose description cannot be parsed costs only that message, never its batch.
"""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ImapCommandFailed, ImapLimitExceeded
from ._bodystructure import Part
from ._client import BoundedClient
from ._folder_session import FolderSession

__all__ = ["WINDOW", "describe", "encoded_limit", "read_parts"]

_ITEMS = ["BODYSTRUCTURE", "ENVELOPE"]
_SLACK = 4096  # bytes beyond a declared size still accepted (servers that count loosely)
WINDOW = 4 * 1024 * 1024  # bytes asked for in one FETCH: larger parts come in windows

Report = Callable[[int, str], None]


def _why(exc: ImapCommandFailed | ImapLimitExceeded) -> str:
    """What went wrong, for a problem report: the parser's error, or the limit passed."""
    if isinstance(exc, ImapLimitExceeded):
        return f": {exc}"
    return f" ({type(exc.__cause__ or exc).__name__})"


def describe(session: FolderSession, uids: Sequence[int], report: Report) -> dict[int, Any]:
    """BODYSTRUCTURE and ENVELOPE of `uids`: one FETCH, or one per message if that breaks.

    Messages the server does not describe, or describes unreadably or beyond the
    limits, are reported (the session is reopened when that closed it). A lost
    connection or a time-out raises.
    """
    try:  # BoundedClient raises typed errors only
        response = session.client.fetch(uids, _ITEMS)
    except ImapCommandFailed:
        response = None  # one message's description broke the batch: ask one by one
    except ImapLimitExceeded as exc:  # the wire closed the connection
        session.reopen(exc)
        response = None
    found: dict[int, Any] = {}
    for uid in uids:
        data: Any = None
        if response is not None:
            data = response.get(uid)
        else:
            try:
                data = session.client.fetch([uid], _ITEMS).get(uid)
            except (ImapCommandFailed, ImapLimitExceeded) as exc:
                report(uid, f"the server's description could not be read{_why(exc)}")
                if isinstance(exc, ImapLimitExceeded):
                    session.reopen(exc)
                continue
        if not isinstance(data, dict) or b"BODYSTRUCTURE" not in data:
            report(uid, "the server did not describe this message (deleted meanwhile?)")
            continue
        found[uid] = data
    return found


def encoded_limit(max_bytes: int, encoding: str) -> int:
    """The most bytes a part of at most `max_bytes` can take on the wire in `encoding`."""
    if encoding == "base64":  # 4 characters per 3 bytes, CRLF after each 76
        encoded = (max_bytes + 2) // 3 * 4
        return encoded + encoded // 38 + _SLACK
    if encoding == "quoted-printable":  # "=XX" per byte at worst, "=\r\n" soft breaks
        return 3 * max_bytes + 3 * max_bytes // 73 + _SLACK
    return max_bytes


def _decode(data: bytes | bytearray, encoding: str) -> bytes | None:
    try:
        if encoding == "base64":
            return base64.b64decode(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return None
    return bytes(data)


def _request(part: Part, limit: int) -> int:
    """How many bytes to ask for: the limit, or less when the server declared a smaller size."""
    return limit if part.size is None else min(limit, 2 * part.size + _SLACK)


def _plan(parts: Sequence[Part], requests: dict[str, int]) -> Iterator[list[Part]]:
    """Small parts grouped up to WINDOW bytes per FETCH; a larger part alone."""
    group: list[Part] = []
    used = 0
    for part in parts:
        size = requests[part.section] + 1
        if group and (size > WINDOW or used + size > WINDOW):
            yield group
            group, used = [], 0
        if size > WINDOW:
            yield [part]
            continue
        group.append(part)
        used += size
    if group:
        yield group


def _fetch_ranges(
    client: BoundedClient, uid: int, ranges: Sequence[tuple[str, int, int]]
) -> dict[Any, Any]:
    keys = [f"BODY.PEEK[{section}]<{start}.{length}>" for section, start, length in ranges]
    answer = client.fetch([uid], keys).get(uid, {})
    return answer if isinstance(answer, dict) else {}


def _slice(bodies: dict[Any, Any], section: str, start: int) -> bytes | None:
    """The bytes of `section` from `start`; also when the server ignored the range."""
    for key in (f"BODY[{section}]<{start}>", f"BODY[{section}]"):
        value = bodies.get(key.encode())
        if isinstance(value, bytes):
            return value
    return None


def _read_windows(client: BoundedClient, uid: int, part: Part, request: int) -> bytearray | None:
    """A large part, WINDOW bytes per FETCH, until it ends or passes `request` bytes."""
    data = bytearray()
    for _ in range(request // WINDOW + 2):  # each round adds WINDOW bytes, or ends
        length = min(WINDOW, request + 1 - len(data))
        start = len(data)
        chunk = _slice(
            _fetch_ranges(client, uid, [(part.section, start, length)]), part.section, start
        )
        if chunk is None:
            return None
        data += chunk
        if len(chunk) < length or len(data) > request:
            break
    return data


def read_parts(
    session: FolderSession,
    uid: int,
    parts: Sequence[Part],
    max_bytes: int,
    report: Callable[[Part, str], None],
) -> Iterator[tuple[Part, bytes]]:
    """The decoded content of each of `parts` within `max_bytes`; the others are reported.

    A part whose answer exceeds the limits (a literal over the cap) is reported
    and the session reopened for the rest; a lost connection or a time-out raises.
    """
    limits = {part.section: encoded_limit(max_bytes, part.encoding) for part in parts}
    over = f"over the limit of {max_bytes} bytes"
    fetchable = []
    for part in parts:
        if part.size is not None and part.size > limits[part.section]:
            report(part, f"{part.size} bytes declared, {over}")
        else:
            fetchable.append(part)
    requests = {part.section: _request(part, limits[part.section]) for part in fetchable}
    for group in _plan(fetchable, requests):
        client = session.client
        try:
            if requests[group[0].section] + 1 > WINDOW:
                raws: dict[str, bytes | bytearray | None] = {
                    group[0].section: _read_windows(
                        client, uid, group[0], requests[group[0].section]
                    )
                }
            else:
                ranges = [(part.section, 0, requests[part.section] + 1) for part in group]
                bodies = _fetch_ranges(client, uid, ranges)
                raws = {part.section: _slice(bodies, part.section, 0) for part in group}
        except (ImapCommandFailed, ImapLimitExceeded) as exc:
            for part in group:
                report(part, f"could not be read{_why(exc)}")
            if isinstance(exc, ImapLimitExceeded):
                session.reopen(exc)
            continue
        for part in group:
            raw = raws[part.section]
            if raw is None:
                report(part, "the server did not return it")
                continue
            if len(raw) > requests[part.section]:
                declared = requests[part.section] < limits[part.section]
                report(part, f"larger than the {part.size} bytes declared" if declared else over)
                continue
            content = _decode(raw, part.encoding)
            if content is None:
                report(part, f"not readable as {part.encoding}")
            elif len(content) > max_bytes:
                report(part, f"{len(content)} bytes, {over}")
            else:
                yield part, content
