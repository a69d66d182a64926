"""`manage.py mailbridge_test_connection`."""
