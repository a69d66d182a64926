"""The test project configured with Django 6.1's MAILERS instead of EMAIL_BACKEND."""

from __future__ import annotations

from .settings import DATABASES, DEFAULT_FROM_EMAIL, INSTALLED_APPS, SECRET_KEY, USE_TZ

__all__ = ["DATABASES", "DEFAULT_FROM_EMAIL", "INSTALLED_APPS", "MAILERS", "SECRET_KEY", "USE_TZ"]

MAILERS = {
    "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    "tenants": {
        "BACKEND": "mailbridge.django.EmailBackend",
        "OPTIONS": {"tenant_resolver": "tests.django_project.mail.resolve"},
    },
}
MAILBRIDGE = {"MAILER": "tenants"}
