"""`mailbridge oauth login` and `mailbridge setup --oauth`: sign in with Microsoft or Google.

Microsoft signs in with the device-code flow (the code and the address are
printed; a progress line counts down until the sign-in or the code's expiry),
Google with a browser on this machine (its device flow does not allow the mail
scope). Tokens go to a `SqliteTokenStore` (`--token-db`), keyed by `--tenant`.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import _cli_args as _args
from .errors import ConfigurationError

__all__ = ["add_commands", "add_setup_options", "login_command", "offer", "setup_command"]

PROVIDERS = ("microsoft", "google")
TOKEN_DB_ENV = "MAILBRIDGE_TOKEN_DB"  # noqa: S105 (the name of a variable)
CLIENT_ID_ENV = "MAILBRIDGE_OAUTH_CLIENT_ID"
DEFAULT_TOKEN_DB = "mailbridge-tokens.sqlite3"  # noqa: S105 (a file name)
MICROSOFT_INSTANCE = "https://login.microsoftonline.com"
MAX_CLIENT_CONFIG = 64 * 1024


def _https_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or len(text) > 2048:
        raise argparse.ArgumentTypeError(f"not an https:// URL: {text[:80]!r}")
    return text


def _add_oauth_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client-id",
        default=os.environ.get(CLIENT_ID_ENV),
        help=f"Microsoft: the app registration's client ID (default ${CLIENT_ID_ENV})",
    )
    parser.add_argument(
        "--client-config",
        type=Path,
        help="Google: the OAuth client JSON downloaded from Google Cloud (a desktop app)",
    )
    parser.add_argument(
        "--authority",
        type=_https_url,
        default=None,
        help="Microsoft: https://login.microsoftonline.com/<organizations|consumers|tenant-id>"
        " (default: chosen by the account's address; common for an unknown one)",
    )
    parser.add_argument(
        "--token-db",
        type=Path,
        default=Path(os.environ.get(TOKEN_DB_ENV, DEFAULT_TOKEN_DB)),
        help=f"SQLite file for the tokens (default ${TOKEN_DB_ENV} or {DEFAULT_TOKEN_DB})",
    )
    parser.add_argument(
        "--tenant", help="the key the tokens are saved under (default: the address)"
    )
    parser.add_argument(
        "--oauth-ca-file", help="PEM file of a private CA for the authorization server"
    )
    parser.add_argument(
        "--wait",
        type=_args.seconds,
        default=900.0,
        help="seconds to wait for the sign-in (default 900; a Microsoft code lives 15 min)",
    )


def add_commands(commands: Any) -> None:
    """Register `mailbridge oauth login` on the `commands` sub-parsers."""
    oauth = commands.add_parser("oauth", help="sign in with Microsoft or Google (OAuth2)")
    actions = oauth.add_subparsers(dest="oauth_action", required=True)
    login = actions.add_parser("login", help="sign in and save the tokens")
    login.add_argument("--provider", choices=PROVIDERS, required=True)
    login.add_argument("--email", help="the mailbox (a hint for the sign-in page)")
    _add_oauth_options(login)
    login.set_defaults(handler=login_command)


def add_setup_options(parser: argparse.ArgumentParser) -> None:
    """Add `--oauth microsoft|google` (and its options) to `mailbridge setup`."""
    parser.add_argument(
        "--oauth",
        choices=PROVIDERS,
        help="sign in with Microsoft or Google instead of a password",
    )
    _add_oauth_options(parser)
    parser.add_argument("--ca-file", help="PEM file of a private CA for the mail servers")
    parser.add_argument(
        "--allow-private",
        action="store_true",
        help="allow mail servers on loopback or private addresses (your own network)",
    )


def proof_options(args: argparse.Namespace) -> dict[str, Any]:
    """What `setup()` takes from the command line besides the credentials."""
    options: dict[str, Any] = {"allow_private": args.allow_private}
    if args.ca_file:
        options["ssl_context"] = ssl.create_default_context(cafile=args.ca_file)
    return options


def offer(email: str, oauth2: Any) -> str | None:
    """After a failed password set-up: how to sign in instead, where the provider allows it."""
    if oauth2 is None:
        return None
    issuer = str(getattr(oauth2, "issuer", ""))
    provider = next((name for name in PROVIDERS if name in issuer), None)
    if provider is None:  # an issuer this command has no client for
        return f"This provider also takes OAuth2 sign-ins (issuer {issuer})."
    return (
        f"This provider takes OAuth2 sign-ins instead of passwords: "
        f"mailbridge setup {email} --oauth {provider} ..."
    )


# -- the sign-in -------------------------------------------------------------------------


def _client(args: argparse.Namespace, provider: str) -> Any:
    """The adapter for `provider`, configured from the command line (its extra loaded)."""
    if provider == "microsoft" and not args.client_id:
        raise ConfigurationError(
            "client_id", f"give --client-id (or set {CLIENT_ID_ENV}) for Microsoft"
        )
    if provider == "google" and args.client_config is None:
        raise ConfigurationError("client_config", "give --client-config FILE for Google")
    try:
        if provider == "microsoft":
            from .oauth.microsoft import MicrosoftOAuth as Microsoft
        else:
            from .oauth.google import GoogleOAuth as Google
    except ImportError:
        raise ConfigurationError(
            "provider", f"install the extra for {provider}: pip install 'mailbridge[{provider}]'"
        ) from None
    from .oauth import SqliteTokenStore

    if provider == "google":
        config = _client_config(args.client_config)
        return Google(config, store=SqliteTokenStore(args.token_db), ca_file=args.oauth_ca_file)
    host = (urlsplit(args.authority or MICROSOFT_INSTANCE).hostname or "").lower()
    return Microsoft(
        args.client_id,
        store=SqliteTokenStore(args.token_db),
        authority=args.authority,
        instance_discovery=None if host == "login.microsoftonline.com" else False,
        ca_file=args.oauth_ca_file,
    )


def _client_config(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        raw = file.read(MAX_CLIENT_CONFIG + 1)
    try:
        if len(raw) > MAX_CLIENT_CONFIG:
            raise ValueError("too large")
        config = json.loads(raw)
        if not isinstance(config, dict) or not ({"installed", "web"} & set(config)):
            raise ValueError("no 'installed' or 'web' section")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            "client_config", f"{path} is not a Google OAuth client file ({exc})"
        ) from None
    return config


def _progress(out: Any) -> Callable[[float], None]:
    """The progress line: the minutes and seconds left, rewritten in place."""

    def show(left: float) -> None:
        minutes, seconds = divmod(int(left), 60)
        out.write(f"\rWaiting for the sign-in ... {minutes:02d}:{seconds:02d} left ")
        out.flush()

    return show


def _open_browser(url: str) -> None:
    import webbrowser  # here: only signing in opens a browser

    print(f"Sign in in the browser; if none opens, visit:\n  {url}", flush=True)
    webbrowser.open(url)


def _sign_in(args: argparse.Namespace, provider: str, client: Any, tenant: str) -> str:
    """Run the provider's sign-in for `tenant`; the account's user name (or '')."""
    if provider == "google":
        client.installed_app_login(tenant, open_browser=_open_browser, timeout=args.wait)
        return ""
    code = client.start_device_flow(email=args.email)
    print(code.message or f"Open {code.verification_uri} and enter {code.user_code}", flush=True)
    try:
        username: str = client.finish_device_flow(
            tenant, code, timeout=args.wait, progress=_progress(sys.stderr)
        )
    finally:
        sys.stderr.write("\n")
    return username


def login_command(args: argparse.Namespace) -> int:
    """`mailbridge oauth login`: sign in, save the tokens, say where they are."""
    tenant = args.tenant or args.email or "default"
    client = _client(args, args.provider)
    username = _sign_in(args, args.provider, client, tenant) or args.email or ""
    who = f" as {username}" if username else ""
    print(f"Signed in{who}; tokens saved for tenant {tenant!r} in {args.token_db}.")
    return 0


def setup_command(args: argparse.Namespace, resolver: Any) -> int:
    """`mailbridge setup EMAIL --oauth PROVIDER`: sign in, then prove SMTP and IMAP."""
    from .providers import OAuthSetup

    wizard = OAuthSetup(
        args.email,
        _client(args, args.oauth),
        tenant=args.tenant or args.email,
        resolver=resolver,
        timeout=args.timeout,
        want_imap=not args.no_imap,
        **proof_options(args),
    )
    username = _sign_in(args, args.oauth, wizard.client, wizard.tenant)
    result = wizard.prove(username or None)
    print(result)
    if result.smtp is not None:
        s = result.smtp
        print(f"SMTP: {s.host}:{s.port} {s.security.value} as {s.username} (OAuth2)")
    if result.imap is not None:
        print(f"IMAP: {result.imap.host}:{result.imap.port} {result.imap.security.value}")
    return 0 if result.ok else 1
