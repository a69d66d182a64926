"""Settings of the test project: mailbridge's backend, one resolver, an in-memory database."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["mailbridge.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("MAILBRIDGE_TEST_DB", ":memory:"),
    }
}
DEFAULT_FROM_EMAIL = "webmaster@app.example"
EMAIL_BACKEND = "mailbridge.django.EmailBackend"
MAILBRIDGE = {"TENANT_RESOLVER": "tests.django_project.mail.resolve"}
