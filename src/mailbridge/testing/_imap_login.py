"""IMAP commands of the not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE."""

from __future__ import annotations

import base64
import binascii
import hmac

from ._imap_connection import Connection, No
from ._imap_syntax import (
    Atom,
    ParseError,
    Token,
    astring,
)
from ._sasl import OAUTH_MECHANISMS, bearer_host, bearer_login, oauth_error_challenge, token_valid


class LoginCommands(Connection):
    """STARTTLS, LOGIN and AUTHENTICATE (PLAIN, XOAUTH2, OAUTHBEARER)."""

    async def cmd_starttls(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if self.server.tls != "starttls" or self.tls:
            raise ParseError("STARTTLS not available")
        return b"OK Begin TLS negotiation now."

    def check_plaintext(self) -> None:
        if self.server.tls == "starttls" and not self.tls:
            raise No(
                "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
                "(SSL/TLS) connections."
            )

    def logged_in(self, user: str) -> bytes:
        self.user = user
        return b"OK [CAPABILITY " + self.capabilities() + b"] Logged in"

    def password_ok(self, user: str, password: str) -> bool:
        expected = self.server.users.get(user)
        if self.server.login_reply is not None or expected is None:
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    def failed(self) -> No:
        reply = self.server.login_reply
        if reply is not None:
            return self.reply_fault(reply)
        return No("[AUTHENTICATIONFAILED] Authentication failed.")

    async def cmd_login(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if len(args) != 2:
            raise ParseError("LOGIN needs user name and password")
        self.check_plaintext()
        user, password = astring(args[0]), astring(args[1])
        if self.password_ok(user, password):
            return self.logged_in(user)
        raise self.failed()

    async def sasl_response(self, args: list[Token], challenge: bytes = b"") -> bytes:
        if len(args) > 1 and challenge == b"":
            text = astring(args[1])
        else:
            self.write(b"+ " + base64.b64encode(challenge) + b"\r\n")
            text = (await self.readline()).decode("ascii", "replace").strip()
        if text == "*":
            raise ParseError("Authentication aborted by client")
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ParseError("Invalid base64 data in SASL response") from None

    async def cmd_authenticate(self, tag: bytes, args: list[Token], uid: bool) -> bytes:
        if not args or not isinstance(args[0], Atom):
            raise ParseError("AUTHENTICATE needs a mechanism")
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", *OAUTH_MECHANISMS):
            raise No("Unsupported authentication mechanism.")
        self.check_plaintext()
        blob = await self.sasl_response(args)
        if mechanism == "PLAIN":
            parts = blob.split(b"\0")
            if len(parts) != 3:
                raise ParseError("Invalid PLAIN response")
            user, password = (part.decode("utf-8", "replace") for part in parts[1:])
            if self.password_ok(user, password):
                return self.logged_in(user)
            raise self.failed()
        user, token = bearer_login(mechanism, blob)
        self.server.oauth_hosts.append(bearer_host(mechanism, blob))
        issuer = self.server.authorization_server
        if self.server.login_reply is None and token_valid(user, token, self.server.tokens, issuer):
            return self.logged_in(user)
        self.server.oauth_refused += 1
        error = oauth_error_challenge(mechanism, "https://mail.google.com/", "400")
        self.write(b"+ " + base64.b64encode(error) + b"\r\n")
        # RFC 7628 3.2.3: the client's %x01 ("AQ=="; XOAUTH2: an empty line), kept for tests.
        self.server.oauth_endings.append((await self.readline()).strip())
        raise self.failed()
