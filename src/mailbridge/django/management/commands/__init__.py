"""`manage.py mailbridge_test_connection`."""

__all__: list[str] = []
