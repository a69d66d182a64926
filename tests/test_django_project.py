"""The test project as an application runs it: manage.py, Django's test runner, system
checks, MAILERS (Django 6.1) and pytest-django next to mailbridge's fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import checks
from django.core.mail import EmailMessage
from django.test import override_settings

from mailbridge.django import close_clients
from mailbridge.django._checks import check_settings
from mailbridge.testing import FakeSmtpServer
from tests.django_project import mail as project_mail

from ._django import BACKEND, django
from .conftest import PASSWORD, USER

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "tests" / "django_project" / "manage.py"


def _run(
    args: list[str], tenants: dict[str, dict[str, object]] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "MAILBRIDGE_TEST_TENANTS": json.dumps(tenants or {}),
        "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tenant(server: FakeSmtpServer, password: str = PASSWORD) -> dict[str, object]:
    settings = server.smtp_settings()
    return {
        "sender": USER,
        "host": settings.host,
        "port": settings.port,
        "security": settings.security.value,
        "username": USER,
        "password": password,
        "ca_file": str(settings.ca_file),
    }


def test_manage_py_test_connection_works(smtp_server: FakeSmtpServer) -> None:
    result = _run(
        [str(MANAGE), "mailbridge_test_connection", "acme"], {"acme": _tenant(smtp_server)}
    )
    assert result.returncode == 0, result.stderr
    assert "The connection works." in result.stdout
    assert smtp_server.messages == []  # a test never sends


def test_manage_py_test_connection_explains_a_wrong_password(
    smtp_server: FakeSmtpServer,
) -> None:
    secret = "wrong-Secret-42"
    result = _run(
        [str(MANAGE), "mailbridge_test_connection", "acme"],
        {"acme": _tenant(smtp_server, password=secret)},
    )
    assert result.returncode == 1
    assert "FAIL auth" in result.stdout
    assert "does not work" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_manage_py_test_connection_refuses_an_unknown_tenant_or_mailer() -> None:
    unknown = _run([str(MANAGE), "mailbridge_test_connection", "nobody"])
    assert unknown.returncode == 1 and "no tenant 'nobody'" in unknown.stderr
    alias = _run([str(MANAGE), "mailbridge_test_connection", "acme", "--using", "other"])
    assert alias.returncode == 1
    assert "'other' is not a mailer using mailbridge (those are: default)" in alias.stderr


def _missing_account(message: object) -> object:
    raise LookupError("MailAccount matching query does not exist.")


def test_test_connection_turns_a_failing_resolver_into_a_command_error() -> None:
    """A model-backed resolver raises DoesNotExist for an unknown tenant: manage.py shows
    "CommandError: ..." (no traceback), as for every CommandError."""
    from django.core.management import CommandError, call_command

    with (
        override_settings(EMAIL_BACKEND=BACKEND, MAILBRIDGE={"TENANT_RESOLVER": _missing_account}),
        pytest.raises(CommandError, match="resolver raised LookupError for tenant 'nobody'"),
    ):
        call_command("mailbridge_test_connection", "nobody")


def test_djangos_test_runner_collects_mail_in_the_outbox() -> None:
    result = _run([str(MANAGE), "test", "tests.django_project.app_tests", "-v", "1"])
    assert result.returncode == 0, result.stderr
    assert "Ran 1 test" in result.stderr and "OK" in result.stderr


def test_manage_py_check_reports_a_missing_resolver(tmp_path: Path) -> None:
    (tmp_path / "broken_settings.py").write_text(
        "from tests.django_project.settings import *\nMAILBRIDGE = {}\n", encoding="utf-8"
    )
    result = _run(
        [str(MANAGE), "check"],
        DJANGO_SETTINGS_MODULE="broken_settings",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), str(tmp_path)]),
    )
    assert result.returncode == 1
    assert "mailbridge.E001" in result.stderr
    assert "no tenant resolver is set" in result.stderr


@pytest.mark.parametrize(
    ("mailbridge", "expected"),
    [
        ({"TENANT_RESOLVER": "tests.django_project.mail.resolve"}, []),
        ({}, ["mailbridge.E001"]),
        ({"TENANT_RESOLVER": "tests.django_project.nothing.resolve"}, ["mailbridge.E002"]),
        ({"TENANT_RESOLVER": "tests.django_project.settings.DEBUG"}, ["mailbridge.E002"]),
        (
            {"TENANT_RESOLVER": "tests.django_project.mail.resolve", "OUTBOX_DISPATCH": "no.task"},
            ["mailbridge.E002"],
        ),
        (
            {"TENANT_RESOLVER": "tests.django_project.mail.resolve", "MAILER": "invoices"},
            ["mailbridge.E003"],
        ),
    ],
)
def test_system_checks(mailbridge: dict[str, str], expected: list[str]) -> None:
    with override_settings(EMAIL_BACKEND=BACKEND, MAILBRIDGE=mailbridge):
        found = check_settings()
    assert [message.id for message in found] == expected
    assert all(message.level == checks.ERROR for message in found)


RESOLVER = "tests.django_project.mail.resolve"


@pytest.mark.parametrize(
    ("mailbridge", "expected", "words"),
    [
        ("tests.django_project.mail.resolve", ["mailbridge.E002"], "must be a dict"),
        ({"TENANT_RESOLVER": RESOLVER, "MAX_CLIENTS": 0}, ["mailbridge.E002"], "positive"),
        ({"TENANT_RESOLVER": RESOLVER, "OUTBOX": "outbox.db"}, ["mailbridge.E002"], "URL"),
        ({"TENANT_RESOLVER": RESOLVER, "TENANT_HEADER": "X Tenant:"}, ["mailbridge.E002"], "name"),
        ({"TENANT_RESOLVER": RESOLVER, "TENANT_RESOLVR": "x"}, ["mailbridge.W001"], "RESOLVR"),
    ],
)
def test_system_checks_report_wrong_settings_instead_of_crashing(
    mailbridge: object, expected: list[str], words: str
) -> None:
    with override_settings(EMAIL_BACKEND=BACKEND, MAILBRIDGE=mailbridge):
        found = check_settings()
    assert [message.id for message in found] == expected
    assert words in found[0].msg


def test_system_checks_ignore_other_backends() -> None:
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", MAILBRIDGE={}
    ):
        assert check_settings() == []


@pytest.fixture
def acme(smtp_server: FakeSmtpServer) -> Iterator[FakeSmtpServer]:
    project_mail.TENANTS["acme"] = (USER, smtp_server.smtp_settings())
    try:
        yield smtp_server
    finally:
        project_mail.TENANTS.clear()
        close_clients()


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS came with Django 6.1")
def test_mailers_of_django_6_1(acme: FakeSmtpServer) -> None:
    from django.core.mail import InvalidMailer, mailers

    from tests.django_project import settings_mailers

    with override_settings(MAILERS=settings_mailers.MAILERS, MAILBRIDGE={"MAILER": "tenants"}):
        message = EmailMessage("Invoice", "body", to=["jane@customer.example"])
        message.tenant = "acme"
        assert message.send(using="tenants") == 1
        assert mailers["tenants"].mailer_alias == "tenants"
        assert check_settings() == []
        broken = {"tenants": {"BACKEND": BACKEND, "OPTIONS": {"tenant_resolvr": "x"}}}
        with override_settings(MAILERS=broken), pytest.raises(InvalidMailer):
            mailers["tenants"]
    (received,) = acme.messages
    assert received.rcpt_tos == ("jane@customer.example",)


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS came with Django 6.1")
def test_manage_py_with_mailers_settings(smtp_server: FakeSmtpServer) -> None:
    result = _run(
        [str(MANAGE), "mailbridge_test_connection", "acme"],
        {"acme": _tenant(smtp_server)},
        DJANGO_SETTINGS_MODULE="tests.django_project.settings_mailers",
    )
    assert result.returncode == 0, result.stderr
    assert "The connection works." in result.stdout


PYTEST_DJANGO_APP_TESTS = """
from django.core.mail import EmailMessage, send_mail

from tests.django_project import mail as project_mail


def test_app_mail_in_the_outbox(mailoutbox):
    send_mail("Invoice 7", "body", None, ["jane@customer.example"])
    assert [m.subject for m in mailoutbox] == ["Invoice 7"]


def test_mailbridge_backend_with_the_fake_server(settings, smtp_server):
    settings.EMAIL_BACKEND = "mailbridge.django.EmailBackend"
    project_mail.TENANTS["acme"] = ("tenant@example.test", smtp_server.smtp_settings())
    message = EmailMessage("Invoice 8", "body", to=["jane@customer.example"])
    message.tenant = "acme"
    assert message.send() == 1
    assert smtp_server.messages[0].message["Subject"] == "Invoice 8"
    assert message.mailbridge_result.status == "sent"
"""


def test_pytest_django_users_get_the_mailbridge_fixtures_alongside(tmp_path: Path) -> None:
    pytest.importorskip("pytest_django")
    (tmp_path / "test_app.py").write_text(PYTEST_DJANGO_APP_TESTS, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # an app's own config
    result = _run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
         "--ds=tests.django_project.settings",
         "-W", "ignore::DeprecationWarning", str(tmp_path / "test_app.py")],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # mailoutbox and settings are pytest-django's
