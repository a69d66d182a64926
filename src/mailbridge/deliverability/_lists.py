"""The blacklists (DNSBLs) checked by default: zones, return codes, and where their status was read.

Only lists that answer anyone today. Barracuda is defined (`BARRACUDA`) but not a default:
it answers only registered resolvers. Left out on purpose: SORBS (decommissioned by Proofpoint on
5 June 2024; its zones no longer answer), DSBL (gone since 2009), UCEPROTECT levels 2/3
(they list whole networks for others' spam, and charge for faster removal).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

import attrs

from ..errors import ConfigurationError

__all__ = ["BARRACUDA", "DEFAULT_BLACKLISTS", "KNOWN_BLACKLISTS", "Blacklist"]

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DQS_KEY = re.compile(r"^[A-Za-z0-9]{8,63}$")


def _zone(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    labels = value.rstrip(".").split(".")
    if len(value) > 200 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ConfigurationError(attribute.name, f"not a DNS zone name: {value!r}")


def _without_final_dot(value: object) -> object:
    return value.rstrip(".") if isinstance(value, str) else value


def _network(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        network = ipaddress.IPv4Network(value)
    except ValueError:
        raise ConfigurationError(attribute.name, f"not an IPv4 network: {value!r}") from None
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise ConfigurationError(attribute.name, "must lie inside 127.0.0.0/8")


@attrs.frozen
class Blacklist:
    """One DNS blacklist (RFC 5782 DNSxL) of sending IP addresses.

    `zone` is asked for the reversed address; `ipv6` says whether it lists IPv6
    addresses; `codes` explains its answers (127.0.0.x); answers inside
    `error_network` are errors, never listings (Spamhaus: 127.255.255.0/24).
    `dqs_zone` is the Spamhaus Data Query Service zone used with a DQS key
    (queried as `<key>.<dqs_zone>`). `removal` tells a person how to get off the
    list; `source` notes where its status and codes were checked.
    """

    name: str
    zone: str = attrs.field(converter=_without_final_dot, validator=_zone)
    ipv6: bool = False
    codes: Mapping[str, str] = attrs.field(factory=dict)
    error_network: str | None = attrs.field(default=None, validator=_network)
    dqs_zone: str | None = attrs.field(default=None)
    removal: str = "see the list's website"
    source: str = ""

    def query_zone(self, dqs_key: str | None) -> str:
        """The zone to ask: the DQS zone under `dqs_key` when both exist, else `zone`."""
        if dqs_key is not None and self.dqs_zone is not None:
            return f"{dqs_key}.{self.dqs_zone}"
        return self.zone

    def shown_zone(self, dqs_key: str | None) -> str:
        """The zone as reports show it: a DQS key is never shown."""
        if dqs_key is not None and self.dqs_zone is not None:
            return f"<key>.{self.dqs_zone}"
        return self.zone

    def is_error(self, code: str) -> bool:
        """Whether the answer `code` is one of the list's error codes."""
        return self.error_network is not None and ipaddress.IPv4Address(code) in (
            ipaddress.IPv4Network(self.error_network)
        )


def check_dqs_key(key: str | None) -> str | None:
    """`key` when it looks like a DQS key (letters and digits); a secret, so never echoed."""
    if key is not None and not _DQS_KEY.match(key):
        raise ConfigurationError("dqs_key", "a Spamhaus DQS key is 8-63 letters and digits")
    return key


SPAMHAUS_ZEN = Blacklist(
    name="Spamhaus ZEN",
    zone="zen.spamhaus.org",
    ipv6=True,
    codes={
        "127.0.0.2": "SBL: a known spam source or spam operation",
        "127.0.0.3": "CSS: sent low-reputation mail (snowshoe spam)",
        "127.0.0.4": "XBL: an infected or hijacked computer (exploits, botnets)",
        "127.0.0.9": "DROP: a network run by criminals",
        "127.0.0.10": "PBL: the network's owner says it should not send mail directly",
        "127.0.0.11": "PBL: Spamhaus says this is an end-user address, not a mail server",
        "127.0.0.30": "BCL: a botnet controller",
    },
    error_network="127.255.255.0/24",
    dqs_zone="zen.dq.spamhaus.net",
    removal="look the address up at the Spamhaus 'Check your IP' page (check.spamhaus.org); "
    "a PBL listing of a provider's mail server is removed by the provider.",
    source="docs.spamhaus.com 'Available Zones' (return codes) and 'DQS Requests' (query "
    "format, IPv6 nibbles); spamhaus.org news 788 (127.255.255.0/24 is an error range)",
)

BARRACUDA = Blacklist(
    name="Barracuda BRBL",
    zone="b.barracudacentral.org",
    codes={"127.0.0.2": "sent mail to Barracuda's spam traps or was rated as spam"},
    removal="use the removal form at barracudacentral.org/rbl/removal-request.",
    source="barracudacentral.org/rbl/how-to-use (free; the querying resolver's address "
    "must be registered, otherwise even the test entry is missing)",
)
"""Barracuda's list: not checked by default, since it answers only resolvers whose address
was registered with Barracuda (otherwise every check is incomplete); pass it in `lists=`."""

DEFAULT_BLACKLISTS: tuple[Blacklist, ...] = (
    SPAMHAUS_ZEN,
    Blacklist(
        name="SpamCop",
        zone="bl.spamcop.net",
        codes={"127.0.0.2": "reported as a spam source by SpamCop users or spam traps"},
        removal="listings expire 24 hours after the last report; look the address up at "
        "spamcop.net/bl.shtml.",
        source="spamcop.net/bl.shtml (operated by Cisco; the zone answers, listings expire "
        "after 24 h without reports)",
    ),
    Blacklist(
        name="PSBL",
        zone="psbl.surriel.com",
        codes={"127.0.0.2": "sent mail to PSBL's spam traps"},
        removal="remove the address yourself at psbl.org (Remove an IP).",
        source="psbl.surriel.com/howto (free for anyone; a single return code)",
    ),
    Blacklist(
        name="Mailspike",
        zone="bl.mailspike.net",
        codes={
            "127.0.0.2": "took part in a distributed spam wave",
            "127.0.0.10": "worst reputation (L5)",
            "127.0.0.11": "very bad reputation (L4)",
            "127.0.0.12": "bad reputation (L3)",
        },
        removal="use the self-service removal at mailspike.org.",
        source="mailspike.org/usage.html (bl = z plus rep levels L3-L5; free below "
        "100,000 queries a day)",
    ),
)

KNOWN_BLACKLISTS: tuple[Blacklist, ...] = (*DEFAULT_BLACKLISTS, BARRACUDA)
"""Every list mailbridge knows the codes of: the defaults and the opt-in ones."""
