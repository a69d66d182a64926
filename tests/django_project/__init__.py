"""A small Django project for the tests of `mailbridge.django` (settings, resolver, manage.py)."""
