"""Set up the test project's Django settings once (skips the module when Django is missing)."""

from __future__ import annotations

import os

import pytest

django = pytest.importorskip("django")
# Only for django.setup(): left in the environment, the variable would reach every
# subprocess the suite starts (Celery workers then load Django's fixup and fail).
_given = os.environ.get("DJANGO_SETTINGS_MODULE")
os.environ["DJANGO_SETTINGS_MODULE"] = _given or "tests.django_project.settings"
try:
    django.setup()
finally:
    if _given is None:
        del os.environ["DJANGO_SETTINGS_MODULE"]

BACKEND = "mailbridge.django.EmailBackend"
