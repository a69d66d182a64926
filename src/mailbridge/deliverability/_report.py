"""What a blacklist check found: one `ListResult` per (address, list), and the report."""

from __future__ import annotations

import enum

import attrs

from ..diagnosis import Diagnosis
from ..errors import BlacklistError

__all__ = ["BlacklistReport", "ListResult", "ListStatus"]


class ListStatus(enum.StrEnum):
    """The verdict of one list on one address."""

    LISTED = "listed"
    CLEAN = "clean"
    ERROR = "error"  # the list could not be checked: `ListResult.error` says why
    SKIPPED = "skipped"  # an IPv6 address and a list without IPv6 data


@attrs.frozen
class ListResult:
    """One list's verdict on one address.

    `codes` are the raw answers (e.g. "127.0.0.2"), `meanings` what the list says
    they mean, `reason` its TXT text (control characters removed, shortened).
    For an error, `error` is the `BlacklistError` and `codes` any error codes.
    `diagnosis` explains a listing or an error for a person.
    """

    address: str
    list_name: str
    zone: str  # as shown: a DQS key appears as <key>
    status: ListStatus
    codes: tuple[str, ...] = ()
    meanings: tuple[str, ...] = ()
    reason: str | None = None
    error: BlacklistError | None = attrs.field(default=None, eq=False)
    diagnosis: Diagnosis | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        line = f"{self.status.value.upper():<8}{self.address:<16} {self.list_name} ({self.zone})"
        if self.status == ListStatus.LISTED:
            line += f": {', '.join(self.meanings)}"
            if self.reason:
                line += f' - "{self.reason}"'
        elif self.status == ListStatus.ERROR and self.error is not None:
            line += f": {self.error}"
        elif self.status == ListStatus.SKIPPED:
            line += ": lists no IPv6 addresses"
        return line


@attrs.frozen
class BlacklistReport:
    """What `check_blacklists()` found for `target` (the addresses it stands for).

    `listed` holds the listings, `errors` the lists that could not be checked
    (never counted as listings). `ok` is True when no list lists any address;
    `complete` when every list could be checked. In a connection test's report,
    `error` holds why nothing could be checked (e.g. the host has no address).
    """

    target: str
    addresses: tuple[str, ...]
    results: tuple[ListResult, ...]
    seconds: float
    error: BlacklistError | None = attrs.field(default=None, eq=False)

    @property
    def listed(self) -> tuple[ListResult, ...]:
        """The listings."""
        return tuple(r for r in self.results if r.status == ListStatus.LISTED)

    @property
    def errors(self) -> tuple[ListResult, ...]:
        """The (address, list) pairs that could not be checked."""
        return tuple(r for r in self.results if r.status == ListStatus.ERROR)

    @property
    def ok(self) -> bool:
        """True when no list lists any of the addresses."""
        return not self.listed

    @property
    def complete(self) -> bool:
        """True when every list answered for every address it covers."""
        return self.error is None and not self.errors

    @property
    def advice(self) -> tuple[Diagnosis, ...]:
        """The diagnoses of listings and errors, each once."""
        seen: dict[Diagnosis, None] = {}
        if self.error is not None:
            seen[self.error.diagnosis] = None
        for result in self.results:
            if result.diagnosis is not None:
                seen.setdefault(result.diagnosis)
        return tuple(seen)

    def __str__(self) -> str:
        shown = ", ".join(self.addresses)
        lines = [f"Blacklist check of {self.target} ({shown}), {self.seconds:.1f} s:"]
        lines += [f"  {result}" for result in self.results]
        lists = _count(len({r.zone for r in self.results}), "list")
        if self.error is not None:
            lines.append(f"Nothing could be checked: {self.error}")
        elif self.listed:
            lines.append(f"Listed on {len({r.zone for r in self.listed})} of {lists}.")
        elif self.errors:
            failed = len({r.zone for r in self.errors})
            lines.append(f"Not listed where checked, but {failed} of {lists} could not be checked.")
        else:
            lines.append(f"Not listed on any of {lists} checked.")
        for diagnosis in self.advice:
            lines += ["", str(diagnosis)]
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
