"""Tying a bounce to the message that bounced: ENVID, Message-ID, VERP, X-Failed-Recipients.

In that order, as sure as each is: our envelope id comes back only in a DSN
that answers our own request; the Message-ID only when the headers were
returned; the VERP tag (relay mode: ``bounces+TOKEN@app.example``) only to the
platform's bounce address; a failed recipient alone may match several sent
messages (the newest is taken). A `SentIndex` maps each key to the message;
without one, what the bounce itself names is reported.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import attrs

from ._mime import normalize, parse_fields
from ._model import BounceReport

if TYPE_CHECKING:
    from .._client import SendResult
    from .._identity import PlatformRelay

__all__ = ["Correlation", "MemorySentIndex", "SentIndex", "SentRef", "correlate", "verp_token"]

KEYS = ("envelope_id", "message_id", "verp", "recipient")
_HEADER_END = re.compile(rb"\n\n")
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")


@attrs.frozen
class SentRef:
    """A sent message as your application knows it: its Message-ID and envelope id."""

    message_id: str
    envelope_id: str | None = None


class SentIndex(Protocol):
    """Finds a sent message by `key` ("envelope_id", "message_id", "verp", "recipient")."""

    def lookup(self, key: str, value: str) -> SentRef | None:
        """The message `value` identifies, or None."""


class MemorySentIndex:
    """A `SentIndex` in memory, holding the newest `capacity` messages (thread-safe).

    Add each `SendResult` (with the `PlatformRelay` in relay mode, for VERP);
    an application with a database implements `SentIndex` over its own table.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, str], SentRef] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self,
        message_id: str,
        *,
        envelope_id: str | None = None,
        recipients: tuple[str, ...] = (),
        verp_token: str | None = None,
    ) -> SentRef:
        """Remember one sent message under each of its keys."""
        ref = SentRef(message_id, envelope_id)
        keys = [("message_id", message_id)]
        keys += [("envelope_id", envelope_id)] if envelope_id else []
        keys += [("verp", verp_token)] if verp_token else []
        keys += [("recipient", r.lower()) for r in recipients]
        with self._lock:
            for key in keys:
                self._keys.pop(key, None)
                self._keys[key] = ref
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
        return ref

    def add_result(self, result: SendResult, relay: PlatformRelay | None = None) -> SentRef:
        """Remember a `SendResult`; `relay` (with `verp`) adds the message's VERP tag."""
        token = relay.bounce_token(result.message_id) if relay is not None and relay.verp else None
        return self.add(
            result.message_id,
            envelope_id=result.envelope_id,
            recipients=result.accepted,
            verp_token=token,
        )

    def lookup(self, key: str, value: str) -> SentRef | None:
        """See `SentIndex`."""
        with self._lock:
            return self._keys.get((key, value.lower() if key == "recipient" else value))


@attrs.frozen
class Correlation:
    """Which sent message a bounce belongs to, and how that was found (`matched_by`)."""

    message_id: str | None = None
    envelope_id: str | None = None
    matched_by: str | None = None  # "envelope_id", "message_id", "verp", "failed_recipients"
    verp_token: str | None = None


def verp_token(raw: bytes, bounce_address: str) -> str | None:
    """The TOKEN of ``local+TOKEN@domain`` for `bounce_address` ``local@domain`` in the
    headers naming the bounce's envelope recipient (Delivered-To, X-Original-To, To, ...)."""
    local, _, domain = bounce_address.lower().rpartition("@")
    if not local:
        return None
    data = normalize(raw[: 256 * 1024])
    end = _HEADER_END.search(data)
    fields = parse_fields(data[: end.start()] if end else data)
    pattern = re.compile(
        rf"{re.escape(local)}\+([A-Za-z0-9._=-]{{1,64}})@{re.escape(domain)}", re.I
    )
    for wanted in _ENVELOPE_HEADERS:
        for name, value in fields:
            if name == wanted and (match := pattern.search(value)):
                return match.group(1)
    return None


def correlate(
    report: BounceReport, *, index: SentIndex | None = None, verp: str | None = None
) -> Correlation:
    """The sent message `report` is about (see the module); `verp` is the bounce's VERP tag."""
    envid, message_id = report.original_envelope_id, report.original_message_id
    if envid:
        ref = index.lookup("envelope_id", envid) if index else None
        if ref is not None or index is None:
            return Correlation(ref.message_id if ref else message_id, envid, "envelope_id", verp)
    if message_id:
        ref = index.lookup("message_id", message_id) if index else None
        if ref is not None or index is None:
            return Correlation(message_id, ref.envelope_id if ref else None, "message_id", verp)
    if verp and index is not None:
        ref = index.lookup("verp", verp)
        if ref is not None:
            return Correlation(ref.message_id, ref.envelope_id, "verp", verp)
    if index is not None:
        for address in report.failed_recipients or tuple(r.address for r in report.recipients):
            ref = index.lookup("recipient", address)
            if ref is not None:
                return Correlation(ref.message_id, ref.envelope_id, "failed_recipients", verp)
    return Correlation(verp_token=verp)
