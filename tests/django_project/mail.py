"""The test project's tenant resolver: tenants registered by the tests (or, for a
`manage.py` subprocess, given as JSON in MAILBRIDGE_TEST_TENANTS)."""

from __future__ import annotations

import json
import os
from typing import Any

from mailbridge import ConfigurationError, DeliveryClient, SmtpSettings
from mailbridge.django import Tenant, tenant_hint

# tenant name -> (sender address, SmtpSettings)
TENANTS: dict[str, tuple[str, SmtpSettings]] = {}


def _from_environment() -> dict[str, tuple[str, SmtpSettings]]:
    found = json.loads(os.environ.get("MAILBRIDGE_TEST_TENANTS", "{}"))
    return {name: (value.pop("sender"), SmtpSettings(**value)) for name, value in found.items()}


def resolve(message: Any) -> Tenant:
    """The tenant named by `message.tenant` or the X-Mailbridge-Tenant header."""
    name = tenant_hint(message)
    accounts = TENANTS or _from_environment()
    if name not in accounts:
        raise ConfigurationError("tenant", f"no tenant {name!r}")
    sender, smtp = accounts[name]
    return Tenant(
        key=str(name),
        build=lambda: DeliveryClient.own_smtp(sender, smtp, display_name=f"{name} GmbH"),
        version=(sender, smtp),
    )
