"""The Django app `mailbridge.django`: system checks and the management command."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["MailbridgeConfig"]


class MailbridgeConfig(AppConfig):  # type: ignore[misc]
    """Add "mailbridge.django" to INSTALLED_APPS for the checks and `mailbridge_test_connection`."""

    name = "mailbridge.django"
    label = "mailbridge"
    verbose_name = "mailbridge"

    def ready(self) -> None:
        """Register the system checks."""
        from ._checks import check_settings

        checks.register(check_settings, checks.Tags.compatibility)
