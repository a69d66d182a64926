"""Django integration: `EMAIL_BACKEND = "mailbridge.django.EmailBackend"` (see docs/django.md).

Every message goes through its tenant's `DeliveryClient`, found by your tenant resolver
(`MAILBRIDGE = {"TENANT_RESOLVER": "app.mail.resolve"}`). Add "mailbridge.django" to
INSTALLED_APPS for the system checks and `manage.py mailbridge_test_connection TENANT`.
"""

from __future__ import annotations

from ._backend import EmailBackend
from ._clients import Tenant, close_clients
from ._convert import DEFAULT_TENANT_HEADER, prepare_django_message, tenant_hint
from ._mailers import mailer_outbox, tenant_client
from ._status import RecipientStatus, SendStatus

__all__ = [
    "DEFAULT_TENANT_HEADER",
    "EmailBackend",
    "RecipientStatus",
    "SendStatus",
    "Tenant",
    "close_clients",
    "mailer_outbox",
    "prepare_django_message",
    "tenant_client",
    "tenant_hint",
]
