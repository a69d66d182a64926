"""DKIM signing (RFC 6376) with dkimpy: the optional extra `mailbridge-documents[dkim]`.

In SPF-imitation mode the tenant publishes a CNAME from
`<selector>._domainkey.<tenant domain>` to the platform's key record; the
platform signs with `d=<tenant domain>`, so DMARC aligns through DKIM too.
"""

from __future__ import annotations

import attrs

from ..errors import ConfigurationError
from ..settings import Secret

__all__ = ["DEFAULT_SIGNED_HEADERS", "DkimSigner"]

# RFC 6376 5.4.1: the headers worth protecting; From is mandatory.
DEFAULT_SIGNED_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
)


def _to_idna(value: str) -> str:
    try:
        return value.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ConfigurationError("domain", f"{value!r} is not a domain name") from None


def _to_secret(value: Secret | str | bytes) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(value.decode("ascii") if isinstance(value, bytes) else value)


@attrs.frozen
class DkimSigner:
    """Signs messages for `domain` with the key published at `selector._domainkey.domain`.

    `private_key` is the PEM text of an RSA (or, with PyNaCl, Ed25519) key; it
    is kept as a `Secret` and never shown.
    """

    domain: str = attrs.field(converter=_to_idna)
    selector: str
    private_key: Secret = attrs.field(converter=_to_secret, repr=False)
    algorithm: str = "rsa-sha256"
    headers: tuple[str, ...] = DEFAULT_SIGNED_HEADERS

    def __attrs_post_init__(self) -> None:
        try:
            import dkim  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "dkim",
                "DKIM signing needs the dkim extra: pip install 'mailbridge-documents[dkim]'",
            ) from None
        if "BEGIN" not in self.private_key.reveal():
            raise ConfigurationError("private_key", "give the PEM text of the private key")
        if not self.selector or not self.domain:
            raise ConfigurationError("selector", "a DKIM signer needs a domain and a selector")

    @property
    def record_name(self) -> str:
        """Where the public key is published: `<selector>._domainkey.<domain>`."""
        return f"{self.selector}._domainkey.{self.domain}"

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header in front."""
        import dkim

        signature = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.private_key.reveal().encode("ascii"),
            signature_algorithm=self.algorithm.encode("ascii"),
            include_headers=[h.encode("ascii") for h in self.headers],
            linesep=b"\r\n",
        )
        return bytes(signature) + message
