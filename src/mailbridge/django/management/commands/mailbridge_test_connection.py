"""`manage.py mailbridge_test_connection TENANT`: does this tenant's mail account work?"""

from __future__ import annotations

from typing import Any

from django.core.mail import EmailMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ....errors import MailbridgeError
from ..._backend import client_of
from ..._checks import mailbridge_mailers
from ..._options import load_options, mailbridge_settings

__all__ = ["Command"]


class Command(BaseCommand):  # type: ignore[misc]
    """Connect, secure and log in with the tenant's account; never sends a message."""

    help = (
        "Test the SMTP (and IMAP) account of TENANT: connect, TLS, log in. "
        "The resolver sees a message whose tenant is TENANT."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="the tenant, as your resolver reads it")
        parser.add_argument(
            "--using",
            default=None,
            help="the mailer (MAILERS alias); default: MAILBRIDGE['MAILER']",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        mailers = mailbridge_mailers()
        alias = options["using"] or _default_alias()
        if alias not in mailers:
            known = ", ".join(sorted(mailers)) or "none"
            raise CommandError(f"{alias!r} is not a mailer using mailbridge (those are: {known})")
        probe = EmailMessage(subject="mailbridge connection test", to=["test@example.invalid"])
        probe.tenant = options["tenant"]
        try:
            backend_options = load_options(mailers[alias])
            report = client_of(probe, backend_options, alias).test_connection()
        except MailbridgeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(report))
        if not report.ok:
            raise CommandError(f"the mail account of tenant {options['tenant']!r} does not work")


def _default_alias() -> str:
    alias = mailbridge_settings().get("MAILER")
    return str(alias) if alias else "default"
