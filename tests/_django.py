"""Set up the test project's Django settings once (skips the module when Django is missing)."""

from __future__ import annotations

import os

import pytest

django = pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
django.setup()

BACKEND = "mailbridge.django.EmailBackend"
