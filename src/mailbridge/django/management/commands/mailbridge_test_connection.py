"""`manage.py mailbridge_test_connection TENANT`: does this tenant's mail account work?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ....errors import MailbridgeError
from ..._mailers import tenant_client

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
        tenant = options["tenant"]
        try:
            client = tenant_client(tenant, using=options["using"])
        except MailbridgeError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # the application's resolver, e.g. Model.DoesNotExist
            raise CommandError(
                f"your tenant resolver raised {type(exc).__name__} for tenant {tenant!r}: {exc}"
            ) from exc
        try:
            report = client.test_connection()
        except MailbridgeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(report))
        if not report.ok:
            raise CommandError(f"the mail account of tenant {options['tenant']!r} does not work")
